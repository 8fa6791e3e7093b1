/* gbtd demo: the main job of the tool at this stage of the project. Builds a random 4-way
 * tensor with a planted low multilinear rank (a Tucker tensor plus noise, shaped like a conv
 * kernel kh x kw x C_in x C_out), then on every mode: the unfolding (checked by folding back),
 * the leading squared singular values of the unfolding, and the mode-n product with a J x I_n
 * matrix, timed (min of --reps), with its GFLOP/s next to one GEMM of the same flop count and
 * checked against the naive kernel on sampled entries. Last, the multi-mode product projects
 * the tensor onto the leading singular vectors of every mode and back (a truncated HOSVD),
 * and reports the relative error, which the planted noise level predicts. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "gbtd.h"

static void demo_help(FILE *f)
{
    fprintf(f,
            "usage: gbtd demo --tensors [--shape A,B,C,D] [--ranks A,B,C,D] [--seed N] [--threads N]\n"
            "                 [--reps N] [--json] [--quiet]\n\n"
            "Builds a random 4-way tensor X = G x_0 A_0 x_1 A_1 x_2 A_2 x_3 A_3 + noise (Tucker\n"
            "ranks --ranks, noise 1e-3 relative), shows each unfolding and mode-n product with\n"
            "timings and GFLOP/s (next to one GEMM of the same flop count), and the truncated\n"
            "multi-mode projection onto the leading singular vectors.\n\n"
            "  --shape A,B,C,D  tensor shape (default 3,3,256,512: a conv kernel h,w,in,out)\n"
            "  --ranks A,B,C,D  planted Tucker ranks (default 2,2,16,32)\n"
            "  --seed N         random seed (default 1)\n"
            "  --threads N      BLAS/OpenMP threads (default: OpenBLAS's own default)\n"
            "  --reps N         timed repetitions, the minimum is reported (default 3)\n"
            "  --json           one JSON object on stdout instead of the table\n"
            "  --quiet          no progress on stderr\n"
            "  --help           this text\n\n"
            "Exit status: 0 done, 2 bad usage, 1 runtime failure.\n");
}

typedef struct {
    int64_t in, j, rank;
    double unfold_ms, ttm_ms, ttm_gflops, gemm_gflops, ttm_err, sv2[3], energy;
} mode_result;

static bool quiet = false;

static void progress(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

static void progress(const char *fmt, ...)
{
    if (quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gbtd demo: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Largest |Y - ref| over 256 sampled entries, relative to sum |u||x| of each entry. */
static double sample_error(const gbtd_tensor *x, const gbtd_tensor *u, int mode,
                           const gbtd_tensor *y, gbtd_rng *rng)
{
    double worst = 0.0;
    for (int s = 0; s < 256; s++) {
        int64_t idx[GBTD_MAX_MODES];
        for (int k = 0; k < y->ndim; k++)
            idx[k] = (int64_t)gbtd_rng_uint(rng, (uint64_t)y->shape[k]);
        const int64_t j = idx[mode];
        double sum = 0, mag = 0;
        for (int64_t i = 0; i < x->shape[mode]; i++) {
            idx[mode] = i;
            const double t = u->data[j * u->stride[0] + i * u->stride[1]] * *gbtd_tensor_ptr(x, idx);
            sum += t;
            mag += fabs(t);
        }
        idx[mode] = j;
        const double e = fabs(*gbtd_tensor_ptr(y, idx) - sum) / (mag > 0 ? mag : 1);
        if (e > worst) worst = e;
    }
    return worst;
}

#define DEMO_TRY(expr)                                                                            \
    do {                                                                                          \
        rc = (expr);                                                                              \
        if (rc != GBTD_OK) goto fail;                                                             \
    } while (0)

