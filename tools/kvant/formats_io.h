/* formats_io.h — `kvant formats quantize` and `kvant formats dequantize` (tools/kvant/cmd_formats_io.c),
 * dispatched by `kvant formats` (cmd_formats.c). argv[0] is the subcommand name. */
#ifndef KV_FORMATS_IO_H
#define KV_FORMATS_IO_H

int kv_cmd_formats_quantize(int argc, char **argv);
int kv_cmd_formats_dequantize(int argc, char **argv);

#endif
