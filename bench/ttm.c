/* bench/ttm: the mode-n product Y = X x_n U (U is J x I_n) against one OpenBLAS dgemm of the
 * same flop count and against NumPy doing the product the way TensorLy does (moveaxis +
 * reshape + matmul), all measured in this run, on 1 and 2 threads.
 *
 * Flops per product: 2 * J * prod(I) (J * prod(I) / I_n outputs, each a dot product of
 * length I_n). The dgemm reference is the mode-0 unfolding shape: (J x I_n) times
 * (I_n x prod(I) / I_n), run on the same buffers. Each figure is validated before it is timed
 * (sampled outputs against direct dot products); times are min and median of --reps runs
 * after a warm-up (gbtd and dgemm runs alternate); GFLOP/s and ratios use the minimum. Memory:
 * the most bytes the library allocated in one call (through its allocator hook: the last-mode
 * block workspace) and the peak RSS of this process; the helper reports NumPy's peak RSS.
 * The last line is one JSON object with every figure.
 *
 * usage: ttm [--reps N] [--threads 1,2] [--python PATH] [--script PATH] [--no-numpy] [--small] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "core/blas.h"
#include "linalg/linalg.h"

#ifndef TTM_PYTHON
#define TTM_PYTHON "python3"
#endif
#ifndef TTM_SCRIPT
#define TTM_SCRIPT "bench/ttm_numpy.py"
#endif

typedef struct {
    int nd;
    int64_t shape[4];
    int mode;
    int64_t j;
} bench_case;

static const bench_case all_cases[] = {
    {4, {3, 3, 512, 2048}, 2, 128},  {4, {3, 3, 512, 2048}, 3, 128},
    {3, {256, 256, 256}, 0, 256},    {3, {256, 256, 256}, 1, 256},
    {3, {256, 256, 256}, 2, 256},    {3, {256, 256, 256}, 0, 32},
    {3, {256, 256, 256}, 1, 32},     {3, {256, 256, 256}, 2, 32},
    {4, {3, 3, 1024, 6144}, 2, 128}, {4, {3, 3, 1024, 6144}, 3, 128},
};
enum { NCASES = sizeof all_cases / sizeof all_cases[0], MAXREPS = 101 };

typedef struct {
    double gbtd_min, gbtd_med, gemm_min, gemm_med, np_min, np_med;
    double flops;
    long long lib_bytes;
    double rss_mb;
} result;

/* ---- allocation counter (the library's extra memory) ---- */
static long long alloc_bytes = 0;
static void *count_alloc(size_t bytes, void *ctx)
{
    (void)ctx;
    void *p = NULL;
    alloc_bytes += (long long)bytes;
    return posix_memalign(&p, 64, bytes ? bytes : 64) ? NULL : p;
}
static void count_release(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void shape_text(const bench_case *c, char *buf, size_t len)
{
    size_t o = 0;
    for (int k = 0; k < c->nd; k++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", k ? "x" : "", (long long)c->shape[k]);
}

/* Validate Y = X x_n U on 200 sampled outputs against direct dot products, to the bound
 * 2 * I_n * eps * sum |u| |x| of two length-I_n dot products. */
static int validate(const gbtd_tensor *x, const gbtd_tensor *u, int mode, const gbtd_tensor *y,
                    gbtd_rng *rng)
{
    const int64_t in = x->shape[mode];
    for (int s = 0; s < 200; s++) {
        int64_t idx[GBTD_MAX_MODES];
        for (int k = 0; k < y->ndim; k++) idx[k] = (int64_t)gbtd_rng_uint(rng, (uint64_t)y->shape[k]);
        const int64_t j = idx[mode];
        double sum = 0, mag = 0;
        for (int64_t i = 0; i < in; i++) {
            idx[mode] = i;
            const double t = u->data[j * in + i] * *gbtd_tensor_ptr(x, idx);
            sum += t;
            mag += fabs(t);
        }
        idx[mode] = j;
        const double got = *gbtd_tensor_ptr(y, idx);
        if (!(fabs(got - sum) <= 2.0 * (double)in * 1.1102230246251565e-16 * 2 * mag)) return 0;
    }
    return 1;
}

/* Runs the NumPy helper for every case at `threads` threads; fills np_min/np_med (NAN when
 * missing). Returns the helper's peak RSS in MB, or -1. */
static double run_numpy(const char *python, const char *script, int threads, int reps,
                        const bench_case *cases, int ncases, result *res)
{
    char cmd[4096];
    size_t o = (size_t)snprintf(cmd, sizeof cmd,
                                "OPENBLAS_NUM_THREADS=%d OMP_NUM_THREADS=%d '%s' '%s' %d", threads,
                                threads, python, script, reps);
    for (int c = 0; c < ncases; c++) {
        char sh[64];
        shape_text(&cases[c], sh, sizeof sh);
        o += (size_t)snprintf(cmd + o, sizeof cmd - o, " %s:%d:%lld", sh, cases[c].mode,
                              (long long)cases[c].j);
    }
    for (int c = 0; c < ncases; c++) res[c].np_min = res[c].np_med = NAN;
    FILE *p = popen(cmd, "r");
    if (p == NULL) return -1;
    char line[1024];
    int c = 0;
    double rss = -1;
    while (fgets(line, sizeof line, p)) {
        const char *a = strstr(line, "\"min_s\": "), *b = strstr(line, "\"median_s\": ");
        const char *r = strstr(line, "\"peak_rss_mb\": ");
        if (a && b && c < ncases) {
            res[c].np_min = strtod(a + 9, NULL);
            res[c].np_med = strtod(b + 12, NULL);
            c++;
        } else if (r) {
            rss = strtod(r + 15, NULL);
        }
    }
    if (pclose(p) != 0 || c != ncases) {
        fprintf(stderr, "ttm: the NumPy helper failed (%s); NumPy columns left empty\n", cmd);
        return -1;
    }
    return rss;
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

int main(int argc, char **argv)
{
    int reps = 5, use_numpy = 1, small = 0, nthreads = 0, thread_list[8];
    const char *python = TTM_PYTHON, *script = TTM_SCRIPT, *threads_arg = "1,2";
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--reps") && a + 1 < argc) reps = atoi(argv[++a]);
        else if (!strcmp(argv[a], "--threads") && a + 1 < argc) threads_arg = argv[++a];
        else if (!strcmp(argv[a], "--python") && a + 1 < argc) python = argv[++a];
        else if (!strcmp(argv[a], "--script") && a + 1 < argc) script = argv[++a];
        else if (!strcmp(argv[a], "--no-numpy")) use_numpy = 0;
        else if (!strcmp(argv[a], "--small")) small = 1;
        else {
            fprintf(stderr, "usage: ttm [--reps N] [--threads 1,2] [--python PATH] [--script PATH] "
                            "[--no-numpy] [--small]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > MAXREPS) {
        fprintf(stderr, "ttm: --reps must be 1..%d\n", MAXREPS);
        return 2;
    }
    for (const char *s = threads_arg; *s && nthreads < 8;) {
        char *end;
        long t = strtol(s, &end, 10);
        if (end == s || t < 1 || t > 256) {
            fprintf(stderr, "ttm: bad --threads list '%s'\n", threads_arg);
            return 2;
        }
        thread_list[nthreads++] = (int)t;
        s = *end == ',' ? end + 1 : end;
    }
    const int ncases = small ? NCASES - 2 : NCASES;
    static const gbtd_allocator counter = {count_alloc, count_release, NULL};
    gbtd_set_allocator(&counter);
    gbtd_rng *rng;
    if (gbtd_rng_alloc(42, &rng) != GBTD_OK) return 1;
    static result res[8][NCASES];
    double np_rss[8];

    printf("bench/ttm: Y = X x_n U, U is J x I_n; flops 2*J*prod(I); min/median of %d runs\n", reps);
    printf("%-3s %-16s %-4s %-4s %9s %9s %8s %8s %7s %9s %8s %9s %8s\n", "thr", "shape", "mode",
           "J", "gbtd_ms", "gbtd_med", "GFLOP/s", "dgemm", "ratio", "numpy_ms", "np/gbtd",
           "lib_bytes", "rss_MB");
    for (int t = 0; t < nthreads; t++) {
        const int th = thread_list[t];
        np_rss[t] = use_numpy ? run_numpy(python, script, th, reps, all_cases, ncases, res[t]) : -1;
        if (!use_numpy)
            for (int c = 0; c < ncases; c++) res[t][c].np_min = res[t][c].np_med = NAN;
        gbtd_set_threads(th);
        gbtd_tensor x, u, y;
        memset(&x, 0, sizeof x);
        for (int c = 0; c < ncases; c++) {
            const bench_case *bc = &all_cases[c];
            result *r = &res[t][c];
            if (x.ndim != bc->nd || memcmp(x.shape, bc->shape, sizeof(int64_t) * (size_t)bc->nd)) {
                gbtd_tensor_free(&x);
                if (gbtd_tensor_alloc(&x, bc->nd, bc->shape) != GBTD_OK) {
                    fprintf(stderr, "ttm: %s\n", gbtd_last_error());
                    return 1;
                }
                gbtd_tensor_fill_uniform(&x, rng, -1.0, 1.0);
            }
            const int64_t in = bc->shape[bc->mode], numel = gbtd_tensor_numel(&x);
            gbtd_matrix_alloc(&u, bc->j, in);
            gbtd_tensor_fill_uniform(&u, rng, -1.0, 1.0);
            if (gbtd_ttm_alloc(&x, &u, bc->mode, GBTD_NOTRANS, &y) != GBTD_OK) {
                fprintf(stderr, "ttm: %s\n", gbtd_last_error());
                return 1;
            }
            if (!validate(&x, &u, bc->mode, &y, rng)) {
                fprintf(stderr, "ttm: validation failed on case %d\n", c);
                return 1;
            }
            /* Timed runs of gbtd and of the reference dgemm alternate, so that changes in the
             * machine's load hit both alike. The dgemm is one GEMM of the same flop count,
             * (J x I_n) (I_n x numel/I_n), on the same buffers (X read as that matrix). */
            double times[MAXREPS], gtimes[MAXREPS];
            const int rest = (int)(numel / in);
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)bc->j, rest, (int)in, 1.0,
                        u.data, (int)in, x.data, rest, 0.0, y.data, rest);
            long long lib_bytes = 0;
            for (int k = 0; k < reps; k++) {
                alloc_bytes = 0;
                double t0 = now();
                gbtd_ttm(&x, &u, bc->mode, GBTD_NOTRANS, &y);
                times[k] = now() - t0;
                if (alloc_bytes > lib_bytes) lib_bytes = alloc_bytes;
                t0 = now();
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)bc->j, rest, (int)in,
                            1.0, u.data, (int)in, x.data, rest, 0.0, y.data, rest);
                gtimes[k] = now() - t0;
            }
            r->lib_bytes = lib_bytes;
            qsort(times, (size_t)reps, sizeof(double), cmp_double);
            qsort(gtimes, (size_t)reps, sizeof(double), cmp_double);
            r->gbtd_min = times[0];
            r->gbtd_med = times[reps / 2];
            r->gemm_min = gtimes[0];
            r->gemm_med = gtimes[reps / 2];
            r->flops = 2.0 * (double)bc->j * (double)numel;
            r->rss_mb = peak_rss_mb();
            char sh[64];
            shape_text(bc, sh, sizeof sh);
            printf("%-3d %-16s %-4d %-4lld %9.2f %9.2f %8.2f %8.2f %7.3f %9.2f %8.2f %9lld %8.0f\n",
                   th, sh, bc->mode, (long long)bc->j, 1e3 * r->gbtd_min, 1e3 * r->gbtd_med,
                   r->flops / r->gbtd_min * 1e-9, r->flops / r->gemm_min * 1e-9,
                   r->gemm_min / r->gbtd_min, 1e3 * r->np_min, r->np_min / r->gbtd_min,
                   r->lib_bytes, r->rss_mb);
            fflush(stdout);
            gbtd_tensor_free(&y);
            gbtd_tensor_free(&u);
        }
        gbtd_tensor_free(&x);
    }
    /* One JSON object with every figure (NaN, when NumPy was skipped, written as null). */
    printf("{\"bench\":\"ttm\",\"reps\":%d,\"cases\":[", reps);
    for (int t = 0; t < nthreads; t++)
        for (int c = 0; c < ncases; c++) {
            const result *r = &res[t][c];
            char sh[64], npm[32], npd[32], npr[32];
            shape_text(&all_cases[c], sh, sizeof sh);
            if (isnan(r->np_min)) {
                strcpy(npm, "null");
                strcpy(npd, "null");
                strcpy(npr, "null");
            } else {
                snprintf(npm, sizeof npm, "%.6g", r->np_min);
                snprintf(npd, sizeof npd, "%.6g", r->np_med);
                snprintf(npr, sizeof npr, "%.4f", r->np_min / r->gbtd_min);
            }
            printf("%s{\"threads\":%d,\"shape\":\"%s\",\"mode\":%d,\"J\":%lld,\"flops\":%.0f,"
                   "\"gbtd_min_s\":%.6g,\"gbtd_median_s\":%.6g,\"gbtd_gflops\":%.3f,"
                   "\"dgemm_min_s\":%.6g,\"dgemm_median_s\":%.6g,\"dgemm_gflops\":%.3f,"
                   "\"ratio_gbtd_dgemm\":%.4f,\"numpy_min_s\":%s,\"numpy_median_s\":%s,"
                   "\"ratio_numpy_gbtd\":%s,\"lib_extra_bytes\":%lld,\"peak_rss_mb\":%.1f}",
                   t || c ? "," : "", thread_list[t], sh, all_cases[c].mode,
                   (long long)all_cases[c].j, r->flops, r->gbtd_min, r->gbtd_med,
                   r->flops / r->gbtd_min * 1e-9, r->gemm_min, r->gemm_med,
                   r->flops / r->gemm_min * 1e-9, r->gemm_min / r->gbtd_min, npm, npd, npr,
                   r->lib_bytes, r->rss_mb);
        }
    printf("],\"numpy_peak_rss_mb\":[");
    for (int t = 0; t < nthreads; t++) printf("%s%.1f", t ? "," : "", np_rss[t]);
    printf("]}\n");
    gbtd_rng_free(rng);
    return 0;
}
