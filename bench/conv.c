/* bench/conv: forward + backward (input and weight gradients) of 3x3 convolutions with 1 to 128
 * groups on 128 channels (14x14 and 28x28, batch 64), depthwise at stride 2 and with channel
 * multiplier 2, a 1x1 convolution, a dense CIFAR-size 3x3, and batch norm (+ ReLU) in training
 * mode, in gbtd and in PyTorch (bench/conv_torch.py, same thread count), in the same run.
 * Each case is validated against the reference kernel on a 2-image slice before it is timed.
 * Prints a table (min and median of REPS, GFLOP/s from 3 x 2 x MACs per step, time relative to
 * the dense case of the same map size, ratio PyTorch / gbtd), then one JSON line.
 *
 * usage: conv [--threads 1,2] [--reps N] [--rounds R] [--quick] [--no-torch] [--only TEXT]
 *             [--python PY] [--script PATH]   (--only keeps the cases whose label contains TEXT;
 *             R rounds of PyTorch-then-gbtd passes, best round per column, default 2) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/rng.h"
#include "core/status.h"
#include "nn/ops.h"

#ifndef CONV_PYTHON
#define CONV_PYTHON "python3"
#endif
#ifndef CONV_SCRIPT
#define CONV_SCRIPT "bench/conv_torch.py"
#endif

typedef struct bcase {
    const char *label;
    int64_t n, ci, h, w, co, k, s, p, g;
    int dense_ref;
    int bn; /* 0: convolution; 1: batch norm (n, ci, h, w); 2: batch norm + ReLU */ /* index of the dense case of the same map (for the "vs dense" column), -1 */
} bcase;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A JSON number, or null for NaN (a missing PyTorch time, no dense case). */
static const char *jnum(char *buf, double v)
{
    if (isnan(v)) return "null";
    snprintf(buf, 32, "%.4g", v);
    return buf;
}

static void fill(float *v, int64_t n, gbtd_rng *r)
{
    for (int64_t i = 0; i < n; i++) v[i] = (float)(2.0 * gbtd_rng_uniform(r) - 1.0);
}

static double rel_l2(const float *a, const float *ref, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / den);
}

/* Batch norm (+ ReLU) forward and backward of a 2-image slice against the reference. */
static double validate_bn(const bcase *c, gbtd_rng *r)
{
    const gbtd_bn_shape s = {2, c->ci, c->h * c->w};
    const int64_t nx = s.n * s.c * s.hw;
    float *x = malloc(4 * (size_t)nx), *dy = malloc(4 * (size_t)nx), *y = malloc(4 * (size_t)nx);
    float *yr = malloc(4 * (size_t)nx), *dx = calloc((size_t)nx, 4), *dxr = calloc((size_t)nx, 4);
    float *st = calloc(4 * (size_t)s.c, 4), *g = calloc(4 * (size_t)s.c, 4);
    fill(x, nx, r); fill(dy, nx, r); fill(g, 2 * s.c, r);
    float *mean = st, *rstd = st + s.c, *meanr = st + 2 * s.c, *rstdr = st + 3 * s.c;
    float *dg = g + 2 * s.c, *db = g + 3 * s.c;
    if (c->bn == 2) {
        gbtd_bn_relu_forward_train(&s, x, g, g + s.c, 1e-5f, 0.1f, NULL, NULL, mean, rstd, y);
        gbtd_bn_relu_backward(&s, x, g, mean, rstd, y, dy, dx, dg, db);
    } else {
        gbtd_bn_forward_train(&s, x, g, g + s.c, 1e-5f, 0.1f, NULL, NULL, mean, rstd, y);
        gbtd_bn_backward(&s, x, g, mean, rstd, dy, dx, dg, db);
    }
    gbtd_bn_forward_train_ref(&s, x, g, g + s.c, 1e-5f, 0.1f, NULL, NULL, meanr, rstdr, yr);
    if (c->bn == 2)
        for (int64_t i = 0; i < nx; i++) {
            yr[i] = yr[i] > 0.0f ? yr[i] : 0.0f;
            if (!(yr[i] > 0.0f)) dy[i] = 0.0f;
        }
    gbtd_bn_backward_ref(&s, x, g, meanr, rstdr, dy, dxr, NULL, NULL);
    const double e = fmax(rel_l2(y, yr, nx), rel_l2(dx, dxr, nx));
    free(x); free(dy); free(y); free(yr); free(dx); free(dxr); free(st); free(g);
    return e;
}

