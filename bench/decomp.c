/* bench/decomp: gbtd's decompositions against TensorLy 0.9 (NumPy backend) on identical inputs,
 * measured in this run with the same thread count.
 *
 * Cases (inputs written to .npy files that both sides read):
 *   hooi     100x100x100, Tucker ranks (10,10,10), planted Tucker + 10 % noise;
 *   cp       100x100x100, CP rank 10, planted CP + 10 % noise;
 *   tucker2  3x3x256x1024 kernel, partial Tucker on modes 2,3 with ranks (64,256), planted
 *            + 30 % noise;
 *   btd      3x3x512x2048 kernel, R = 32 terms of rank (4,4) on modes 2,3 (no TensorLy
 *            counterpart): seconds per iteration of each solver and the fraction of the dgemm
 *            rate measured in this run (flops of an iteration from gbtd_btd_iteration_flops).
 * Time to the same error: TensorLy runs with its defaults (HOSVD start for Tucker, random start
 * and tol 1e-8 for CP); gbtd stops as soon as its error is at or below TensorLy's final error
 * (a callback watches the error), and the ratio is TensorLy's time over gbtd's. Errors are
 * recomputed explicitly on both sides before timing is reported. Times: min and median of
 * --reps runs (after a warm-up). TensorLy and gbtd runs alternate, one of each per round (a
 * persistent helper process, bench/decomp_tensorly.py --serve, answers one run per request),
 * so that on a shared machine both sides see the same load. The last line is one JSON object
 * with every figure.
 *
 * usage: decomp [--reps N] [--threads T] [--python PATH] [--script PATH] [--no-tensorly]
 *               [--no-btd] [--small] */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/blas.h"
#include "gbtd.h"

#ifndef DECOMP_PYTHON
#define DECOMP_PYTHON "python3"
#endif
#ifndef DECOMP_SCRIPT
#define DECOMP_SCRIPT "bench/decomp_tensorly.py"
#endif

typedef struct stop_ctx {
    double target;
} stop_ctx;

static int stop_at(int iter, double e, double t, void *ctx)
{
    (void)iter;
    (void)t;
    const stop_ctx *s = ctx;
    return s->target > 0.0 && e <= s->target;
}

static int cmp_d(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench/decomp: %s: %s (%s)\n", what, gbtd_strerror(rc), gbtd_last_error());
    exit(1);
}

/* X = core x_k U_k (+ noise): planted Tucker with N(0,1) entries, modes listed. */
static void planted_tucker(gbtd_rng *rng, int nd, const int64_t *shape, int nm, const int *modes,
                           const int64_t *ranks, double noise, gbtd_tensor *x)
{
    int64_t cs[GBTD_MAX_MODES];
    memcpy(cs, shape, sizeof(int64_t) * (size_t)nd);
    for (int k = 0; k < nm; k++) cs[modes[k]] = ranks[k];
    gbtd_tensor g, u[GBTD_MAX_MODES], n;
    const gbtd_tensor *up[GBTD_MAX_MODES];
    gbtd_tensor_alloc(&g, nd, cs);
    gbtd_tensor_fill_normal(&g, rng, 0.0, 1.0);
    for (int k = 0; k < nm; k++) {
        gbtd_matrix_alloc(&u[k], shape[modes[k]], ranks[k]);
        gbtd_tensor_fill_normal(&u[k], rng, 0.0, 1.0);
        up[k] = &u[k];
    }
    int rc = gbtd_multi_ttm_alloc(&g, up, modes, nm, GBTD_NOTRANS, x);
    if (rc) die("planted tucker", rc);
    gbtd_tensor_alloc_like(&n, x);
    gbtd_tensor_fill_normal(&n, rng, 0.0, 1.0);
    gbtd_tensor_axpy(noise * gbtd_tensor_norm(x) / gbtd_tensor_norm(&n), &n, x);
    gbtd_tensor_free(&n);
    gbtd_tensor_free(&g);
    for (int k = 0; k < nm; k++) gbtd_tensor_free(&u[k]);
}

