#!/usr/bin/env python3
"""gptq_layer.py — the GPTQ of bench/gptq_layer.c in PyTorch on CPU, timed on the W and H files the C bench
wrote, and its result compared with kvant's (q.f32). The algorithm is the paper's, as in IST-DASLab/gptq
gptq.py GPTQ.fasterquant: damping 0.01 of mean diag H, H^-1 via Cholesky -> cholesky_inverse -> upper
Cholesky, lazy batches of 128 with one GEMM for the trailing columns, a group's parameters fixed from the
updated weights when the loop reaches its first column. The quantizer is kvant's int4_g128_asym (llama.cpp
type-1: d = (max - min)/15 and min stored as fp16, value = d*code + min), and rounding follows kvant's GPTQ
(format grid: the first column of a group keeps the format's own round-to-nearest-even code; later columns
take the nearest level of (w - b)/a with a = (d + min) - min, b = min, ties to the lower level), so the two
sides do the same arithmetic and differ only in BLAS summation order. H^-1 is factored in fp64 like kvant
(--inverse fp32: gptq.py's own fp32, a faster but different computation). Exits 0 with a note when torch
is absent.
    python3 bench/gptq_layer.py ROWS COLS DIR [THREADS [REPEAT]] [--inverse fp32|fp64] [--kvant-seconds S]"""
import argparse
import resource
import sys
import time

try:
    import torch
except ImportError:
    print("torch  gptq: skipped (PyTorch is not installed for this Python; set PYTHON=... or pip install torch)")
    sys.exit(0)

MAXQ = 15
GROUP = 128


def group_params(wg):
    """kvant int4 asym (src/formats/int.c int_fit_ratio): d and min rounded to fp16 (d via fp64 -> fp32)."""
    lo, hi = wg.min(1).values, wg.max(1).values
    d = ((hi.double() - lo.double()) / MAXQ).float().half().float()
    mn = lo.half().float()
    return d, mn


def own_code(w, d, mn):
    """the format's round to nearest even: clamp(rint((w - min)/d), 0, 15); 0 where d == 0"""
    c = torch.clamp(torch.round((w - mn) / d), 0, MAXQ)
    return torch.where(d == 0, torch.zeros_like(c), c)


def grid_code(w, a, b):
    """nearest level of (w - b)/a, ties to the lower level (kv_fgrid_nearest1)"""
    u = (w - b) / a
    return torch.clamp(torch.ceil(u - 0.5), 0, MAXQ)


def damped_upper_inverse(H, percdamp, dtype):
    """U with (H + lambda I)^-1 = U^T U; lambda raised tenfold until H + lambda I is positive definite"""
    H = H.to(dtype)
    n = H.shape[0]
    mean = float(torch.diag(H).double().mean())
    lam = percdamp * mean
    for _ in range(12):
        L, info = torch.linalg.cholesky_ex(H + lam * torch.eye(n, dtype=dtype))
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            del L
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            del Hinv
            if int(info) == 0:
                return U.float(), lam
        lam = lam * 10 if lam > 0 else 1e-6 * mean
    raise RuntimeError("H is not positive definite even with damping")


def gptq(W, H, blocksize=128, percdamp=0.01, inv_dtype=torch.float64):
    rows, cols = W.shape
    W = W.clone()
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, :] = 0
    H[:, dead] = 0
    H[dead, dead] = 1
    W[:, dead] = 0
    U, _ = damped_upper_inverse(H, percdamp, inv_dtype)
    del H
    codes = torch.zeros(rows, cols, dtype=torch.uint8)
    D = torch.zeros(rows, cols // GROUP)
    MN = torch.zeros(rows, cols // GROUP)
    loss = torch.zeros(rows, dtype=torch.float64)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if col % GROUP == 0:  # the group opens: parameters from the current (updated) weights
                g = col // GROUP
                wg = W1[:, i:i + GROUP] if i + GROUP <= i2 - i1 else torch.cat(
                    [W1[:, i:], W[:, i2:col + GROUP]], 1)
                d, mn = group_params(wg)
                D[:, g], MN[:, g] = d, mn
                a = (d + mn) - mn
                S = wg.clone()  # the values at opening: untouched columns keep the format's own code
                g0 = col
            w = W1[:, i]
            c = torch.where((w == S[:, col - g0]) | (a == 0), own_code(w, d, mn), grid_code(w, a, mn))
            codes[:, col] = c.to(torch.uint8)
            q = a * c + mn
            err = (w - q) / U1[i, i]
            W1[:, i:] -= err.unsqueeze(1).matmul(U1[i, i:].unsqueeze(0))
            Err1[:, i] = err
            loss += err.double() ** 2
        W[:, i2:] -= Err1.matmul(U[i1:i2, i2:])
    Q = D.repeat_interleave(GROUP, 1) * codes.float() + MN.repeat_interleave(GROUP, 1)
    return Q, float(loss.sum()), D


def proxy_loss(W, Q, H, nrows=256):
    """sum over the first nrows rows of (w - q) H (w - q)^T, in fp64"""
    D = (W[:nrows] - Q[:nrows]).double()
    return float(((D @ H.double()) * D).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rows", type=int)
    ap.add_argument("cols", type=int)
    ap.add_argument("dir")
    ap.add_argument("threads", type=int, nargs="?", default=0)
    ap.add_argument("repeat", type=int, nargs="?", default=1)
    ap.add_argument("--inverse", choices=["fp32", "fp64"], default="fp64")
    ap.add_argument("--kvant-seconds", type=float, default=None)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    rows, cols, d = a.rows, a.cols, a.dir
    W = torch.from_file(f"{d}/w.f32", size=rows * cols, dtype=torch.float32).reshape(rows, cols).clone()
    H = torch.from_file(f"{d}/h.f32", size=cols * cols, dtype=torch.float32).reshape(cols, cols).clone()
    dtype = torch.float64 if a.inverse == "fp64" else torch.float32
    best = best_cpu = float("inf")
    for rep in range(a.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        Q, loss, D = gptq(W, H, inv_dtype=dtype)
        t, c = time.perf_counter() - t0, time.process_time() - c0
        print(f"torch  gptq {rows} x {cols} int4_g128_asym run {rep + 1} ({a.inverse} inverse): {t:.2f} s "
              f"({c:.2f} CPU s), loss {loss:.6g}", flush=True)
        best, best_cpu = min(best, t), min(best_cpu, c)
    ratio = f", torch/kvant {best / a.kvant_seconds:.2f}x" if a.kvant_seconds else ""
    print(f"torch  gptq {rows} x {cols} int4_g128_asym ({a.inverse} inverse): min of {a.repeat}: {best:.2f} s "
          f"(min CPU {best_cpu:.2f} s, {torch.get_num_threads()} threads, torch {torch.__version__}){ratio}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    Qk = torch.from_file(f"{d}/q.f32", size=rows * cols, dtype=torch.float32).reshape(rows, cols)
    diff = (Q - Qk).abs()
    step = D.repeat_interleave(GROUP, 1)
    steps = float((diff / torch.where(step > 0, step, torch.ones_like(step))).max())
    print(f"compare kvant vs torch ({a.inverse} inverse): {100 * float((diff != 0).double().mean()):.4f}% of the "
          f"{rows * cols} quantized weights differ, max |diff| {float(diff.max()):.3g} ({steps:.2f} quantization steps); proxy loss "
          f"tr(DHD^T) over the first 256 rows: kvant {proxy_loss(W, Qk, H):.6g}, torch {proxy_loss(W, Q, H):.6g}")


if __name__ == "__main__":
    main()
