/* study.h — internals shared by src/eval/study.c (spec, run) and study_report.c (report). */
#ifndef KV_EVAL_STUDY_H
#define KV_EVAL_STUDY_H
#include "core/core.h"

#define KV_STUDY_MAX_OVERRIDES 32

typedef enum { KV_CELL_KVANT = 0, KV_CELL_LLAMACPP = 1 } kv_cell_kind;

/* One recipe of the study: a kvant quantization or a llama-quantize reference. */
typedef struct kv_study_cell {
    char id[17];              /* 16 hex digits of a hash of key: the resume key */
    char label[200];
    char key[2048];           /* canonical recipe + evaluation settings */
    kv_cell_kind kind;
    char format[48];          /* kvant: format or mix (with bits: what the allocation leaves); llama.cpp: type */
    char method[96];
    char transform[96];       /* "" for none */
    char act[16];             /* "none" or an activation format */
    double bits;              /* > 0: bit allocation among candidates */
    char candidates[512];     /* comma list */
    char allocate[16];        /* linearity | waterfill | uniform */
    int pure, entropy_code, no_imatrix;
    char *overrides[KV_STUDY_MAX_OVERRIDES];
    int n_overrides;
} kv_study_cell;

struct kv_study {
    char name[128];
    char spec_path[1024];
    char model[1024];
    char out_dir[1024];
    char text[1024];
    int32_t ctx;
    int64_t chunks;
    char *tasks[8];
    int n_tasks;
    kv_taskset *tasksets[8];
    int64_t task_limit;
    char calib[1024];         /* "" when none */
    int64_t calib_tokens;
    uint64_t seed;
    char alphas[1024];        /* "" | "auto" | a file from kvant sensitivity */
    int64_t alpha_tokens;
    int threads, jobs;
    int keep_models;
    int layer_gaps;           /* per-layer rate-distortion gap of each cell (unrotated weights only) */
    char llama_model[1024];   /* GGUF llama-quantize reads */
    int llama_imatrix;
    kv_study_cell *cells;
    int64_t n_cells;
};

#endif
