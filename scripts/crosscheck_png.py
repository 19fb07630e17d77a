#!/usr/bin/env python3
"""Cross-check of kvant's PNG writer (tests/test_plot.c): decode FILE.png with the standard library's zlib
(chunk CRCs, IHDR, filters None/Sub/Up/Average/Paeth) and, when installed, with PIL; both must give the raw
8-bit RGB pixels of EXPECTED.rgb. Exit 0 when they agree."""
import struct
import sys
import zlib


def decode(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "bad signature"
    pos, idat, w = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        typ, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(typ + body) & 0xFFFFFFFF == crc, "bad CRC in %r" % typ
        if typ == b"IHDR":
            w, h, depth, ctype, comp, filt, inter = struct.unpack(">IIBBBBB", body)
            assert (depth, ctype, comp, filt, inter) == (8, 2, 0, 0, 0), "unexpected IHDR"
        elif typ == b"IDAT":
            idat += body
        elif typ == b"IEND":
            break
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * 3
    assert len(raw) == (stride + 1) * h, "wrong decompressed size"
    out, prev = bytearray(), bytearray(stride)
    for y in range(h):
        f, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = row[x - 3] if x >= 3 else 0
            b, c = prev[x], prev[x - 3] if x >= 3 else 0
            if f == 1:
                row[x] = (row[x] + a) & 255
            elif f == 2:
                row[x] = (row[x] + b) & 255
            elif f == 3:
                row[x] = (row[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[x] = (row[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            else:
                assert f == 0, "bad filter %d" % f
        out += row
        prev = row
    return w, h, bytes(out)


def main():
    png, expected = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
    w, h, pixels = decode(png)
    if pixels != expected:
        print("zlib decode differs from the expected pixels")
        return 1
    try:
        from PIL import Image
    except ImportError:
        print("zlib: ok (%dx%d); PIL not installed" % (w, h))
        return 0
    im = Image.open(sys.argv[1])
    im.load()
    if im.mode != "RGB" or im.size != (w, h) or im.tobytes() != expected:
        print("PIL decode differs")
        return 1
    print("zlib and PIL: ok (%dx%d)" % (w, h))
    return 0


if __name__ == "__main__":
    sys.exit(main())
