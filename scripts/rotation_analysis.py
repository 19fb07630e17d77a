#!/usr/bin/env python3
"""rotation_analysis.py — why rotations barely help weight-only RTN on proxy-27m (docs/RESULTS.md, "Why rotations
help or not"). Data-free measurements on the bf16 checkpoint (torch + safetensors), for RTN intN_g{G}_asym
(min/max per group, as AutoGPTQ's quantizer without the zero clamp):

1. excess tails: mean kurtosis of the weight groups before and after a 512-block random Hadamard rotation
   (a Gaussian group of 128 has ~2.95);
2. the ceiling of what a rotation can do for RTN: relative weight MSE ‖W − Q(W)‖²/‖W‖² before and after;
3. the cost of QuaRot's RMSNorm folding: Σ_j γ_j²·err_j² (error made on W, scaled by γ at run time) against the
   error made directly on W·diag(γ) (folded), for the linears fed by a norm.

    python3 scripts/rotation_analysis.py [--model DIR] [--bits 3] [--group 128] [--seed 0]
"""
import argparse
import os
import re
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="../shared/models/proxy-27m")
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    try:
        import torch
        from safetensors.torch import load_file
    except ImportError as e:
        print(f"rotation_analysis: skipped ({e}; pip install torch safetensors)")
        return 0
    torch.manual_seed(a.seed)
    t = {}
    for f in sorted(os.listdir(a.model)):
        if f.endswith(".safetensors"):
            t.update({k: v.float() for k, v in load_file(os.path.join(a.model, f)).items()})

    def hadamard(n):
        h = torch.ones(1, 1)
        while h.shape[0] < n:
            h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
        return h / n ** 0.5

    def rtn(w):
        r, c = w.shape
        x = w.reshape(r, c // a.group, a.group)
        lo, hi = x.min(-1, keepdim=True).values, x.max(-1, keepdim=True).values
        s = (hi - lo) / (2 ** a.bits - 1)
        s[s == 0] = 1
        q = torch.clamp(torch.round((x - lo) / s), 0, 2 ** a.bits - 1)
        return (q * s + lo).reshape(r, c)

    def kurtosis(w):
        x = w.reshape(-1, a.group)
        x = x - x.mean(-1, keepdim=True)
        return ((x ** 4).mean(-1) / (x ** 2).mean(-1) ** 2).mean().item()

    h = hadamard(512)
    lin = re.compile(r"layers\.(\d+)\.(self_attn|mlp)\.(\w+)_proj\.weight$")
    e_raw = e_rot = energy = 0.0
    print(f"{'tensor':34s} {'kurtosis':>16s} {'rel. MSE int%d' % a.bits:>20s}")
    for k in sorted(t):
        m = lin.search(k)
        if not m:
            continue
        w = t[k]
        rows, cols = w.shape
        signs = torch.randint(0, 2, (cols,)).float() * 2 - 1
        r = ((w * signs).reshape(rows, cols // 512, 512) @ h.T).reshape(rows, cols)
        er, eo = ((w - rtn(w)) ** 2).sum().item(), ((r - rtn(r)) ** 2).sum().item()
        e_raw, e_rot, energy = e_raw + er, e_rot + eo, energy + (w ** 2).sum().item()
        n2 = (w ** 2).sum().item()
        print(f"L{m.group(1)} {m.group(2)}.{m.group(3):20s} {kurtosis(w):7.2f} -> {kurtosis(r):5.2f} "
              f"{er / n2:10.4f} -> {eo / n2:.4f}")
    print(f"all decoder linears: relative MSE {e_raw / energy:.5f} -> {e_rot / energy:.5f} "
          f"({100 * (e_rot / e_raw - 1):+.1f}% from the rotation)")

    unfolded = folded = 0.0
    for layer in range(1000):
        if f"model.layers.{layer}.input_layernorm.weight" not in t:
            break
        for norm, mods in (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                           ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"))):
            g = t[f"model.layers.{layer}.{norm}.weight"]
            for mod in mods:
                w = t[f"model.layers.{layer}.{mod}.weight"]
                unfolded += (((w - rtn(w)) * g) ** 2).sum().item()
                wf = w * g
                folded += ((wf - rtn(wf)) ** 2).sum().item()
    print(f"RMSNorm folding: gamma-weighted error folded/unfolded = {folded / unfolded:.4f} "
          f"({100 * (folded / unfolded - 1):+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
