#!/usr/bin/env python3
"""crosscheck_higgs.py — an independent HIGGS fake-quantizer (numpy + safetensors, reading the bf16 checkpoint
with torch) to check kvant's pipeline `--format higgs_p2_b{b} --transform rht:512` and to measure what the
reference's choices (ref/higgs_ref.json) change.

Every decoder linear's rows are rotated per 512-block (x <- H_512 diag(s) x / sqrt(512), Sylvester order),
split into scale groups of --group values scaled to unit RMS (fp16 scale), cut into p-tuples rounded to the
nearest point of kvant's grid (parsed from src/formats/higgs_grids.c), then rotated back; the result is written
as an fp32 Hugging Face directory that `kvant eval DIR --rope-freq bf16` evaluates (the embedding and head
stay as they are, like `--override '^(token_embd|output)\\.weight$=bf16'`).

Signs (--signs): `kvant` draws them exactly as kvant does (kv_rht_tensor_seed + xoshiro256**, one sign per input
column shared by all rows, as an online rotation of the activations requires); `shared` and `row` draw them
with numpy (one vector per tensor, or one per row: possible only in fake quantization).

    python3 scripts/crosscheck_higgs.py --signs kvant --group 256 --seed 1 --out /tmp/hg
    build/kvant eval /tmp/hg --text ../shared/data/heldout.txt --rope-freq bf16
    # compare: build/kvant quantize MODEL -o q.gguf --format higgs_p2_b2 --pure \\
    #   --override '^(token_embd|output)\\.weight$=bf16' --transform rht:512 --seed 1; build/kvant eval q.gguf ...
"""
import argparse
import os
import re
import shutil
import sys

import numpy as np

M64 = (1 << 64) - 1


def splitmix_mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def kvant_tensor_seed(seed, name):
    h = 0xCBF29CE484222325
    for ch in name.encode():
        h = ((h ^ ch) * 0x100000001B3) & M64
    return splitmix_mix(h ^ ((seed + 0x9E3779B97F4A7C15) & M64))


def kvant_signs(seed, n):
    """kv_rht_signs: xoshiro256** seeded by splitmix64, sign = top bit of each draw."""
    st, x = [], seed
    for _ in range(4):
        x = (x + 0x9E3779B97F4A7C15) & M64
        st.append(splitmix_mix(x))
    rotl = lambda v, k: ((v << k) | (v >> (64 - k))) & M64
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        r = (rotl((st[1] * 5) & M64, 7) * 9) & M64
        t = (st[1] << 17) & M64
        st[2] ^= st[0]
        st[3] ^= st[1]
        st[1] ^= st[2]
        st[0] ^= st[3]
        st[2] ^= t
        st[3] = rotl(st[3], 45)
        out[i] = -1.0 if r >> 63 else 1.0
    return out


def gguf_name(hf_name):
    m = re.search(r"layers\.(\d+)\.(self_attn|mlp)\.(\w+)_proj", hf_name)
    short = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output", "gate": "ffn_gate", "up": "ffn_up",
             "down": "ffn_down"}[m.group(3)]
    return f"blk.{m.group(1)}.{short}.weight"


def load_grid(repo, p, b):
    text = open(os.path.join(repo, "src/formats/higgs_grids.c")).read()
    n = 2 ** (p * b)
    m = re.search(rf"k_p{p}_b{b}\[{n * p}\] = \{{(.*?)\}};", text, re.S)
    if not m:
        sys.exit(f"crosscheck_higgs: no grid higgs_p{p}_b{b} in src/formats/higgs_grids.c")
    vals = [float(v.strip().rstrip("f")) for v in m.group(1).split(",") if v.strip()]
    return np.array(vals, dtype=np.float32).reshape(n, p)


def sylvester(n):
    h = np.array([[1.0]], dtype=np.float32)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / np.float32(np.sqrt(n))


def fake_quant(w, signs, hmat, grid, group):
    rows, cols = w.shape
    blk = hmat.shape[0]
    x = ((w * signs).reshape(rows, cols // blk, blk) @ hmat.T).reshape(rows, cols // group, group)
    s = np.sqrt((x ** 2).mean(-1, keepdims=True)).astype(np.float16).astype(np.float32)
    s[s == 0] = 1.0
    u = (x / s).reshape(-1, grid.shape[1])
    q = np.empty_like(u)
    for a in range(0, u.shape[0], 1 << 20):  # nearest grid point, in slices to bound memory
        d = ((u[a:a + (1 << 20), None, :] - grid[None]) ** 2).sum(-1)
        q[a:a + (1 << 20)] = grid[d.argmin(1)]
    y = (q.reshape(rows, cols // group, group) * s).reshape(rows, cols // blk, blk) @ hmat
    return y.reshape(rows, cols) * signs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="../shared/models/proxy-27m")
    ap.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--signs", choices=["kvant", "shared", "row"], default="kvant")
    ap.add_argument("--group", type=int, default=256)
    ap.add_argument("--p", type=int, default=2)
    ap.add_argument("--b", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    try:
        import torch
        from safetensors.numpy import save_file
        from safetensors.torch import load_file
    except ImportError as e:
        print(f"crosscheck_higgs: skipped ({e}; pip install torch safetensors numpy)")
        return 0
    grid, hmat = load_grid(a.repo, a.p, a.b), sylvester(512)
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    tensors = {}
    for f in sorted(os.listdir(a.model)):
        path = os.path.join(a.model, f)
        if f.endswith(".safetensors"):
            tensors.update({k: v.float().numpy() for k, v in load_file(path).items()})
        elif os.path.isfile(path) and f != "model.safetensors.index.json":
            shutil.copy(path, a.out)
    lin = re.compile(r"layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$")
    for k in sorted(tensors):
        if not lin.search(k):
            continue
        rows, cols = tensors[k].shape
        if a.signs == "kvant":
            signs = kvant_signs(kvant_tensor_seed(a.seed, gguf_name(k)), cols)[None, :]
        elif a.signs == "shared":
            signs = rng.choice([-1.0, 1.0], size=(1, cols)).astype(np.float32)
        else:
            signs = rng.choice([-1.0, 1.0], size=(rows, cols)).astype(np.float32)
        tensors[k] = fake_quant(tensors[k], signs, hmat, grid, a.group)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
              os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    print(f"wrote {a.out} (higgs_p{a.p}_b{a.b}, groups of {a.group}, {a.signs} signs, seed {a.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