static void planted_cp(gbtd_rng *rng, int nd, const int64_t *shape, int64_t r, double noise,
                       gbtd_tensor *x)
{
    gbtd_cp m;
    gbtd_cp_alloc(&m, nd, shape, r);
    for (int k = 0; k < nd; k++) gbtd_tensor_fill_normal(&m.factors[k], rng, 0.0, 1.0);
    gbtd_cp_reconstruct_alloc(&m, x);
    gbtd_tensor n;
    gbtd_tensor_alloc_like(&n, x);
    gbtd_tensor_fill_normal(&n, rng, 0.0, 1.0);
    gbtd_tensor_axpy(noise * gbtd_tensor_norm(x) / gbtd_tensor_norm(&n), &n, x);
    gbtd_tensor_free(&n);
    gbtd_cp_free(&m);
}

typedef struct tl_result {
    double min_s, med_s, err;
    int iters;
    int ok;
} tl_result;

/* The TensorLy helper as a persistent process: requests on its stdin, answers on its stdout. */
typedef struct tl_server {
    FILE *to, *from;
    pid_t pid;
} tl_server;

static int tl_start(tl_server *srv, const char *python, const char *script, int threads)
{
    int in[2], out[2];
    memset(srv, 0, sizeof *srv);
    if (pipe(in) != 0) return 0;
    if (pipe(out) != 0) {
        close(in[0]);
        close(in[1]);
        return 0;
    }
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "OPENBLAS_NUM_THREADS=%d OMP_NUM_THREADS=%d exec %s %s --serve",
             threads, threads, python, script);
    const pid_t pid = fork();
    if (pid < 0) {
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        return 0;
    }
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    srv->to = fdopen(in[1], "w");
    srv->from = fdopen(out[0], "r");
    srv->pid = pid;
    return srv->to != NULL && srv->from != NULL;
}

static void tl_stop(tl_server *srv)
{
    if (srv->to) fclose(srv->to); /* EOF ends the helper's loop */
    if (srv->from) fclose(srv->from);
    if (srv->pid > 0) waitpid(srv->pid, NULL, 0);
    memset(srv, 0, sizeof *srv);
}

/* One TensorLy run of `casespec`: seconds, iterations and explicit error; 0 on failure. */
static int tl_once(tl_server *srv, const char *casespec, double *sec, int *iters, double *err)
{
    if (!srv->to || !srv->from) return 0;
    if (fprintf(srv->to, "%s\n", casespec) < 0 || fflush(srv->to) != 0) return 0;
    char line[4096];
    if (!fgets(line, sizeof line, srv->from)) return 0;
    const char *a = strstr(line, "\"s\": "), *c = strstr(line, "\"iterations\": "),
               *d = strstr(line, "\"rel_error\": ");
    if (!a || !c || !d) return 0;
    *sec = atof(a + 5);
    *iters = atoi(c + 14);
    *err = atof(d + 13);
    return 1;
}

typedef struct g_result {
    double min_s, med_s, err, explicit_err;
    int iters;
} g_result;

enum kind { K_HOOI, K_CP, K_PARTIAL };

/* One gbtd run that stops at or below `target` (0: its own stopping rule); returns seconds.
 * With explicit_err non-NULL the error is also recomputed from the reconstruction. */
static double run_gbtd_once(enum kind kind, const gbtd_tensor *x, int nm, const int *modes,
                            const int64_t *ranks, double target, double *err, int *iters,
                            double *explicit_err)
{
    stop_ctx sc = {target};
    gbtd_decomp_info info;
    gbtd_decomp_info_init(&info);
    gbtd_tensor xh = {0};
    const double t0 = gbtd_wall_time();
    double dt;
    int rc;
    if (kind == K_CP) {
        gbtd_cp m = {0};
        gbtd_cp_opts o = gbtd_cp_opts_default();
        o.callback = stop_at;
        o.callback_ctx = &sc;
        o.max_iter = 1000;
        rc = gbtd_cp_als(x, ranks[0], &m, &o, &info);
        dt = gbtd_wall_time() - t0;
        if (rc) die("cp_als", rc);
        if (explicit_err) gbtd_cp_relative_error(x, &m, explicit_err);
        gbtd_cp_free(&m);
    } else {
        gbtd_tucker m = {0};
        gbtd_tucker_opts o = gbtd_tucker_opts_default();
        o.callback = stop_at;
        o.callback_ctx = &sc;
        rc = gbtd_tucker_partial_hooi(x, modes, nm, ranks, &m, &o, &info);
        dt = gbtd_wall_time() - t0;
        if (rc) die("tucker", rc);
        if (explicit_err) {
            gbtd_tucker_reconstruct_alloc(&m, &xh);
            gbtd_relative_error(x, &xh, explicit_err);
            gbtd_tensor_free(&xh);
        }
        gbtd_tucker_free(&m);
    }
    *err = info.rel_error;
    *iters = info.iterations;
    gbtd_decomp_info_free(&info);
    return dt;
}

