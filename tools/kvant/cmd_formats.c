/* cmd_formats.c — `kvant formats`: every number format's bits/weight and error on synthetic Gaussian and
 * Student-t data (with and without a random Hadamard rotation) against the Gaussian rate-distortion bound
 * (issue #5, "kvant formats"); --plot draws MSE versus bits/weight per family with the Shannon bound (SVG or PNG).
 * `kvant formats quantize|dequantize` are the raw-row tools of tools/kvant/cmd_formats_io.c. */
#include "cli.h"
#include "formats_io.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: kvant formats [--json] [--plot FILE.svg|FILE.png] [--formats F1,F2,...] [--samples N] [--seed S]\n"
            "                     [-t N] [--quiet]\n"
            "       kvant formats quantize --format F --row N --in X.f32 --out Y.bin [--importance W.f32]\n"
            "       kvant formats dequantize --format F --row N --in Y.bin --out Z.f32\n\n"
            "Lists every number format with its bits/weight (scales included) and its MSE and SNR on N iid\n"
            "N(0,1) samples and on Student-t (nu = 5) samples, each with and without a random Hadamard rotation\n"
            "(blocks of 256), and the gap in bits to the Gaussian rate-distortion bound D(R) = sigma^2 2^(-2R).\n\n"
            "  --json             {\"formats\": [{\"name\", \"bits_per_weight\", \"block\", \"mse_gauss\", ...}]}\n"
            "  --plot FILE        MSE versus bits/weight (log scale) per format family with the Shannon bound\n"
            "                     (.svg or .png; repeatable)\n"
            "  --formats LIST     comma-separated format names (default: the canonical list)\n"
            "  --samples N        samples per data set (default 1048576; rounded up to whole tensors of 64 rows of\n"
            "                     4096 values, so at least 262144, with a warning when it is not such a multiple)\n"
            "  --seed S           seed of the samples and the rotation signs (default 1)\n"
            "  -t, --threads N    worker threads (default: all cores)\n"
            "  --quiet            no progress line\n");
}

typedef struct row_result {
    char name[48];
    int32_t block;
    kv_format_measure m;
} row_result;

/* ---------------------------------------------------------------------------------------------------------- */
/* --plot: MSE versus bits/weight, one colour per family, beside the Shannon bound                           */

static const char *const k_families[] = {"ggml k-quants", "ggml legacy", "ggml i-quants", "MX (OCP)", "NVFP4",
                                         "INT groups", "minifloat", "NF4 / AF4", "HIGGS", "E8 lattice", "other"};
enum { N_FAMILIES = (int)(sizeof k_families / sizeof k_families[0]) };

static int starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

/* The family of a format, from its canonical name (for the plot's colours only). */
static int family_of(const char *n) {
    size_t l = strlen(n);
    if (n[0] == 'q' && l >= 2 && n[l - 2] == '_' && n[l - 1] == 'k') return 0;
    if (n[0] == 'q' && n[1] >= '0' && n[1] <= '9') return 1;
    if (starts(n, "iq")) return 2;
    if (starts(n, "mx")) return 3;
    if (starts(n, "nvfp")) return 4;
    if (starts(n, "int")) return 5;
    if (starts(n, "fp")) return 6;
    if (starts(n, "nf") || starts(n, "af")) return 7;
    if (starts(n, "higgs")) return 8;
    if (starts(n, "e8")) return 9;
    return 10;
}

