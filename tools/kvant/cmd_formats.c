/* cmd_formats.c — `kvant formats`: every number format's bits/weight and error on synthetic Gaussian and
 * Student-t data (with and without a random Hadamard rotation) against the Gaussian rate-distortion bound
 * (issue #5, "kvant formats"); --plot draws MSE versus bits/weight with the Shannon bound as SVG.
 * `kvant formats quantize|dequantize` are the raw-row tools of tools/kvant/cmd_formats_io.c. */
#include "cli.h"
#include "formats_io.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: kvant formats [--json] [--plot FILE.svg] [--formats F1,F2,...] [--samples N] [--seed S]\n"
            "                     [-t N] [--quiet]\n"
            "       kvant formats quantize --format F --row N --in X.f32 --out Y.bin [--importance W.f32]\n"
            "       kvant formats dequantize --format F --row N --in Y.bin --out Z.f32\n\n"
            "Lists every number format with its bits/weight (scales included) and its MSE and SNR on N iid\n"
            "N(0,1) samples and on Student-t (nu = 5) samples, each with and without a random Hadamard rotation\n"
            "(blocks of 256), and the gap in bits to the Gaussian rate-distortion bound D(R) = sigma^2 2^(-2R).\n\n"
            "  --json             {\"formats\": [{\"name\", \"bits_per_weight\", \"block\", \"mse_gauss\", ...}]}\n"
            "  --plot FILE.svg    MSE versus bits/weight (log scale) with the Shannon bound\n"
            "  --formats LIST     comma-separated format names (default: the canonical list)\n"
            "  --samples N        samples per data set (default 1048576)\n"
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
/* SVG plot                                                                                                   */

static kv_status plot_svg(const char *path, const row_result *res, int nres, kv_error *err) {
    const double W = 900, H = 600, L = 80, R = 30, T = 40, B = 60, xmax = 10.0;
    double ymin = INFINITY, ymax = 1.0;
    for (int i = 0; i < nres; i++) {
        double y = res[i].m.mse[KV_FMT_GAUSS];
        if (y > 0 && res[i].m.bits_per_weight <= xmax) ymin = fmin(ymin, y);
    }
    if (!isfinite(ymin)) ymin = 1e-6;
    double ly0 = floor(log10(ymin)), ly1 = ceil(log10(ymax)) + 0.0;
    if (ly1 <= ly0) ly1 = ly0 + 1;
#define PX(x) (L + (x) / xmax * (W - L - R))
#define PY(y) (T + (ly1 - log10(y)) / (ly1 - ly0) * (H - T - B))
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    if (!buf) return kv_fail(err, KV_ENOMEM, "out of memory");
#define OUT(...) do { if (len < cap) len += (size_t)snprintf(buf + len, cap - len, __VA_ARGS__); } while (0)
    OUT("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
        "font-size=\"11\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
    OUT("<text x=\"%.0f\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">kvant formats: MSE on N(0,1) vs "
        "bits/weight</text>\n", W / 2);
    for (int d = (int)ly0; d <= (int)ly1; d++) {
        OUT("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, PY(pow(10, d)), W - R,
            PY(pow(10, d)));
        OUT("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">1e%d</text>\n", L - 6, PY(pow(10, d)) + 4, d);
    }
    for (int x = 0; x <= (int)xmax; x++) {
        OUT("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", PX(x), T, PX(x), H - B);
        OUT("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%d</text>\n", PX(x), H - B + 16, x);
    }
    OUT("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"black\"/>\n", L, T,
        W - L - R, H - T - B);
    OUT("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">bits per weight (scales included)</text>\n",
        (L + W - R) / 2, H - 20);
    OUT("<text x=\"18\" y=\"%.1f\" transform=\"rotate(-90 18 %.1f)\" text-anchor=\"middle\">MSE (log)</text>\n",
        (T + H - B) / 2, (T + H - B) / 2);
    /* Shannon bound D(R) = 2^(-2R) for unit variance, clipped to the plot */
    OUT("<polyline fill=\"none\" stroke=\"#c00\" stroke-width=\"1.5\" points=\"");
    for (int k = 0; k <= 200; k++) {
        double x = xmax * k / 200.0, y = exp2(-2.0 * x);
        if (log10(y) < ly0) break;
        OUT("%.1f,%.1f ", PX(x), PY(y));
    }
    OUT("\"/>\n<text x=\"%.1f\" y=\"%.1f\" fill=\"#c00\">Shannon bound 2^(-2R)</text>\n", PX(0.3), PY(0.8));
    for (int i = 0; i < nres; i++) {
        double x = res[i].m.bits_per_weight, y = res[i].m.mse[KV_FMT_GAUSS];
        if (!(y > 0) || x > xmax || log10(y) < ly0 || log10(y) > ly1) continue;
        OUT("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#06c\"/>", PX(x), PY(y));
        OUT("<text x=\"%.1f\" y=\"%.1f\" font-size=\"8\" fill=\"#333\">%s</text>\n", PX(x) + 4, PY(y) - 3,
            res[i].name);
    }
    OUT("</svg>\n");
#undef OUT
#undef PX
#undef PY
    kv_status st = KV_OK;
    if (len >= cap) st = kv_fail(err, KV_ERANGE, "plot too large");
    kv_outfile *f = NULL;
    if (st == KV_OK) st = kv_outfile_open(path, &f, err);
    if (st == KV_OK) {
        st = kv_outfile_write(f, buf, len, err);
        if (st == KV_OK) st = kv_outfile_commit(f, err);
        else kv_outfile_abort(f);
    }
    free(buf);
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
    const char *plot = NULL, *val = NULL;
    char *list = NULL;
    long long nsamples = 1 << 20, seed = 1, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (kv_cli_flag(argv, i, "--json", NULL)) json = 1;
        else if (kv_cli_flag(argv, i, "--quiet", "-q")) quiet = 1;
        else if (kv_cli_opt(argc, argv, &i, "--plot", NULL, &val)) {
            if (!val) return kv_cli_usage(cmd, "--plot needs a file name");
            size_t l = strlen(val);
            if (l < 4 || strcmp(val + l - 4, ".svg"))
                return kv_cli_usage(cmd, "--plot writes SVG only: give a FILE.svg (PNG is not supported)");
            plot = val;
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
        if (plot && plot_svg(plot, res, nres, &err) != KV_OK) rc = kv_cli_fail(cmd, &err);
    }
    kv_format_samples_free(&samples);
    kv_pool_destroy(pool);
    free(fmts);
    free(res);
    free(names);
    return rc;
}