/* dgemm rate of this machine, this run: C (m x n) += A (m x k) B (k x n), best of 3. */
static double dgemm_gflops(int64_t m, int64_t n, int64_t k)
{
    double *a = calloc((size_t)(m * k), sizeof(double)), *b = calloc((size_t)(k * n), sizeof(double));
    double *c = calloc((size_t)(m * n), sizeof(double));
    for (int64_t i = 0; i < m * k; i++) a[i] = (double)(i % 7) * 0.1;
    for (int64_t i = 0; i < k * n; i++) b[i] = (double)(i % 5) * 0.1;
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        const double t0 = gbtd_wall_time();
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)n, (blasint)k,
                    1.0, a, (blasint)k, b, (blasint)n, 0.0, c, (blasint)n);
        const double dt = gbtd_wall_time() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * (double)m * (double)n * (double)k / best * 1e-9;
}

int main(int argc, char **argv)
{
    int reps = 3, threads = 1, use_tl = 1, use_btd = 1, small = 0;
    const char *python = DECOMP_PYTHON, *script = DECOMP_SCRIPT;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--python") && i + 1 < argc) python = argv[++i];
        else if (!strcmp(argv[i], "--script") && i + 1 < argc) script = argv[++i];
        else if (!strcmp(argv[i], "--no-tensorly")) use_tl = 0;
        else if (!strcmp(argv[i], "--no-btd")) use_btd = 0;
        else if (!strcmp(argv[i], "--small")) small = 1;
        else {
            fprintf(stderr, "usage: decomp [--reps N] [--threads T] [--python P] [--script S] "
                            "[--no-tensorly] [--no-btd] [--small]\n");
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (reps > 63) reps = 63;
    gbtd_set_threads(threads);
    signal(SIGPIPE, SIG_IGN); /* a helper that died shows as a failed request, not a crash */
    tl_server tl = {0};
    if (use_tl && !tl_start(&tl, python, script, threads))
        fprintf(stderr, "bench/decomp: could not start the TensorLy helper\n");
    gbtd_rng *rng;
    gbtd_rng_alloc(42, &rng);
    char dir[] = "/tmp/gbtd_bench_decomp_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }

    struct {
        const char *name;
        enum kind kind;
        int nd;
        int64_t shape[4];
        int nm;
        int modes[4];
        int64_t ranks[4];
        double noise;
    } cases[3] = {
        {"hooi_100^3_r10", K_HOOI, 3, {100, 100, 100}, 3, {0, 1, 2}, {10, 10, 10}, 0.1},
        {"cp_100^3_r10", K_CP, 3, {100, 100, 100}, 1, {0}, {10}, 0.1},
        {"tucker2_3x3x256x1024_r64,256", K_PARTIAL, 4, {3, 3, 256, 1024}, 2, {2, 3}, {64, 256}, 0.3},
    };
    if (small) {
        cases[0].shape[0] = cases[0].shape[1] = cases[0].shape[2] = 40;
        cases[1].shape[0] = cases[1].shape[1] = cases[1].shape[2] = 40;
        cases[2].shape[2] = 64;
        cases[2].shape[3] = 128;
        cases[2].ranks[0] = 16;
        cases[2].ranks[1] = 32;
    }
    printf("%-30s %10s %10s %10s %10s %6s %6s %8s\n", "case", "tl_err", "gbtd_err", "tl_s",
           "gbtd_s", "tl_it", "g_it", "speedup");
    char json[8192];
    size_t jl = (size_t)snprintf(json, sizeof json, "{\"bench\":\"decomp\",\"threads\":%d,\"reps\":%d,\"cases\":[",
                                 threads, reps);
    for (int c = 0; c < 3; c++) {
        gbtd_tensor x;
        if (cases[c].kind == K_CP)
            planted_cp(rng, cases[c].nd, cases[c].shape, cases[c].ranks[0], cases[c].noise, &x);
        else
            planted_tucker(rng, cases[c].nd, cases[c].shape, cases[c].nm, cases[c].modes,
                           cases[c].ranks, cases[c].noise, &x);
        char path[256], spec[512];
        snprintf(path, sizeof path, "%s/case%d.npy", dir, c);
        int rc = gbtd_npy_save(path, &x, GBTD_DTYPE_F64);
        if (rc) die("npy_save", rc);
        if (cases[c].kind == K_HOOI)
            snprintf(spec, sizeof spec, "tucker:%s:%lld,%lld,%lld", path,
                     (long long)cases[c].ranks[0], (long long)cases[c].ranks[1],
                     (long long)cases[c].ranks[2]);
        else if (cases[c].kind == K_CP)
            snprintf(spec, sizeof spec, "cp:%s:%lld", path, (long long)cases[c].ranks[0]);
        else
            snprintf(spec, sizeof spec, "partial:%s:%d,%d:%lld,%lld", path, cases[c].modes[0],
                     cases[c].modes[1], (long long)cases[c].ranks[0], (long long)cases[c].ranks[1]);
        /* Rounds of one TensorLy run then one gbtd run; round 0 warms both up (and gives
         * TensorLy's error, at or below which gbtd stops: rounding slack 1e-12 relative). */
        tl_result t = {0, 0, 0, 0, 0};
        g_result g = {0, 0, 0, 0, 0};
        double tt[64], gt[64];
        t.ok = use_tl && tl.to != NULL;
        for (int rep = 0; rep <= reps; rep++) {
            if (t.ok) t.ok = tl_once(&tl, spec, &tt[rep], &t.iters, &t.err);
            const double target = t.ok ? t.err * (1.0 + 1e-12) : 0.0;
            gt[rep] = run_gbtd_once(cases[c].kind, &x, cases[c].nm, cases[c].modes,
                                    cases[c].ranks, target, &g.err, &g.iters,
                                    rep == 0 ? &g.explicit_err : NULL);
        }
        qsort(gt + 1, (size_t)reps, sizeof(double), cmp_d);
        g.min_s = gt[1];
        g.med_s = gt[1 + reps / 2];
        if (t.ok) {
            qsort(tt + 1, (size_t)reps, sizeof(double), cmp_d);
            t.min_s = tt[1];
            t.med_s = tt[1 + reps / 2];
        }
        const double target = t.ok ? t.err * (1.0 + 1e-12) : 0.0;
        const int valid = fabs(g.explicit_err - g.err) <= 1e-8 * fmax(g.err, 1e-6);
        const double speed = t.ok && g.min_s > 0 ? t.min_s / g.min_s : 0.0;
        printf("%-30s %10.6f %10.6f %10.4f %10.4f %6d %6d %7.2fx%s%s\n", cases[c].name, t.err,
               g.err, t.min_s, g.min_s, t.iters, g.iters, speed,
               (t.ok && g.err > target) ? "  (gbtd did not reach TensorLy's error)" : "",
               valid ? "" : "  (INVALID: reported error != explicit)");
        jl += (size_t)snprintf(json + jl, sizeof json - jl,
                               "%s{\"case\":\"%s\",\"tensorly_error\":%.10g,\"gbtd_error\":%.10g,"
                               "\"tensorly_s_min\":%.6g,\"tensorly_s_median\":%.6g,"
                               "\"gbtd_s_min\":%.6g,\"gbtd_s_median\":%.6g,\"tensorly_iters\":%d,"
                               "\"gbtd_iters\":%d,\"speedup\":%.4g,\"valid\":%s}",
                               c ? "," : "", cases[c].name, t.err, g.err, t.min_s, t.med_s,
                               g.min_s, g.med_s, t.iters, g.iters, speed, valid ? "true" : "false");
        fflush(stdout);
        remove(path);
        gbtd_tensor_free(&x);
    }
    jl += (size_t)snprintf(json + jl, sizeof json - jl, "]");
    tl_stop(&tl);

    if (use_btd) {
        const double peak = dgemm_gflops(1024, 1024, 1024);
        int64_t shape[4] = {3, 3, 512, 2048};
        int nterms = 32;
        if (small) {
            shape[2] = 64;
            shape[3] = 128;
            nterms = 8;
        }
        const int modes[2] = {2, 3};
        int64_t *ranks = malloc(sizeof(int64_t) * 2 * (size_t)nterms);
        for (int r = 0; r < 2 * nterms; r++) ranks[r] = 4;
        gbtd_btd truth;
        int rc = gbtd_btd_alloc(&truth, 4, shape, 2, modes, nterms, ranks);
        if (rc) die("btd_alloc", rc);
        gbtd_btd_fill_normal(&truth, rng);
        gbtd_tensor x;
        rc = gbtd_btd_reconstruct_alloc(&truth, &x);
        if (rc) die("btd_reconstruct", rc);
        jl += (size_t)snprintf(json + jl, sizeof json - jl, ",\"dgemm_gflops\":%.4g,\"btd\":[", peak);
        printf("\nBTD %lldx%lldx%lldx%lld, R = %d terms of rank (4,4); dgemm %.2f GFLOP/s\n",
               (long long)shape[0], (long long)shape[1], (long long)shape[2],
               (long long)shape[3], nterms, peak);
        printf("%-6s %12s %12s %10s %12s\n", "solver", "s/iter", "GFLOP/iter", "GFLOP/s", "of dgemm");
        for (int s = 0; s < 2; s++) {
            gbtd_btd_opts o = gbtd_btd_opts_default();
            o.solver = s == 0 ? GBTD_BTD_ALS : GBTD_BTD_NLS;
            o.compress = GBTD_BTD_COMPRESS_OFF;
            /* A random start and no error or change tolerance, so that every one of the
             * iterations is timed: the default algebraic (GEVD) start solves this exact planted
             * problem by itself and the run would stop on error_tol after a step or two. */
            o.init = GBTD_BTD_INIT_RANDOM;
            o.error_tol = 0.0;
            o.max_iter = 3;
            o.tol = 0.0;
            gbtd_btd m;
            gbtd_decomp_info info;
            gbtd_decomp_info_init(&info);
            rc = gbtd_btd_decompose(&x, 2, modes, nterms, ranks, &m, &info, &o);
            if (rc) die("btd_decompose", rc);
            const double per = info.iterations > 0 ? info.time_iterate / info.iterations : 0.0;
            const double fl = gbtd_btd_iteration_flops(&m, o.solver) * 1e-9;
            const double rate = per > 0 ? fl / per : 0.0;
            printf("%-6s %12.4f %12.3f %10.2f %11.1f%%\n", s == 0 ? "als" : "nls", per, fl, rate,
                   100.0 * rate / peak);
            jl += (size_t)snprintf(json + jl, sizeof json - jl,
                                   "%s{\"solver\":\"%s\",\"s_per_iter\":%.6g,\"gflop_per_iter\":%.6g,"
                                   "\"gflops\":%.4g,\"fraction_of_dgemm\":%.4g,\"iterations\":%d}",
                                   s ? "," : "", s == 0 ? "als" : "nls", per, fl, rate, rate / peak,
                                   info.iterations);
            gbtd_btd_free(&m);
            gbtd_decomp_info_free(&info);
        }
        jl += (size_t)snprintf(json + jl, sizeof json - jl, "]");
        gbtd_tensor_free(&x);
        gbtd_btd_free(&truth);
        free(ranks);
    }
    snprintf(json + jl, sizeof json - jl, "}");
    rmdir(dir);
    gbtd_rng_free(rng);
    printf("%s\n", json);
    return 0;
}