static kv_status plot_formats(const char *path, const row_result *res, int nres, kv_error *err) {
    enum { NB = 101 };
    const double xmax = 9.5;
    double bx[NB], by[NB];
    for (int k = 0; k < NB; k++) {
        bx[k] = xmax * k / (NB - 1);
        by[k] = exp2(-2.0 * bx[k]); /* D(R) = 2^(-2R) for unit variance */
    }
    kv_plot_series ser[N_FAMILIES + 1];
    double *xs = malloc(sizeof(double) * (size_t)(nres ? nres : 1) * 2);
    const char **labs = malloc(sizeof(char *) * (size_t)(nres ? nres : 1));
    if (!xs || !labs) {
        free(xs);
        free(labs);
        return kv_fail(err, KV_ENOMEM, "out of memory");
    }
    double *ys = xs + nres;
    double ymin = 1.0;
    int ns = 0, used = 0;
    ser[ns++] = (kv_plot_series){.label = "Shannon bound 2^(-2R)", .x = bx, .y = by, .n = NB, .line = 1, .dashed = 1,
                                 .color = 0xc92a2a};
    for (int fam = 0; fam < N_FAMILIES; fam++) {
        int first = used;
        for (int i = 0; i < nres; i++) {
            if (family_of(res[i].name) != fam || res[i].m.bits_per_weight > xmax || !(res[i].m.mse[KV_FMT_GAUSS] > 0))
                continue;
            xs[used] = res[i].m.bits_per_weight;
            ys[used] = res[i].m.mse[KV_FMT_GAUSS];
            ymin = fmin(ymin, ys[used]);
            labs[used++] = res[i].name;
        }
        if (used > first)
            ser[ns++] = (kv_plot_series){.label = k_families[fam], .x = xs + first, .y = ys + first, .n = used - first,
                                         .point_labels = labs + first, .marker = 1, .color = kv_plot_palette(fam)};
    }
    kv_plot p = {.title = "kvant formats: MSE on N(0,1) vs bits/weight",
                 .xlabel = "bits per weight (scales included)",
                 .ylabel = "MSE (log scale)",
                 .ylog = 1,
                 .xmin = 0,
                 .xmax = xmax,
                 .ymin = ymin / 2,
                 .ymax = 1.5,
                 .width = 1200,
                 .height = 800,
                 .series = ser,
                 .n_series = ns};
    kv_status st = kv_plot_write(&p, path, err);
    free(xs);
    free(labs);
    return st;
}

/* ---------------------------------------------------------------------------------------------------------- */

static void print_json(const row_result *res, int nres, int64_t nsamples, uint64_t seed) {
    kv_jw w;
    kv_jw_init(&w, stdout, 1);
    kv_jw_obj_begin(&w);
    kv_jw_key(&w, "samples");
    kv_jw_int(&w, nsamples);
    kv_jw_key(&w, "seed");
    kv_jw_int(&w, (int64_t)seed);
    kv_jw_key(&w, "formats");
    kv_jw_arr_begin(&w);
    static const char *const keys[KV_FMT_NDATASETS] = {"gauss", "gauss_rht", "t5", "t5_rht"};
    for (int i = 0; i < nres; i++) {
        char k[32];
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "name");
        kv_jw_str(&w, res[i].name);
        kv_jw_key(&w, "bits_per_weight");
        kv_jw_num(&w, res[i].m.bits_per_weight);
        kv_jw_key(&w, "block");
        kv_jw_int(&w, res[i].block);
        for (int d = 0; d < KV_FMT_NDATASETS; d++) {
            snprintf(k, sizeof k, "mse_%s", keys[d]);
            kv_jw_key(&w, k);
            kv_jw_num(&w, res[i].m.mse[d]);
        }
        for (int d = 0; d < KV_FMT_NDATASETS; d++) {
            snprintf(k, sizeof k, "snr_db_%s", keys[d]);
            kv_jw_key(&w, k);
            kv_jw_num(&w, res[i].m.snr_db[d]);
        }
        kv_jw_key(&w, "gap_bits_gauss");
        kv_jw_num(&w, res[i].m.gap_bits_gauss);
        kv_jw_obj_end(&w);
    }
    kv_jw_arr_end(&w);
    kv_jw_obj_end(&w);
    kv_jw_end(&w);
}