static int demo_tensors(int argc, char **argv)
{
    int64_t shape[4] = {3, 3, 256, 512}, ranks[4] = {2, 2, 16, 32};
    long long seed = 1, threads = 0, reps = 3;
    bool json = false;
    quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const bool has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            demo_help(stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--quiet")) {
            quiet = true;
        } else if (!strcmp(a, "--seed") && has) {
            if (!cli_parse_int("demo", a, argv[++i], 0, INT64_MAX, &seed)) return EXIT_USAGE;
        } else if (!strcmp(a, "--threads") && has) {
            if (!cli_parse_int("demo", a, argv[++i], 1, 1024, &threads)) return EXIT_USAGE;
        } else if (!strcmp(a, "--reps") && has) {
            if (!cli_parse_int("demo", a, argv[++i], 1, 100, &reps)) return EXIT_USAGE;
        } else if (!strcmp(a, "--shape") && has) {
            if (cli_parse_list("demo", a, argv[++i], shape, 4) != 4)
                return cli_usage_error("demo", "--shape needs 4 sizes");
        } else if (!strcmp(a, "--ranks") && has) {
            if (cli_parse_list("demo", a, argv[++i], ranks, 4) != 4)
                return cli_usage_error("demo", "--ranks needs 4 values");
        } else {
            return cli_usage_error("demo", "unknown option or missing value '%s'", a);
        }
    }
    for (int k = 0; k < 4; k++) {
        if (shape[k] < 1 || shape[k] > 100000)
            return cli_usage_error("demo", "--shape: size %lld outside 1..100000",
                                   (long long)shape[k]);
        if (ranks[k] < 1 || ranks[k] > shape[k])
            return cli_usage_error("demo", "--ranks: rank %lld of mode %d outside 1..%lld",
                                   (long long)ranks[k], k, (long long)shape[k]);
    }
    int64_t numel = 1;
    for (int k = 0; k < 4; k++) numel *= shape[k];
    if (numel > (INT64_C(1) << 27))
        return cli_usage_error("demo", "--shape: %lld elements, at most 2^27 allowed",
                               (long long)numel);
    if (threads > 0) gbtd_set_threads((int)threads);

    int rc = GBTD_OK;
    gbtd_rng *rng = NULL;
    gbtd_tensor g, x, noise, f[4], m, back, u, y, uproj[4], core, xhat;
    gbtd_tensor *all[] = {&g, &x, &noise, &f[0], &f[1], &f[2], &f[3], &m, &back, &u, &y,
                          &uproj[0], &uproj[1], &uproj[2], &uproj[3], &core, &xhat};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) memset(all[i], 0, sizeof(gbtd_tensor));
    mode_result res[4];
    memset(res, 0, sizeof res);
    const double t_start = cli_now();

    /* X = G x_0 A_0 ... x_3 A_3 + noise, scaled so that ||noise|| = 1e-3 ||signal||. */
    progress("building a %lld-element 4-way tensor with planted Tucker structure", (long long)numel);
    DEMO_TRY(gbtd_rng_alloc((uint64_t)seed, &rng));
    DEMO_TRY(gbtd_tensor_alloc(&g, 4, ranks));
    gbtd_tensor_fill_normal(&g, rng, 0.0, 1.0);
    const gbtd_tensor *fp[4];
    const int modes[4] = {0, 1, 2, 3};
    for (int k = 0; k < 4; k++) {
        DEMO_TRY(gbtd_matrix_alloc(&f[k], shape[k], ranks[k]));
        gbtd_tensor_fill_normal(&f[k], rng, 0.0, 1.0);
        fp[k] = &f[k];
    }
    DEMO_TRY(gbtd_multi_ttm_alloc(&g, fp, modes, 4, GBTD_NOTRANS, &x));
    DEMO_TRY(gbtd_tensor_alloc_like(&noise, &x));
    gbtd_tensor_fill_normal(&noise, rng, 0.0, 1.0);
    const double noise_level = 1e-3;
    DEMO_TRY(gbtd_tensor_axpy(noise_level * gbtd_tensor_norm(&x) / gbtd_tensor_norm(&noise),
                              &noise, &x));
    gbtd_tensor_free(&noise);
    const double xnorm = gbtd_tensor_norm(&x);

    for (int n = 0; n < 4; n++) {
        mode_result *r = &res[n];
        r->in = shape[n];
        r->j = shape[n] > 1 ? (shape[n] + 1) / 2 : 1;
        r->rank = ranks[n];
        progress("mode %d of 4: unfolding, singular values, mode-n product", n);
        /* Unfolding, timed, then folded back and compared. */
        double t0 = cli_now();
        DEMO_TRY(gbtd_unfold_alloc(&x, n, &m));
        r->unfold_ms = 1e3 * (cli_now() - t0);
        DEMO_TRY(gbtd_fold_alloc(&m, n, 4, shape, &back));
        double d;
        DEMO_TRY(gbtd_tensor_max_abs_diff(&back, &x, &d));
        if (d != 0.0) {
            rc = gbtd_error(GBTD_ENUMERIC, "fold(unfold(X, %d)) differs from X by %g", n, d);
            goto fail;
        }
        gbtd_tensor_free(&back);
        gbtd_tensor_free(&m);
        /* Leading singular vectors (kept for the projection) and squared singular values. */
        double *sv2 = gbtd_calloc((size_t)shape[n], sizeof(double));
        if (sv2 == NULL) {
            rc = GBTD_ENOMEM;
            goto fail;
        }
        rc = gbtd_leading_singular_vectors(&x, n, ranks[n], &uproj[n], sv2);
        double total = 0, lead = 0;
        for (int64_t i = 0; i < shape[n]; i++) {
            total += sv2[i];
            if (i < ranks[n]) lead += sv2[i];
        }
        for (int i = 0; i < 3; i++) r->sv2[i] = i < shape[n] ? sv2[i] : 0.0;
        r->energy = total > 0 ? lead / total : 0.0;
        gbtd_free(sv2);
        if (rc != GBTD_OK) goto fail;
        /* Mode-n product with a random J x I_n matrix: min of reps, checked on samples. */
        DEMO_TRY(gbtd_matrix_alloc(&u, r->j, shape[n]));
        gbtd_tensor_fill_uniform(&u, rng, -1.0, 1.0);
        DEMO_TRY(gbtd_ttm_alloc(&x, &u, n, GBTD_NOTRANS, &y));
        r->ttm_err = sample_error(&x, &u, n, &y, rng);
        const double flops = 2.0 * (double)r->j * (double)numel;
        double best = INFINITY, best_gemm = INFINITY;
        for (long long k = 0; k < reps; k++) {
            t0 = cli_now();
            DEMO_TRY(gbtd_ttm(&x, &u, n, GBTD_NOTRANS, &y));
            const double dt = cli_now() - t0;
            if (dt < best) best = dt;
        }
        /* Reference: one GEMM of the same flop count, (J x I_n)(I_n x rest), same buffers. */
        gbtd_tensor xm, ym;
        const int64_t xs[2] = {shape[n], numel / shape[n]}, ys[2] = {r->j, numel / shape[n]};
        DEMO_TRY(gbtd_tensor_wrap(x.data, 2, xs, &xm));
        DEMO_TRY(gbtd_tensor_wrap(y.data, 2, ys, &ym));
        for (long long k = 0; k < reps; k++) {
            t0 = cli_now();
            DEMO_TRY(gbtd_gemm(GBTD_NOTRANS, GBTD_NOTRANS, 1.0, &u, &xm, 0.0, &ym));
            const double dt = cli_now() - t0;
            if (dt < best_gemm) best_gemm = dt;
        }
        r->ttm_ms = 1e3 * best;
        r->ttm_gflops = flops / best * 1e-9;
        r->gemm_gflops = flops / best_gemm * 1e-9;
        gbtd_tensor_free(&y);
        gbtd_tensor_free(&u);
    }

    /* Truncated HOSVD: core = X x_n U_n^T on all modes, then back with U_n. */
    progress("multi-mode projection onto the leading singular vectors");
    const gbtd_tensor *up[4] = {&uproj[0], &uproj[1], &uproj[2], &uproj[3]};
    double t0 = cli_now();
    DEMO_TRY(gbtd_multi_ttm_alloc(&x, up, modes, 4, GBTD_TRANS, &core));
    const double proj_ms = 1e3 * (cli_now() - t0);
    t0 = cli_now();
    DEMO_TRY(gbtd_multi_ttm_alloc(&core, up, modes, 4, GBTD_NOTRANS, &xhat));
    const double recon_ms = 1e3 * (cli_now() - t0);
    DEMO_TRY(gbtd_tensor_axpy(-1.0, &x, &xhat));
    const double rel_err = gbtd_tensor_norm(&xhat) / xnorm;
    const double total_s = cli_now() - t_start;

    char sh[96], rk[96];
    gbtd_shape_str(4, shape, sh, sizeof sh);
    gbtd_shape_str(4, ranks, rk, sizeof rk);
    if (json) {
        printf("{\"command\": \"demo\", \"version\": \"%s\", \"seed\": %lld, \"threads\": %d, "
               "\"shape\": [%lld, %lld, %lld, %lld], \"ranks\": [%lld, %lld, %lld, %lld], "
               "\"norm\": %.9g, \"modes\": [",
               gbtd_version(), seed, gbtd_get_threads(), (long long)shape[0],
               (long long)shape[1], (long long)shape[2], (long long)shape[3],
               (long long)ranks[0], (long long)ranks[1], (long long)ranks[2],
               (long long)ranks[3], xnorm);
        for (int n = 0; n < 4; n++) {
            const mode_result *r = &res[n];
            printf("%s{\"mode\": %d, \"size\": %lld, \"unfolding\": [%lld, %lld], "
                   "\"unfold_ms\": %.3f, \"sv2\": [%.9g, %.9g, %.9g], \"energy_in_rank\": %.9g, "
                   "\"J\": %lld, \"ttm_ms\": %.3f, \"ttm_gflops\": %.3f, \"gemm_gflops\": %.3f, "
                   "\"ratio\": %.4f, \"max_rel_err\": %.3g}",
                   n ? ", " : "", n, (long long)r->in, (long long)r->in,
                   (long long)(numel / r->in), r->unfold_ms, r->sv2[0], r->sv2[1], r->sv2[2],
                   r->energy, (long long)r->j, r->ttm_ms, r->ttm_gflops, r->gemm_gflops,
                   r->ttm_gflops / r->gemm_gflops, r->ttm_err);
        }
        printf("], \"projection_ms\": %.3f, \"reconstruction_ms\": %.3f, "
               "\"hosvd_rel_error\": %.6g, \"noise_level\": %g, \"total_s\": %.3f}\n",
               proj_ms, recon_ms, rel_err, noise_level, total_s);
    } else {
        printf("gbtd %s demo: X = G x_0 A_0 x_1 A_1 x_2 A_2 x_3 A_3 + noise, shape %s, ranks %s, "
               "seed %lld, %d thread(s)\n",
               gbtd_version(), sh, rk, seed, gbtd_get_threads());
        printf("||X||_F = %.6g, noise %.0e of the signal\n\n", xnorm, noise_level);
        printf("mode  I_n  unfolding        unfold_ms  sigma_1^2    sigma_2^2    energy@rank"
               "   J    ttm_ms  GFLOP/s  gemm GFLOP/s  ratio  max_rel_err\n");
        for (int n = 0; n < 4; n++) {
            const mode_result *r = &res[n];
            char uf[48];
            snprintf(uf, sizeof uf, "%lld x %lld", (long long)r->in, (long long)(numel / r->in));
            printf("%-4d  %-4lld %-16s %9.2f  %-11.5g  %-11.5g  %8.6f@%-4lld %-4lld %7.2f %8.2f "
                   "%13.2f %6.3f  %.2g\n",
                   n, (long long)r->in, uf, r->unfold_ms, r->sv2[0], r->sv2[1], r->energy,
                   (long long)r->rank, (long long)r->j, r->ttm_ms, r->ttm_gflops, r->gemm_gflops,
                   r->ttm_gflops / r->gemm_gflops, r->ttm_err);
        }
        printf("\nmulti-mode product: projection onto the leading singular vectors %.2f ms, "
               "reconstruction %.2f ms\n",
               proj_ms, recon_ms);
        printf("truncated HOSVD at the planted ranks: relative error %.3g (noise level %.0e)\n",
               rel_err, noise_level);
        printf("total %.2f s\n", total_s);
    }
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) gbtd_tensor_free(all[i]);
    gbtd_rng_free(rng);
    return EXIT_OK;
