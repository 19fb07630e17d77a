#!/usr/bin/env python3
"""crosscheck_minifloat.py — optional cross-check of kvant's FP8/FP6/FP4 element rounding against ml_dtypes.

Usage: python3 scripts/crosscheck_minifloat.py KVANT_BIN TMPDIR   (exit 0 = all codes equal; needs numpy, ml_dtypes)

For each element format, rows of 256 float32 values (random magnitudes over the whole range, subnormals, exact
midpoints between neighbouring codes, both signs) get the format's max_norm as their first value, so that the
per-row scale of kvant's fp8_e4m3 / ... formats is exactly 1 and the stored codes are plain conversions. The
codes written by `kvant formats quantize` must equal ml_dtypes' round-to-nearest-even casts bit for bit.
"""
import os
import subprocess
import sys

import ml_dtypes
import numpy as np

FORMATS = [  # kvant name, ml_dtypes type, bits per code, max_norm
    ("fp8_e4m3", ml_dtypes.float8_e4m3fn, 8, 448.0),
    ("fp8_e5m2", ml_dtypes.float8_e5m2, 8, 57344.0),
    ("fp6_e3m2", ml_dtypes.float6_e3m2fn, 6, 28.0),
    ("fp6_e2m3", ml_dtypes.float6_e2m3fn, 6, 7.5),
    ("fp4_e2m1", ml_dtypes.float4_e2m1fn, 4, 6.0),
]
ROW, ROWS = 256, 64


def unpack(row_bytes, bits, n):
    stream = int.from_bytes(row_bytes, "little")
    return [(stream >> (i * bits)) & ((1 << bits) - 1) for i in range(n)]


def main():
    kvant, tmp = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(1)
    failures = 0
    for name, dt, bits, max_norm in FORMATS:
        codes = np.arange(1 << bits, dtype=np.uint8)
        values = codes.view(dt).astype(np.float32) if bits == 8 else np.array(
            [np.array(c, dtype=np.uint8).view(dt) for c in codes], dtype=np.float32)
        finite = np.sort(np.unique(values[np.isfinite(values) & (values >= 0)]))
        mids = ((finite[:-1].astype(np.float64) + finite[1:]) / 2).astype(np.float32)
        x = np.empty((ROWS, ROW), dtype=np.float32)
        for r in range(ROWS):
            kind = r % 3
            if kind == 0:    # log-uniform magnitudes over the format's range and below
                mag = np.exp2(rng.uniform(np.log2(finite[1]) - 3, np.log2(max_norm), ROW))
            elif kind == 1:  # exact midpoints (ties)
                mag = rng.choice(mids, ROW)
            else:            # midpoints nudged by one float32 ulp either way
                mag = np.nextafter(rng.choice(mids, ROW).astype(np.float32),
                                   np.where(rng.random(ROW) < 0.5, 0, np.inf).astype(np.float32))
            row = (mag * np.where(rng.random(ROW) < 0.5, -1.0, 1.0)).astype(np.float32)
            row[0] = max_norm  # row absmax = max_norm: kvant's row scale is exactly 1
            x[r] = np.clip(row, -max_norm, max_norm)
        xin, yout = os.path.join(tmp, name + ".f32"), os.path.join(tmp, name + ".bin")
        x.tofile(xin)
        subprocess.run([kvant, "formats", "quantize", "--format", name, "--row", str(ROW), "--in", xin,
                        "--out", yout, "--quiet"], check=True)
        data = open(yout, "rb").read()
        row_bytes = 4 + ROW * bits // 8
        want = x.astype(dt).view(np.uint8) if bits == 8 else np.array(
            [[np.array(v, dtype=dt).view(np.uint8) for v in row] for row in x], dtype=np.uint8)
        mism = 0
        for r in range(ROWS):
            blob = data[r * row_bytes:(r + 1) * row_bytes]
            if np.frombuffer(blob[:4], dtype=np.float32)[0] != 1.0:
                print(f"{name}: row {r}: scale is not 1")
                mism += 1
                continue
            got = unpack(blob[4:], bits, ROW)
            for i in range(ROW):
                if got[i] != int(want[r, i]) & ((1 << bits) - 1):
                    if mism < 5:
                        print(f"{name}: x={x[r, i]!r}: kvant code {got[i]:#x}, ml_dtypes {int(want[r, i]):#x}")
                    mism += 1
        print(f"{name}: {ROWS * ROW} values, {mism} mismatches")
        failures += mism
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
