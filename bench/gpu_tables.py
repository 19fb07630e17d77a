#!/usr/bin/env python3
"""gpu_tables.py — docs/RESULTS.md's GPU tables from `kvant bench kernels --gpu --json` output.

usage: python3 bench/gpu_tables.py BENCH.json [TUNE.json]

BENCH.json: a run with the default kernel variants (the tables per batch size, W8A8, the targets);
TUNE.json (optional): a run with --tune (every variant side by side). Standard library only."""
import json
import sys

SHAPES = [(4096, 4096, "4096×4096"), (14336, 4096, "14336×4096"), (4096, 14336, "4096×14336"),
          (128256, 4096, "128256×4096")]
WQ_VARIANTS = {0: "default", 10: "staged, 3 stages", 12: "staged, 4 stages", 13: "staged, 4, table",
               2: "16-row tiles, 2 in flight", 4: "16-row tiles, 4 in flight", 3: "16-row tiles, 2, table",
               5: "16-row tiles, 4, table"}
W8_VARIANTS = {0: "default", 1: "wgmma", 2: "wgmma, MMAs overlapped", 3: "mma.sync"}


def load(path):
    with open(path) as f:
        return json.load(f)


def pick(rows, **kw):
    return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]


def one(rows, **kw):
    got = pick(rows, **kw)
    return got[0] if got else None


def formats_of(rows):
    out = []
    for r in rows:
        if r["kind"] == "wq" and r["format"] not in out:
            out.append(r["format"])
    return out


def wq_tables(R):
    for m in sorted({r["m"] for r in R if r["kind"] == "wq"}):
        print(f"\nBatch {m} (µs, GB/s of weight bytes read, × cuBLAS bf16):\n")
        print("| format | " + " | ".join(s[2] for s in SHAPES) + " |")
        print("|---|" + "---|" * len(SHAPES))
        cells = []
        for n, k, _ in SHAPES:
            c = one(R, kind="cublas", n=n, k=k, m=m)
            cells.append(f"{c['us']:.1f} µs, {c['gbps']:.0f} GB/s" if c else "—")
        print("| cuBLAS bf16 | " + " | ".join(cells) + " |")
        for f in formats_of(R):
            cells = []
            for n, k, _ in SHAPES:
                r = one(R, kind="wq", format=f, n=n, k=k, m=m, variant=0)
                cells.append(f"{r['us']:.1f}, {r['gbps']:.0f}, **×{r['x_cublas_bf16']:.2f}**" if r else "—")
            print(f"| {f} | " + " | ".join(cells) + " |")


def tune_table(T):
    variants = sorted({r["variant"] for r in T if r["kind"] == "wq"})
    print("\nWeight-only kernel variants (--tune; µs, × cuBLAS bf16 in the same run):\n")
    print("| format | batch | shape | " + " | ".join(WQ_VARIANTS.get(v, str(v)) for v in variants) + " |")
    print("|---|---|---|" + "---|" * len(variants))
    for f in formats_of(T):
        for m in sorted({r["m"] for r in T if r["kind"] == "wq"}):
            for n, k, name in SHAPES:
                cells = []
                for v in variants:
                    r = one(T, kind="wq", format=f, n=n, k=k, m=m, variant=v)
                    cells.append(f"{r['us']:.1f}, ×{r['x_cublas_bf16']:.2f}" if r else "—")
                if any(c != "—" for c in cells):
                    print(f"| {f} | {m} | {name} | " + " | ".join(cells) + " |")


