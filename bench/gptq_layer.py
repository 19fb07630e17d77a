#!/usr/bin/env python3
"""gptq_layer.py — the same GPTQ as bench/gptq_layer.c in PyTorch on CPU (the paper's algorithm as in
IST-DASLab/gptq gptq.py fasterquant: damping 0.01, Cholesky of H^-1 (upper), lazy batches of 128, groups of 128
computed on the updated weights, asymmetric 4-bit min/max quantizer), timed on the W and H files the C bench
wrote. Prints one line; exits 0 with a note when torch is absent.
    python3 bench/gptq_layer.py ROWS COLS DIR [THREADS]"""
import sys
import time

try:
    import torch
except ImportError:
    print("torch  gptq: skipped (PyTorch is not installed: pip install torch)")
    sys.exit(0)


def quantize(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero)


def find_params(w, maxq):
    # per row of the group: asymmetric min/max including 0 (AutoGPTQ Quantizer.find_params, sym=False)
    xmin = torch.minimum(w.min(1).values, torch.zeros(w.shape[0]))
    xmax = torch.maximum(w.max(1).values, torch.zeros(w.shape[0]))
    tmp = (xmin == 0) & (xmax == 0)
    xmin[tmp], xmax[tmp] = -1, +1
    scale = (xmax - xmin) / maxq
    zero = torch.round(-xmin / scale)
    return scale.unsqueeze(1), zero.unsqueeze(1)


def gptq(W, H, blocksize=128, groupsize=128, percdamp=0.01, bits=4):
    maxq = 2 ** bits - 1
    W = W.clone()
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    H += damp * torch.eye(H.shape[0])
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    Q = torch.zeros_like(W)
    cols = W.shape[1]
    scale = zero = None
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if (i1 + i) % groupsize == 0:
                scale, zero = find_params(W[:, (i1 + i):(i1 + i + groupsize)], maxq)
            q = quantize(w.unsqueeze(1), scale, zero, maxq).flatten()
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return Q


def main():
    rows, cols, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if len(sys.argv) > 4:
        torch.set_num_threads(int(sys.argv[4]))
    W = torch.from_file(f"{d}/w.f32", size=rows * cols, dtype=torch.float32).reshape(rows, cols)
    H = torch.from_file(f"{d}/h.f32", size=cols * cols, dtype=torch.float32).reshape(cols, cols)
    t0, c0 = time.perf_counter(), time.process_time()
    Q = gptq(W, H)
    t, c = time.perf_counter() - t0, time.process_time() - c0
    D = W - Q
    loss = float(((D @ H) * D).sum())
    print(f"torch  gptq {rows} x {cols} int4_g128_asym: GPTQ {t:.2f} s ({c:.2f} CPU s, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}), loss {loss:.6g}")


if __name__ == "__main__":
    main()
