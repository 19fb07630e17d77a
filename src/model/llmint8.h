/* llmint8.h — where an LLM.int8() weight keeps its outliers in a GGUF (docs/FORMAT.md "kvant LLM.int8()
 * weights"): written by src/algos/llmint8_method.c, read by src/model/llmint8_load.c. */
#ifndef KV_MODEL_LLMINT8_H
#define KV_MODEL_LLMINT8_H

#define I8_COLS_KEY "kvant.llmint8.%s.cols"
#define I8_OUTL_NAME "%s.llmint8_outl"
#define I8_THRESHOLD_KEY "kvant.llmint8.threshold"

#endif
