/* cli_output.c — the outputs of a kvant run: checked before any work starts, and their temporary files removed
 * when the run is interrupted (SIGINT, SIGTERM, SIGHUP, SIGPIPE). The library writes every output through
 * kv_outfile ("PATH.tmp.<pid>", renamed on success); the handler unlinks the registered temp names, which were
 * computed at registration so that it only calls unlink, then re-raises the signal with its default action.
 * SIGXFSZ is ignored so that a file-size limit surfaces as the write error "File too large" with its file name.
 * The registry is the CLI's one piece of process-wide state: a signal handler cannot be given a context. */
#include "cli.h"
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_OUTPUTS 16

static char g_temps[MAX_OUTPUTS][1100];
static volatile sig_atomic_t g_n_temps;

static void on_fatal_signal(int sig) {
    for (sig_atomic_t i = 0; i < g_n_temps; i++) unlink(g_temps[i]);
    /* SA_RESETHAND restored the default action; the signal is blocked until we return, then it kills us */
    raise(sig);
}

void kv_cli_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&sa.sa_mask, sigs[i]);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction old;
        /* keep a signal the caller ignores ignored (nohup, a shell's background job) */
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue;
        sigaction(sigs[i], &sa, NULL);
    }
    signal(SIGXFSZ, SIG_IGN);
}

void kv_cli_track_output(const char *path) {
    if (!path || g_n_temps >= MAX_OUTPUTS) return;
    kv_outfile_temp_name(path, g_temps[g_n_temps], sizeof g_temps[0]);
    for (sig_atomic_t i = 0; i < g_n_temps; i++)
        if (!strcmp(g_temps[i], g_temps[g_n_temps])) return;
    g_n_temps = g_n_temps + 1; /* published after the name is complete */
}

int kv_cli_prepare_output(const char *cmd, const char *path) {
    if (!path) return 0;
    kv_cli_track_output(path);
    kv_error err;
    kv_error_clear(&err);
    if (kv_outfile_check(path, &err) != KV_OK) return kv_cli_fail(cmd, &err);
    return 0;
}