static void print_table(const row_result *res, int nres, int64_t nsamples) {
    printf("%lld samples per set; MSE (SNR dB); gap = 1/2 log2(MSE_gauss / 2^(-2R))\n", (long long)nsamples);
    printf("%-20s %7s %5s %21s %21s %21s %21s %7s\n", "format", "bits/w", "block", "gauss", "gauss+rht", "t5",
           "t5+rht", "gap");
    for (int i = 0; i < nres; i++) {
        printf("%-20s %7.4f %5d", res[i].name, res[i].m.bits_per_weight, res[i].block);
        for (int d = 0; d < KV_FMT_NDATASETS; d++) printf(" %11.4e (%6.2f)", res[i].m.mse[d], res[i].m.snr_db[d]);
        printf(" %7.3f\n", res[i].m.gap_bits_gauss);
    }
}

/* Fills names (malloc'd array of pointers into list or the registry) from --formats or the canonical list. */
static int collect_names(char *list, const char ***names) {
    int n = 0;
    if (list) {
        int cap = 1;
        for (const char *p = list; *p; p++) cap += *p == ',';
        *names = malloc((size_t)cap * sizeof **names);
        if (!*names) return -1;
        for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ","))
            if (*tok) (*names)[n++] = tok;
        return n;
    }
    int total = kv_format_list_count();
    *names = malloc((size_t)(total > 0 ? total : 1) * sizeof **names);
    if (!*names) return -1;
    for (int i = 0; i < total; i++) {
        const char *nm = kv_format_list_name(i);
        if (nm) (*names)[n++] = nm;
    }
    return n;
}