fail:
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) gbtd_tensor_free(all[i]);
    gbtd_rng_free(rng);
    return cli_fail("demo", rc, "demo failed");
}

/* ---- the main job: the CRU pipeline ------------------------------------------------------ */

#include "cmd_cru.h"
#include "nn_cli.h"

#define CRU_DEMO_SPEC "custom:block=bottleneck,units=3/3/3,width=32/64/128,inner=8/16/32,stem-width=16"

static void cru_demo_help(FILE *f)
{
    fprintf(f,
            "usage: gbtd demo [--weights FILE] [--data fashion-mnist|cifar10] [--data-dir DIR]\n"
            "                 [--arch SPEC] [--epochs N] [--steps N] [--stages S,S] [--budget F]\n"
            "                 [--ft-epochs N] [--ft-steps N] [--new-first N] [--no-distill] [--lr X]\n"
            "                 [--terms R] [--refit N] [--bn-images N] [--batch N]\n"
            "                 [--limit N] [--seed N] [--threads N] [--json] [--quiet]\n"
            "       gbtd demo --tensors ...   (the tensor-operations demo; --tensors --help)\n\n"
            "The CRU pipeline end to end: (1) train a small bottleneck ResNet on Fashion-MNIST\n"
            "(or load --weights, e.g. ../shared/data/models/resnet56-cifar10.safetensors with\n"
            "--data cifar10), (2) stack the effective kernels of each chosen stage's units along\n"
            "the output mode and factor them jointly (shared reduce + core, own expand) to the\n"
            "--budget fraction of their conv parameters, (3) build the CRU-Net from the factors,\n"
            "(4) fine-tune it briefly, and print one table: parameters, test top-1 of the source,\n"
            "of the CRU-Net before and after fine-tuning, and the time of each step.\n\n"
            "  --arch SPEC      source network (default " CRU_DEMO_SPEC ")\n"
            "  --epochs N       source training epochs (default 1); --steps N caps each (300)\n"
            "  --batch N        images per step, training and fine-tuning (default 64)\n"
            "  --stages S,S     stages to factor (default 2,3)\n"
            "  --budget F       fraction of the stages' conv parameters kept (default 0.5)\n"
            "  --terms R        block terms of the collective BTD (default 4); --iters N caps\n"
            "                   its ALS sweeps (default 40)\n"
            "  --refit N        training images for the response refit of each member's own\n"
            "                   1x1 (default 1024; 0: none; gbtd compress --help)\n"
            "  --bn-images N    training images for re-estimating batch norm after building\n"
            "                   (default 2000; 0: none)\n"
            "  --ft-epochs N    fine-tuning epochs (default 3); --ft-steps N caps each (100)\n"
            "  --new-first N    epochs training only the new layers first (default 1)\n"
            "  --no-distill     no distillation (default: from the source network, softened\n"
            "                   logits, T = 4, a = 0.5)\n"
            "  --lr X           fine-tuning learning rate, cosine to 0 (default 0.02; the new\n"
            "                   layers learn at 0.1 times it)\n"
            "  --limit N        test images evaluated (default 1000)\n");
}

