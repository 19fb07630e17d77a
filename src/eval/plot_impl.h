/* plot_impl.h — internals of the plot module (src/eval/plot.c, png.c): the PNG encoder and its checksums,
 * exposed for the tests. */
#ifndef KV_EVAL_PLOT_IMPL_H
#define KV_EVAL_PLOT_IMPL_H
#include "core/core.h"
#include <stddef.h>
#include <stdint.h>

/* CRC-32 (ISO 3309, as PNG and zlib use it) continuing from crc (0 to start). */
uint32_t kv_crc32(uint32_t crc, const uint8_t *p, size_t n);
uint32_t kv_adler32(const uint8_t *p, size_t n);
/* w × h pixels of 8-bit RGB (row-major, 3 bytes a pixel) -> a PNG file image (malloc'd). */
kv_status kv_png_encode(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *out_n, kv_error *err);
#endif