int kv_cmd_formats(int argc, char **argv) {
    const char *cmd = "formats";
    if (argc >= 2 && (!strcmp(argv[1], "quantize") || !strcmp(argv[1], "dequantize"))) {
        return !strcmp(argv[1], "quantize") ? kv_cmd_formats_quantize(argc - 1, argv + 1)
                                            : kv_cmd_formats_dequantize(argc - 1, argv + 1);
    }
    if (kv_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    int json = 0, quiet = 0;
    const char *plots[4] = {0}, *val = NULL;
    int nplots = 0;
    char *list = NULL;
    long long nsamples = 1 << 20, seed = 1, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (kv_cli_flag(argv, i, "--json", NULL)) json = 1;
        else if (kv_cli_flag(argv, i, "--quiet", "-q")) quiet = 1;
        else if (kv_cli_opt(argc, argv, &i, "--plot", NULL, &val)) {
            if (!val) return kv_cli_usage(cmd, "--plot needs a file name");
            size_t l = strlen(val);
            if (l < 4 || (strcmp(val + l - 4, ".svg") && strcmp(val + l - 4, ".png")))
                return kv_cli_usage(cmd, "--plot writes SVG or PNG: give a FILE.svg or FILE.png");
            if (nplots == 4) return kv_cli_usage(cmd, "--plot at most 4 times");
            plots[nplots++] = val;
        } else if (kv_cli_opt(argc, argv, &i, "--formats", NULL, &val)) {
            if (!val || !*val) return kv_cli_usage(cmd, "--formats needs a comma-separated list");
            list = (char *)val;
        } else if (kv_cli_opt(argc, argv, &i, "--samples", NULL, &val)) {
            if (kv_cli_parse_int(val, 1, 1LL << 28, &nsamples))
                return kv_cli_usage(cmd, "--samples must be an integer in 1 .. 2^28");
        } else if (kv_cli_opt(argc, argv, &i, "--seed", NULL, &val)) {
            if (kv_cli_parse_int(val, 0, 0x7fffffffffffffffLL, &seed))
                return kv_cli_usage(cmd, "--seed must be a non-negative integer");
        } else if (kv_cli_opt(argc, argv, &i, "--threads", "-t", &val)) {
            if (kv_cli_parse_int(val, 1, 1024, &threads)) return kv_cli_usage(cmd, "-t must be in 1 .. 1024");
        } else return kv_cli_usage(cmd, "unknown argument '%s'", argv[i]);
    }
    const long long unit = (long long)KV_FMT_SAMPLE_ROW * KV_FMT_SAMPLE_TENSOR_ROWS; /* whole sample tensors */
    if (nsamples % unit) {
        long long used = (nsamples + unit - 1) / unit * unit;
        if (nsamples < unit)
            fprintf(stderr, "kvant formats: warning: --samples %lld is below the minimum of %lld (one tensor of %d rows "
                    "of %d values): measuring %lld samples per set\n", nsamples, unit, KV_FMT_SAMPLE_TENSOR_ROWS,
                    KV_FMT_SAMPLE_ROW, used);
        else
            fprintf(stderr, "kvant formats: warning: --samples %lld is not a multiple of %lld (whole tensors of %d rows "
                    "of %d values): measuring %lld samples per set\n", nsamples, unit, KV_FMT_SAMPLE_TENSOR_ROWS,
                    KV_FMT_SAMPLE_ROW, used);
    }
    for (int k = 0; k < nplots; k++) { /* an unwritable plot fails before the measurements */
        int prc = kv_cli_prepare_output(cmd, plots[k]);
        if (prc) return prc;
    }
    const char **names = NULL;
    int nnames = collect_names(list, &names);
    if (nnames < 0) {
        fprintf(stderr, "kvant formats: error: out of memory\n");
        return 1;
    }
    kv_error err;
    kv_error_clear(&err);
    /* resolve every name first: a typo is a usage error before any work */
    kv_format *fmts = calloc((size_t)(nnames ? nnames : 1), sizeof *fmts);
    row_result *res = calloc((size_t)(nnames ? nnames : 1), sizeof *res);
    int rc = 0;
    if (!fmts || !res) {
        fprintf(stderr, "kvant formats: error: out of memory\n");
        rc = 1;
    }
    for (int i = 0; rc == 0 && i < nnames; i++)
        if (kv_format_get(names[i], &fmts[i], &err) != KV_OK) {
            rc = kv_cli_fail(cmd, &err);
            if (err.status == KV_ENOTFOUND) rc = 2;
        }
    kv_pool *pool = rc ? NULL : kv_pool_create((int)threads);
    kv_format_samples samples = {0};
    if (rc == 0 && kv_format_samples_make(nsamples, (uint64_t)seed, pool, &samples, &err) != KV_OK)
        rc = kv_cli_fail(cmd, &err);
    int nres = 0;
    if (rc == 0) {
        kv_progress prog;
        kv_progress_begin(&prog, "formats", nnames, quiet);
        for (int i = 0; i < nnames && rc == 0; i++) {
            snprintf(res[nres].name, sizeof res[nres].name, "%s", fmts[i].name);
            res[nres].block = fmts[i].block;
            kv_status st = kv_formats_measure(&fmts[i], &samples, pool, &res[nres].m, &err);
            if (st == KV_EUNSUPPORTED) { /* block does not divide the sample rows: skip with a note */
                if (!quiet) fprintf(stderr, "kvant formats: skipping %s: %s\n", fmts[i].name, err.message);
                kv_error_clear(&err);
            } else if (st != KV_OK) rc = kv_cli_fail(cmd, &err);
            else nres++;
            kv_progress_update(&prog, i + 1);
        }
        kv_progress_end(&prog);
    }
    if (rc == 0) {
        if (json) print_json(res, nres, samples.nrows * KV_FMT_SAMPLE_ROW, (uint64_t)seed);
        else print_table(res, nres, samples.nrows * KV_FMT_SAMPLE_ROW);
        for (int k = 0; k < nplots && rc == 0; k++)
            if (plot_formats(plots[k], res, nres, &err) != KV_OK) rc = kv_cli_fail(cmd, &err);
    }
    kv_format_samples_free(&samples);
    kv_pool_destroy(pool);
    free(fmts);
    free(res);
    free(names);
    return rc;
}