/* Forward and backward of a 2-image slice against the reference; returns max relative error. */
static double validate(const bcase *c, gbtd_rng *r)
{
    if (c->bn) return validate_bn(c, r);
    gbtd_conv2d_shape s = gbtd_conv2d_shape_make(2, c->ci, c->h, c->w, c->co, c->k, c->s, c->p, c->g);
    gbtd_conv2d_shape_init(&s);
    const int64_t nx = s.n * s.c_in * s.h * s.w, ny = s.n * s.c_out * s.h_out * s.w_out;
    const int64_t nw = gbtd_conv2d_weight_count(&s);
    const size_t wl = gbtd_conv2d_workspace_size(&s, 0);
    float *x = malloc(4 * (size_t)nx), *w = malloc(4 * (size_t)nw), *dy = malloc(4 * (size_t)ny);
    float *y = calloc((size_t)ny, 4), *yr = calloc((size_t)ny, 4), *dx = calloc((size_t)nx, 4);
    float *dxr = calloc((size_t)nx, 4), *dw = calloc((size_t)nw, 4), *dwr = calloc((size_t)nw, 4);
    float *ws = malloc(4 * (wl ? wl : 1));
    fill(x, nx, r); fill(w, nw, r); fill(dy, ny, r);
    gbtd_conv2d_forward(&s, x, w, NULL, y, ws, wl);
    gbtd_conv2d_backward(&s, x, w, dy, dx, dw, NULL, ws, wl);
    gbtd_conv2d_forward_ref(&s, x, w, NULL, yr);
    gbtd_conv2d_backward_ref(&s, x, w, dy, dxr, dwr, NULL);
    double num = 0, den = 0, e = 0;
    for (int64_t i = 0; i < ny; i++) { num += (y[i] - yr[i]) * (y[i] - yr[i]); den += yr[i] * yr[i]; }
    e = fmax(e, sqrt(num / den));
    num = den = 0;
    for (int64_t i = 0; i < nx; i++) { num += (dx[i] - dxr[i]) * (dx[i] - dxr[i]); den += dxr[i] * dxr[i]; }
    e = fmax(e, sqrt(num / den));
    num = den = 0;
    for (int64_t i = 0; i < nw; i++) { num += (dw[i] - dwr[i]) * (dw[i] - dwr[i]); den += dwr[i] * dwr[i]; }
    e = fmax(e, sqrt(num / den));
    free(x); free(w); free(dy); free(y); free(yr); free(dx); free(dxr); free(dw); free(dwr); free(ws);
    return e;
}

static void time_bn(const bcase *c, int reps, gbtd_rng *r, double *tmin, double *tmed)
{
    const gbtd_bn_shape s = {c->n, c->ci, c->h * c->w};
    const int64_t nx = s.n * s.c * s.hw;
    float *x = malloc(4 * (size_t)nx), *dy = malloc(4 * (size_t)nx), *y = malloc(4 * (size_t)nx);
    float *dx = malloc(4 * (size_t)nx), *p = malloc(4 * 8 * (size_t)s.c);
    fill(x, nx, r); fill(dy, nx, r);
    for (int64_t i = 0; i < s.c; i++) {
        p[i] = 1.0f; p[s.c + i] = 0.0f; p[2 * s.c + i] = 0.0f; p[3 * s.c + i] = 1.0f;
    }
    float *g = p, *b = p + s.c, *rm = p + 2 * s.c, *rv = p + 3 * s.c, *mean = p + 4 * s.c;
    float *rstd = p + 5 * s.c, *dg = p + 6 * s.c, *db = p + 7 * s.c;
    double *t = malloc(sizeof(double) * (size_t)reps);
    for (int k = 0; k <= reps; k++) {
        const double t0 = now();
        memset(dx, 0, 4 * (size_t)nx);
        memset(dg, 0, 8 * (size_t)s.c);
        if (c->bn == 2) {
            gbtd_bn_relu_forward_train(&s, x, g, b, 1e-5f, 0.1f, rm, rv, mean, rstd, y);
            gbtd_bn_relu_backward(&s, x, g, mean, rstd, y, dy, dx, dg, db);
        } else {
            gbtd_bn_forward_train(&s, x, g, b, 1e-5f, 0.1f, rm, rv, mean, rstd, y);
            gbtd_bn_backward(&s, x, g, mean, rstd, dy, dx, dg, db);
        }
        const double t1 = now();
        if (k > 0) t[k - 1] = t1 - t0;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_d);
    *tmin = t[0];
    *tmed = t[reps / 2];
    free(x); free(dy); free(y); free(dx); free(p); free(t);
}