def w8_table(R, title):
    w = [r for r in R if r["kind"] == "w8a8"]
    if not w:
        return
    variants = sorted({r["variant"] for r in w})
    cols = [(fmt, v) for fmt in ("int8", "fp8_e4m3") for v in variants]
    print(f"\n{title}\n")
    print("| shape | tokens | cuBLAS bf16 | " + " | ".join(f"{f}, {W8_VARIANTS.get(v, v)}" for f, v in cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for n, k, name in SHAPES:
        for m in sorted({r["m"] for r in w}):
            a = pick(w, n=n, k=k, m=m)
            if not a:
                continue
            cub = a[0]["cublas_bf16_us"]
            cells = [f"{cub:.0f} µs ({2.0 * m * n * k / cub * 1e-6:.0f})"]
            for f, v in cols:
                r = one(a, format=f, variant=v)
                cells.append(f"{r['us']:.0f} µs ({r['tflops']:.0f}), **×{r['x_cublas_bf16']:.2f}**" if r else "—")
            print(f"| {name} | {m} | " + " | ".join(cells) + " |")


def targets(R):
    def rng(xs):
        return f"×{min(xs):.2f}–{max(xs):.2f}" if xs else "—"

    b1 = [r for r in pick(R, kind="wq", format="int4_g128_sym", m=1, variant=0)]
    b16 = [r for r in pick(R, kind="wq", format="int4_g128_sym", m=16, variant=0)]
    per_byte = []
    for n, k, _ in SHAPES:
        h = one(R, kind="wq", format="higgs_p2_b3", n=n, k=k, m=1, variant=0)
        i = one(R, kind="wq", format="int4_g128_sym", n=n, k=k, m=1, variant=0)
        if h and i:
            per_byte.append((h["us"] / h["gpu_bytes"]) / (i["us"] / i["gpu_bytes"]))
    w8 = [r for r in pick(R, kind="w8a8", format="int8") if r["m"] >= 512]
    best = {}
    for r in w8:
        key = (r["n"], r["k"], r["m"])
        best[key] = max(best.get(key, 0.0), r["x_cublas_bf16"])
    copy = one(R, kind="copy")
    print("\nAgainst the issue's targets (each ratio from one run):\n")
    print("| target | measured | met |")
    print("|---|---|---|")
    gb = [r["gbps"] for r in b1]
    print(f"| batch-1 W4A16 GEMV ≥ 3.5× cuBLAS bf16 | int4_g128_sym {rng([r['x_cublas_bf16'] for r in b1])}; "
          f"{min(gb):.0f}–{max(gb):.0f} GB/s" + (f" (device copy {copy['gbps']:.0f} GB/s read + written)" if copy else "")
          + f" | {'yes' if b1 and min(r['x_cublas_bf16'] for r in b1) >= 3.5 else 'no'} |")
    met = sum(1 for x in per_byte if x <= 1.2)
    print("| HIGGS p=2 3-bit within 1.2× of int4's time per weight byte | higgs_p2_b3 / int4_g128_sym, time per GPU "
          "byte: " + ", ".join(f"{x:.2f}" for x in per_byte) + f" | {met} of {len(per_byte)} shapes |")
    print(f"| batch 16 ≥ 3× bf16 | int4_g128_sym {rng([r['x_cublas_bf16'] for r in b16])} | "
          f"{'yes' if b16 and min(r['x_cublas_bf16'] for r in b16) >= 3.0 else 'no'} |")
    print(f"| INT8 W8A8 ≥ 1.7× bf16 at batch ≥ 512 | best int8 variant per shape {rng(list(best.values()))} | "
          f"{'yes' if best and min(best.values()) >= 1.7 else 'no'} |")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    d = load(sys.argv[1])
    R = d["results"]
    print(f"Device: {d['device']} ({d['sms']} SMs, {d['l2_bytes'] >> 20} MB L2, CUDA runtime {d['cuda_runtime']}).")
    wq_tables(R)
    w8_table(R, "W8A8 (per-token activation quantization included; µs (TOPS / TFLOP/s), × cuBLAS bf16 in the same run):")
    if len(sys.argv) > 2:
        T = load(sys.argv[2])["results"]
        tune_table(T)
        w8_table(T, "W8A8 kernel variants (--tune; µs (TOPS), × cuBLAS bf16 in the same run):")
    targets(R)


if __name__ == "__main__":
    main()
