#!/usr/bin/env python3
"""ref_stories260k.py -- an independent reference forward pass for ../shared/models/stories260K/stories260K.bin,
written from llama2.c's run.c semantics (not from kvant): the raw checkpoint layout (7 x int32 header, fp32
weights in memory_map_weights order), interleaved RoPE on adjacent pairs (run.c's forward), RMSNorm eps 1e-5,
GQA, SwiGLU, classifier shared with the embedding. Pure Python in float64 (no numpy needed).

Prints, for the token ids below, the argmax and a few logits at every position; tests/test_forward.c holds
these numbers (kvant reads the checkpoint through its own loader, un-permutes q/k into the rotate-half layout
and runs its fp32 forward, so agreement checks loader + forward independently).
Usage: python3 scripts/ref_stories260k.py [path/to/stories260K.bin]"""
import math
import struct
import sys

IDS = [1, 403, 407, 261, 378, 379, 294, 22]
PROBE = [0, 1, 100, 257, 511]


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "../shared/models/stories260K/stories260K.bin"
    raw = open(path, "rb").read()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack_from("<7i", raw, 0)
    shared = vocab > 0
    vocab = abs(vocab)
    hs = dim // n_heads
    kv_dim = n_kv * hs
    off = 28

    def take(n):
        nonlocal off
        v = struct.unpack_from("<%df" % n, raw, off)
        off += 4 * n
        return v

    def mat(flat, rows, cols, l):
        base = l * rows * cols
        return [flat[base + r * cols: base + (r + 1) * cols] for r in range(rows)]

    emb = take(vocab * dim)
    rms_att = take(n_layers * dim)
    wq = take(n_layers * dim * dim)
    wk = take(n_layers * dim * kv_dim)
    wv = take(n_layers * dim * kv_dim)
    wo = take(n_layers * dim * dim)
    rms_ffn = take(n_layers * dim)
    w1 = take(n_layers * dim * hidden)
    w2 = take(n_layers * hidden * dim)
    w3 = take(n_layers * dim * hidden)
    rms_final = take(dim)
    off += 4 * seq_len * hs // 2 * 2  # legacy freq_cis_real / freq_cis_imag
    wcls = emb if shared else take(vocab * dim)

    def matvec(rows, x):
        return [sum(a * b for a, b in zip(r, x)) for r in rows]

    def rmsnorm(x, w):
        ss = sum(v * v for v in x) / len(x) + 1e-5
        s = 1.0 / math.sqrt(ss)
        return [w[i] * x[i] * s for i in range(len(x))]

    kc = [[None] * len(IDS) for _ in range(n_layers)]
    vc = [[None] * len(IDS) for _ in range(n_layers)]
    for pos, tok in enumerate(IDS):
        x = list(emb[tok * dim:(tok + 1) * dim])
        for l in range(n_layers):
            xb = rmsnorm(x, rms_att[l * dim:(l + 1) * dim])
            q = matvec(mat(wq, dim, dim, l), xb)
            k = matvec(mat(wk, kv_dim, dim, l), xb)
            v = matvec(mat(wv, kv_dim, dim, l), xb)
            for i in range(0, dim, 2):  # run.c: rotate adjacent pairs
                freq = 1.0 / (10000.0 ** ((i % hs) / hs))
                c, s = math.cos(pos * freq), math.sin(pos * freq)
                for vec in ((q, k) if i < kv_dim else (q,)):
                    a, b = vec[i], vec[i + 1]
                    vec[i], vec[i + 1] = a * c - b * s, a * s + b * c
            kc[l][pos], vc[l][pos] = k, v
            out = []
            for h in range(n_heads):
                kvh = h // (n_heads // n_kv)
                qh = q[h * hs:(h + 1) * hs]
                sc = [sum(a * b for a, b in zip(qh, kc[l][t][kvh * hs:(kvh + 1) * hs])) / math.sqrt(hs)
                      for t in range(pos + 1)]
                mx = max(sc)
                e = [math.exp(v_ - mx) for v_ in sc]
                z = sum(e)
                o = [0.0] * hs
                for t in range(pos + 1):
                    vv = vc[l][t][kvh * hs:(kvh + 1) * hs]
                    for i in range(hs):
                        o[i] += e[t] / z * vv[i]
                out += o
            x = [a + b for a, b in zip(x, matvec(mat(wo, dim, dim, l), out))]
            xb = rmsnorm(x, rms_ffn[l * dim:(l + 1) * dim])
            g = matvec(mat(w1, hidden, dim, l), xb)
            u = matvec(mat(w3, hidden, dim, l), xb)
            hb = [gi / (1.0 + math.exp(-gi)) * ui for gi, ui in zip(g, u)]
            x = [a + b for a, b in zip(x, matvec(mat(w2, dim, hidden, l), hb))]
        x = rmsnorm(x, rms_final)
        logits = matvec([wcls[r * dim:(r + 1) * dim] for r in range(vocab)], x)
        am = max(range(vocab), key=lambda i: logits[i])
        print("pos %d argmax %d logits %s" % (pos, am, " ".join("%.6f" % logits[i] for i in PROBE)))


if __name__ == "__main__":
    main()