static void time_gbtd(const bcase *c, int reps, gbtd_rng *r, double *tmin, double *tmed)
{
    if (c->bn) {
        time_bn(c, reps, r, tmin, tmed);
        return;
    }
    gbtd_conv2d_shape s = gbtd_conv2d_shape_make(c->n, c->ci, c->h, c->w, c->co, c->k, c->s, c->p, c->g);
    gbtd_conv2d_shape_init(&s);
    const int64_t nx = s.n * s.c_in * s.h * s.w, ny = s.n * s.c_out * s.h_out * s.w_out;
    const int64_t nw = gbtd_conv2d_weight_count(&s);
    const size_t wl = gbtd_conv2d_workspace_size(&s, 0);
    float *x = malloc(4 * (size_t)nx), *w = malloc(4 * (size_t)nw), *dy = malloc(4 * (size_t)ny);
    float *y = malloc(4 * (size_t)ny), *dx = malloc(4 * (size_t)nx), *dw = malloc(4 * (size_t)nw);
    float *ws = malloc(4 * (wl ? wl : 1));
    fill(x, nx, r); fill(w, nw, r); fill(dy, ny, r);
    double *t = malloc(sizeof(double) * (size_t)reps);
    for (int k = 0; k <= reps; k++) {
        /* The training step zeroes gradients too; PyTorch's timing includes allocating them. */
        const double t0 = now();
        memset(dx, 0, 4 * (size_t)nx);
        memset(dw, 0, 4 * (size_t)nw);
        gbtd_conv2d_forward(&s, x, w, NULL, y, ws, wl);
        gbtd_conv2d_backward(&s, x, w, dy, dx, dw, NULL, ws, wl);
        const double t1 = now();
        if (k > 0) t[k - 1] = t1 - t0;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_d);
    *tmin = t[0];
    *tmed = t[reps / 2];
    free(x); free(w); free(dy); free(y); free(dx); free(dw); free(ws); free(t);
}

