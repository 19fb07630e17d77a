/* pool.c — a small fixed thread pool. Tasks are handed out by an atomic counter; which thread runs a task
 * never changes its result, so outputs are identical for every thread count.
 * Decode runs ~50 short jobs per token (tens of microseconds each), so a condition-variable wake-up per job
 * would cost as much as the job: workers spin on the job counter for a while (PAUSE between polls) and only
 * then sleep on the condition variable, and the caller spins for the end of a job (the scheme of ggml's
 * threadpool polling). Idle workers sleep, so a pool costs nothing between bursts of work. */
#include "core.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

/* Polls before a waiting worker sleeps: with PAUSE ~40-140 cycles, some 0.1-0.3 ms. */
enum { SPIN_POLLS = 1 << 12, YIELD_AFTER = 1 << 14 };

struct kv_pool {
    int nthreads;              /* including the caller */
    pthread_t *workers;
    pthread_mutex_t mu;
    pthread_cond_t start_cv;
    atomic_uint_fast64_t generation; /* bumped per job */
    atomic_int shutdown;
    atomic_int sleepers;       /* workers blocked (or about to block) on start_cv */
    atomic_int pending;        /* workers still inside the current job */
    kv_task_fn fn;
    void *ctx;
    int64_t ntasks;
    atomic_llong next;
};

typedef struct { kv_pool *pool; int index; } worker_arg;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void run_tasks(kv_pool *p, int thread) {
    for (;;) {
        int64_t t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (t >= p->ntasks) break;
        p->fn(p->ctx, t, thread);
    }
}

/* Waits until the generation differs from seen (or shutdown); returns the new generation. */
static uint64_t wait_job(kv_pool *p, uint64_t seen) {
    for (int spins = 0; spins < SPIN_POLLS; spins++) {
        const uint64_t g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g != seen || atomic_load_explicit(&p->shutdown, memory_order_relaxed)) return g;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1); /* seq_cst: pairs with the submitter's generation bump */
    uint64_t g;
    while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->shutdown))
        pthread_cond_wait(&p->start_cv, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *arg) {
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    kv_pool *p = wa.pool;
    uint64_t seen = 0;
    for (;;) {
        seen = wait_job(p, seen);
        if (atomic_load(&p->shutdown)) break;
        run_tasks(p, wa.index);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
    return NULL;
}

kv_pool *kv_pool_create(int nthreads) {
    if (nthreads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = n > 0 ? (int)n : 1;
    }
    if (nthreads > 256) nthreads = 256;
    kv_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->nthreads = nthreads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start_cv, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->shutdown, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->next, 0);
    if (nthreads > 1) {
        p->workers = calloc((size_t)nthreads - 1, sizeof *p->workers);
        if (!p->workers) { free(p); return NULL; }
        for (int i = 0; i < nthreads - 1; i++) {
            worker_arg *wa = malloc(sizeof *wa);
            if (!wa) { p->nthreads = i + 1; break; }
            wa->pool = p;
            wa->index = i + 1;
            if (pthread_create(&p->workers[i], NULL, worker_main, wa) != 0) {
                free(wa);
                p->nthreads = i + 1;
                break;
            }
        }
    }
    return p;
}

static void wake_sleepers(kv_pool *p) {
    if (atomic_load(&p->sleepers) == 0) return;
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);
}

void kv_pool_destroy(kv_pool *p) {
    if (!p) return;
    atomic_store(&p->shutdown, 1);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads - 1; i++) pthread_join(p->workers[i], NULL);
    free(p->workers);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start_cv);
    free(p);
}

int kv_pool_threads(const kv_pool *p) { return p ? p->nthreads : 1; }

void kv_pool_run(kv_pool *p, int64_t ntasks, kv_task_fn fn, void *ctx) {
    if (ntasks <= 0) return;
    if (!p || p->nthreads == 1 || ntasks == 1) {
        for (int64_t t = 0; t < ntasks; t++) fn(ctx, t, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->pending, p->nthreads - 1, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1); /* seq_cst: publishes the job, then sleepers is read */
    wake_sleepers(p);
    run_tasks(p, 0);
    /* the workers' last tasks: spin, yielding the core if a worker was descheduled */
    for (int spins = 0; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; spins++) {
        if (spins < YIELD_AFTER) cpu_relax();
        else sched_yield();
    }
}