static int cru_demo_epoch_(const gbtd_epoch_info *e, void *ctx)
{
    if (!*(bool *)ctx)
        fprintf(stderr, "  epoch %d/%d: loss %.4f, train top-1 %.2f %%, %.1f s (%.0f images/s)\n",
                e->epoch, e->epochs, e->loss, 100 * e->top1, e->seconds, e->images_per_s);
    return 0;
}

static int cru_demo_ft_epoch_(const gbtd_cru_epoch_info *e, void *ctx)
{
    if (!*(bool *)ctx)
        fprintf(stderr, "  epoch %d/%d%s: loss %.4f, train top-1 %.2f %%, test top-1 %.2f %%, %.1f s\n",
                e->epoch, e->epochs, e->new_only ? " (new layers only)" : "", e->loss,
                100 * e->top1, 100 * e->test_top1, e->seconds);
    return 0;
}

static int cru_demo_step_(int64_t step, int64_t steps, double loss, void *ctx)
{
    if (!*(bool *)ctx && cli_stderr_is_tty())
        fprintf(stderr, "\r  step %lld/%lld, loss %.4f   ", (long long)step, (long long)steps, loss);
    return 0;
}

static int demo_cru(int argc, char **argv)
{
    cru_cli_opts o;
    cru_cli_opts_default(&o);
    const char *weights = NULL, *arch = CRU_DEMO_SPEC;
    long long epochs = 1, steps = 300, ft_epochs = 3, ft_steps = 100, new_first = 1, batch = 64;
    double lr = -1;
    bool distill = true;
    o.budget = 0.5;
    o.terms = 4;
    o.iters = 40;
    o.bn_images = 2000;
    o.refit_images = 1024;
    o.stages[0] = 2;
    o.stages[1] = 3;
    o.nstages = 2;
    o.data = "fashion-mnist";
    o.limit = 1000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const bool has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cru_demo_help(stdout);
            return EXIT_OK;
        }
        if (!strcmp(a, "--ranks"))
            return cli_usage_error("demo", "--ranks belongs to --tensors; the CRU demo takes --budget");
        int used = cru_cli_parse("demo", argc, argv, &i, &o);
        if (used < 0) return EXIT_USAGE;
        if (used) continue;
        if (!strcmp(a, "--weights") && has) weights = argv[++i];
        else if (!strcmp(a, "--arch") && has) arch = argv[++i];
        else if (!strcmp(a, "--distill")) distill = true;
        else if (!strcmp(a, "--no-distill")) distill = false;
        else if (!strcmp(a, "--lr") && has) {
            if (!cli_parse_double("demo", a, argv[++i], &lr) || !(lr > 0))
                return cli_usage_error("demo", "--lr must be > 0");
        } else if (!strcmp(a, "--epochs") && has) {
            if (!cli_parse_int("demo", a, argv[++i], 0, 1000, &epochs)) return EXIT_USAGE;
        } else if (!strcmp(a, "--batch") && has) {
            if (!cli_parse_int("demo", a, argv[++i], 1, 65536, &batch)) return EXIT_USAGE;
        } else if (!strcmp(a, "--steps") && has) {
            if (!cli_parse_int("demo", a, argv[++i], 1, 1LL << 40, &steps)) return EXIT_USAGE;
        } else if (!strcmp(a, "--ft-epochs") && has) {
            if (!cli_parse_int("demo", a, argv[++i], 0, 1000, &ft_epochs)) return EXIT_USAGE;
        } else if (!strcmp(a, "--ft-steps") && has) {
            if (!cli_parse_int("demo", a, argv[++i], 1, 1LL << 40, &ft_steps)) return EXIT_USAGE;
        } else if (!strcmp(a, "--new-first") && has) {
            if (!cli_parse_int("demo", a, argv[++i], 0, 1000, &new_first)) return EXIT_USAGE;
        } else {
            return cli_usage_error("demo", "unknown option or missing value '%s'", a);
        }
    }
    if (o.rank_in > 0) o.budget = 0;
    if (new_first > ft_epochs) return cli_usage_error("demo", "--new-first exceeds --ft-epochs");
    gbtd_set_threads(o.threads);
    const bool q = o.quiet;
    const double t_start = cli_now();
    cru_run r;
    memset(&r, 0, sizeof r);
    if (!q) fprintf(stderr, "[1/4] loading %s ...\n", o.data);
    int st = nn_cli_load_data("demo", o.data, o.dir, &r.tr, &r.te);
    if (st) return st;
    r.have_data = true;
    gbtd_net src;
    memset(&src, 0, sizeof src);
    int rc;
    double t_train = 0, lr_ft = lr > 0 ? lr : 0.02;
    char spec[256] = "";
    if (weights) {
        gbtd_file_format fmt = GBTD_FORMAT_UNKNOWN;
        rc = gbtd_file_format_detect(weights, &fmt);
        r.imnet = o.norm ? !strcmp(o.norm, "imagenet") : fmt == GBTD_FORMAT_SAFETENSORS;
        if (!rc) rc = gbtd_cru_load_net(weights, r.te.c, r.te.h, r.te.w, &src);
        if (rc) {
            cru_run_free(&r);
            return cli_fail("demo", rc, "cannot load the weights");
        }
        snprintf(spec, sizeof spec, "%s", src.spec);
        if (!q) fprintf(stderr, "[1/4] loaded %s (%s, %lld parameters)\n", weights, spec,
                        (long long)src.nparams);
    } else {
        nn_cli_spec_for_data(arch, &r.te, spec, sizeof spec);
        rc = gbtd_net_from_spec(spec, &src);
        if (!rc) rc = gbtd_net_init_params(&src, o.seed);
        if (rc) {
            cru_run_free(&r);
            return cli_fail("demo", rc, "cannot build the source network");
        }
        if (!q) fprintf(stderr, "[1/4] training %s (%lld parameters) for %lld epochs ...\n", spec,
                        (long long)src.nparams, epochs);
        double t0 = cli_now();
        if (epochs > 0) {
            gbtd_sgd sgd;
            gbtd_train_opts to = gbtd_train_opts_default();
            to.epochs = (int)epochs;
            to.lr = 0.1;
            to.batch = (int)batch;
            to.seed = o.seed;
            to.sgd.weight_decay = 5e-4;
            to.max_steps = steps > 0 ? steps * epochs : 0;
            to.on_epoch = cru_demo_epoch_;
            to.ctx = (void *)&q;
            gbtd_train_state ts = {0, 0, o.seed};
            rc = gbtd_sgd_init(&sgd, &src, &to.sgd);
            if (!rc) rc = gbtd_train_run(&src, &sgd, &ts, &r.tr, NULL, &to);
            gbtd_sgd_free(&sgd);
            if (rc) {
                gbtd_net_free(&src);
                cru_run_free(&r);
                return cli_fail("demo", rc, "training the source network failed");
            }
        }
        t_train = cli_now() - t0;
    }
    if (!q) fprintf(stderr, "[2/4] factoring stages collectively (budget %.0f %%) ...\n", 100 * o.budget);
    double t0 = cli_now();
    st = cru_cli_compress_net("demo", &src, &o, &r);
    if (st) {
        cru_run_free(&r);
        return st;
    }
    double t_compress = cli_now() - t0 - r.t_eval;
    if (!q) fprintf(stderr, "[3/4] source top-1 %.2f %%, CRU-Net before fine-tuning %.2f %%\n"
                    "[4/4] fine-tuning the CRU-Net for %lld epochs ...\n", 100 * r.acc_src,
                    100 * r.acc_cru, ft_epochs);
    double acc_ft = r.acc_cru, t_ft = 0, ft_epoch_s = 0;
    if (ft_epochs > 0) {
        gbtd_cru_finetune_opts fo = gbtd_cru_finetune_opts_default();
        const float *m, *s;
        cru_cli_norm(&r, &m, &s);
        fo.mean = m;
        fo.std = s;
        fo.epochs = (int)ft_epochs;
        fo.new_first = (int)new_first;
        fo.max_steps = ft_steps;
        fo.batch = (int)batch;
        fo.lr = lr_ft;
        fo.seed = o.seed;
        fo.test_limit = o.limit;
        fo.teacher = distill ? &r.src : NULL;
        if (!strcmp(o.data, "cifar10")) {
            fo.crop_pad = 4;
            fo.flip = true;
        }
        fo.on_epoch = cru_demo_ft_epoch_;
        fo.on_step = cru_demo_step_;
        fo.ctx = (void *)&q;
        gbtd_cru_epoch_info ei;
        t0 = cli_now();
        rc = gbtd_cru_finetune(&r.cru, &r.tr, &r.te, &fo, &ei);
        t_ft = cli_now() - t0;
        if (rc) {
            cru_run_free(&r);
            return cli_fail("demo", rc, "fine-tuning failed");
        }
        acc_ft = ei.test_top1;
        ft_epoch_s = ei.seconds;
    }
    const double total = cli_now() - t_start;
    int64_t before = 0, after = 0;
    for (int s = 0; s < r.nstages; s++) {
        before += r.st[s].params_before;
        after += r.st[s].params_after;
    }
    if (o.json) {
        char extra[1024];
        snprintf(extra, sizeof extra, "\"data\": \"%s\", \"source_spec\": \"%s\", \"top1_finetuned\": %.4f, "
                 "\"seconds_train\": %.3f, \"seconds_compress\": %.3f, \"seconds_finetune\": %.3f, "
                 "\"seconds_per_finetune_epoch\": %.3f, \"seconds_total\": %.3f, \"test_images\": %lld",
                 o.data, spec, 100 * acc_ft, t_train, t_compress, t_ft, ft_epoch_s, total,
                 (long long)(o.limit < r.te.n ? o.limit : r.te.n));
        cru_cli_print(&o, &r, weights, NULL, extra);
    } else {
        printf("gbtd demo: the CRU pipeline on %s (%lld test images)\n", o.data,
               (long long)(o.limit < r.te.n ? o.limit : r.te.n));
        printf("source network: %s\n\n", spec);
        cru_cli_print(&o, &r, NULL, NULL, NULL);
        printf("\n%-34s %12s %12s %10s\n", "", "parameters", "test top-1", "time (s)");
        printf("%-34s %12lld %11.2f%% %10.1f\n", weights ? "source (loaded)" : "source (trained)",
               (long long)r.src.nparams, 100 * r.acc_src, t_train);
        /* as built, then after each data-driven step that ran (refit, batch-norm statistics) */
        const double built = r.acc_built >= 0 ? r.acc_built : r.acc_raw;
        const bool stepped = built >= 0;
        if (stepped)
            printf("%-34s %12lld %11.2f%% %10.1f\n", "CRU-Net as built", (long long)r.cru.nparams,
                   100 * built, t_compress - r.t_bn - r.t_refit);
        if (r.acc_built >= 0)
            printf("%-34s %12lld %11.2f%% %10.1f\n", "CRU-Net, response refit",
                   (long long)r.cru.nparams, 100 * (r.acc_raw >= 0 ? r.acc_raw : r.acc_cru),
                   r.t_refit);
        if (r.acc_raw >= 0 || !stepped)
            printf("%-34s %12lld %11.2f%% %10.1f\n",
                   stepped ? "CRU-Net, batch norm re-estimated" : "CRU-Net before fine-tuning",
                   (long long)r.cru.nparams, 100 * r.acc_cru, stepped ? r.t_bn : t_compress);
        printf("%-34s %12lld %11.2f%% %10.1f\n", "CRU-Net after fine-tuning",
               (long long)r.cru.nparams, 100 * acc_ft, t_ft);
        printf("factored stages: conv parameters %lld -> %lld (%.1f %%); total time %.1f s\n",
               (long long)before, (long long)after, 100.0 * (double)after / (double)before, total);
    }
    cru_run_free(&r);
    return EXIT_OK;
}

int cmd_demo(int argc, char **argv)
{
    bool tensors = false;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--tensors") || !strcmp(argv[i], "--shape") ||
            !strcmp(argv[i], "--reps"))
            tensors = true;
    if (!tensors) return demo_cru(argc, argv);
    /* drop --tensors and run the tensor-operations demo */
    char **args = malloc((size_t)(argc + 1) * sizeof *args);
    if (!args) return cli_fail("demo", GBTD_ENOMEM, "out of memory");
    int n = 0;
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--tensors")) args[n++] = argv[i];
    args[n] = NULL;
    int st = demo_tensors(n, args);
    free(args);
    return st;
}