int main(int argc, char **argv)
{
    const char *python = CONV_PYTHON, *script = CONV_SCRIPT, *threads_arg = "1,2";
    const char *only = NULL; /* substring filter on case labels */
    int reps = 5, rounds = 2, quick = 0, torch = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads_arg = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--python") && i + 1 < argc) python = argv[++i];
        else if (!strcmp(argv[i], "--script") && i + 1 < argc) script = argv[++i];
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--no-torch")) torch = 0;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "conv: unknown argument '%s'\nusage: conv [--threads 1,2] [--reps N] "
                            "[--rounds R] [--quick] [--no-torch] [--only TEXT] [--python PY] [--script PATH]\n", argv[i]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (rounds < 1) rounds = 1;
    const int64_t nb = quick ? 8 : 64;
    bcase cases[] = {
        {"3x3 g1 28x28", nb, 128, 28, 28, 128, 3, 1, 1, 1, 0, 0},
        {"3x3 g4 28x28", nb, 128, 28, 28, 128, 3, 1, 1, 4, 0, 0},
        {"3x3 g8 28x28", nb, 128, 28, 28, 128, 3, 1, 1, 8, 0, 0},
        {"3x3 g32 28x28", nb, 128, 28, 28, 128, 3, 1, 1, 32, 0, 0},
        {"3x3 g128 28x28", nb, 128, 28, 28, 128, 3, 1, 1, 128, 0, 0},
        {"3x3 g1 14x14", nb, 128, 14, 14, 128, 3, 1, 1, 1, 5, 0},
        {"3x3 g4 14x14", nb, 128, 14, 14, 128, 3, 1, 1, 4, 5, 0},
        {"3x3 g8 14x14", nb, 128, 14, 14, 128, 3, 1, 1, 8, 5, 0},
        {"3x3 g32 14x14", nb, 128, 14, 14, 128, 3, 1, 1, 32, 5, 0},
        {"3x3 g128 14x14", nb, 128, 14, 14, 128, 3, 1, 1, 128, 5, 0},
        {"3x3 g32 s2 28>14", nb, 128, 28, 28, 128, 3, 2, 1, 32, -1, 0},
        {"1x1 256>128 14x14", nb, 256, 14, 14, 128, 1, 1, 0, 1, -1, 0},
        {"3x3 g1 64 32x32", nb, 64, 32, 32, 64, 3, 1, 1, 1, -1, 0},
        {"3x3 g128 s2 28>14", nb, 128, 28, 28, 128, 3, 2, 1, 128, -1, 0},
        {"3x3 g64 x2 28x28", nb, 64, 28, 28, 128, 3, 1, 1, 64, -1, 0},
        {"3x3 g16 14x14", nb, 128, 14, 14, 128, 3, 1, 1, 16, 5, 0},
        {"3x3 g32 s1 p0 14", nb, 128, 14, 14, 128, 3, 1, 0, 32, -1, 0},
        {"bn+relu 128 14x14", nb, 128, 14, 14, 0, 0, 0, 0, 0, -1, 2},
        {"bn 128 14x14", nb, 128, 14, 14, 0, 0, 0, 0, 0, -1, 1},
        {"bn+relu 64 28x28", 2 * nb, 64, 28, 28, 0, 0, 0, 0, 0, -1, 2},
        {"bn 64 28x28", 2 * nb, 64, 28, 28, 0, 0, 0, 0, 0, -1, 1},
    };
    int ncase = (int)(sizeof cases / sizeof cases[0]);
    if (only) { /* keep the matching cases (dense_ref columns become NaN) */
        int k = 0;
        for (int i = 0; i < ncase; i++)
            if (strstr(cases[i].label, only)) {
                cases[k] = cases[i];
                cases[k].dense_ref = -1;
                k++;
            }
        ncase = k;
    }
    gbtd_rng *rng;
    gbtd_rng_alloc(1, &rng);
    double worst = 0;
    for (int i = 0; i < ncase; i++) worst = fmax(worst, validate(&cases[i], rng));
    printf("# validation: max relative L2 error vs reference (fwd, dx, dw) = %.2e\n", worst);
    if (!(worst < 1e-5)) {
        fprintf(stderr, "conv: validation failed (%.3g)\n", worst);
        return 1;
    }
    int thr[4], nthr = 0;
    for (const char *p = threads_arg; *p && nthr < 4;) {
        thr[nthr++] = atoi(p);
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    printf("# batch %lld, %d rounds of %d timed runs after one warm-up; time = forward + backward "
           "(dx, dw), ms\n", (long long)nb, rounds, reps);
    printf("%-20s %3s %9s %9s %8s %8s %9s %9s %8s %8s\n", "case", "thr", "gbtd_min", "gbtd_med",
           "GF/s", "vs_dense", "torch_min", "torch_med", "GF/s", "torch/g");
    char json[16384];
    size_t jl = (size_t)snprintf(json, sizeof json, "{\"bench\":\"conv\",\"batch\":%lld,\"cases\":[", (long long)nb);
    int first = 1;
    for (int ti = 0; ti < nthr; ti++) {
        gbtd_set_threads(thr[ti]);
        double tg[32], tgm[32], tp[32], tpm[32];
        for (int i = 0; i < ncase; i++) {
            tp[i] = tpm[i] = NAN;
            tg[i] = tgm[i] = INFINITY;
        }
        /* Rounds alternate a PyTorch pass and a gbtd pass over all cases; each column keeps its
         * best round, so a burst of load from other processes rarely hits only one side. */
        for (int round = 0; round < rounds; round++) {
            if (torch) {
                char cmd[8192];
                int len = snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=%d '%s' '%s' %d %d", thr[ti], python,
                                   script, thr[ti], reps);
                for (int i = 0; i < ncase; i++)
                    if (cases[i].bn)
                        len += snprintf(cmd + len, sizeof cmd - (size_t)len, " %s,%lld,%lld,%lld,%lld",
                                        cases[i].bn == 2 ? "bnrelu" : "bn", (long long)cases[i].n,
                                        (long long)cases[i].ci, (long long)cases[i].h, (long long)cases[i].w);
                    else
                        len += snprintf(cmd + len, sizeof cmd - (size_t)len,
                                        " %lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld",
                                        (long long)cases[i].n, (long long)cases[i].ci,
                                        (long long)cases[i].h, (long long)cases[i].w,
                                        (long long)cases[i].co, (long long)cases[i].k,
                                        (long long)cases[i].s, (long long)cases[i].p,
                                        (long long)cases[i].g);
                FILE *f = popen(cmd, "r");
                char line[512];
                int i = 0;
                while (f && i < ncase && fgets(line, sizeof line, f)) {
                    const char *a = strstr(line, "\"min_s\": "), *b = strstr(line, "\"median_s\": ");
                    if (a && b) {
                        const double mn = atof(a + 9), md = atof(b + 12);
                        if (isnan(tp[i]) || mn < tp[i]) tp[i] = mn;
                        if (isnan(tpm[i]) || md < tpm[i]) tpm[i] = md;
                        i++;
                    }
                }
                if (!f || pclose(f) != 0 || i < ncase)
                    fprintf(stderr, "conv: PyTorch reference failed (%s); its columns are NaN\n", cmd);
            }
            for (int i = 0; i < ncase; i++) {
                double tmin, tmed;
                time_gbtd(&cases[i], reps, rng, &tmin, &tmed);
                tg[i] = fmin(tg[i], tmin);
                tgm[i] = fmin(tgm[i], tmed);
            }
        }
        for (int i = 0; i < ncase; i++) {
            const bcase *c = &cases[i];
            const double tmin = tg[i], tmed = tgm[i];
            double gf;
            if (c->bn) {
                /* ~10 flops per element: forward (2 reductions, 1 scaled write) + backward. */
                gf = 10.0 * (double)(c->n * c->ci * c->h * c->w) * 1e-9;
            } else {
                gbtd_conv2d_shape s = gbtd_conv2d_shape_make(c->n, c->ci, c->h, c->w, c->co, c->k, c->s, c->p, c->g);
                gbtd_conv2d_shape_init(&s);
                gf = 6.0 * (double)gbtd_conv2d_macs(&s) * 1e-9;
            }
            const double vs = c->dense_ref >= 0 ? tmin / tg[c->dense_ref] : NAN;
            printf("%-20s %3d %9.2f %9.2f %8.1f %8.3f %9.2f %9.2f %8.1f %8.2f\n", c->label, thr[ti],
                   1e3 * tmin, 1e3 * tmed, gf / tmin, vs, 1e3 * tp[i], 1e3 * tpm[i], gf / tp[i],
                   tp[i] / tmin);
            fflush(stdout);
            char a[32], b2[32], v[32];
            jl += (size_t)snprintf(json + jl, sizeof json - jl,
                                   "%s{\"case\":\"%s\",\"threads\":%d,\"gbtd_ms\":%.3f,\"torch_ms\":%s,"
                                   "\"gbtd_gflops\":%.2f,\"torch_over_gbtd\":%s,\"vs_dense\":%s}",
                                   first ? "" : ",", c->label, thr[ti], 1e3 * tmin,
                                   jnum(a, 1e3 * tp[i]), gf / tmin, jnum(b2, tp[i] / tmin), jnum(v, vs));
            first = 0;
        }
    }
    snprintf(json + jl, sizeof json - jl, "],\"validation_rel_err\":%.3g}", worst);
    printf("%s\n", json);
    gbtd_rng_free(rng);
    return 0;
}
