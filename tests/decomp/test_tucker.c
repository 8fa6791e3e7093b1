/* Tests of lib/decomp/tucker: exactness at full rank, the norm identity, planted subspaces
 * recovered by HOOI, partial Tucker (Tucker-2), ranks from an error target (closed form),
 * stopping rules, every error path, and allocation failures. */
#include "check.h"
#include "decomp/metrics.h"
#include "decomp/tc_internal.h"
#include "decomp/tucker.h"

static gbtd_rng *rng;

static void random_tensor(gbtd_tensor *t, int ndim, const int64_t *shape)
{
    gbtd_tensor_alloc(t, ndim, shape);
    gbtd_tensor_fill_normal(t, rng, 0.0, 1.0);
}

/* X = G x_k U_k with random orthonormal U_k (I_k x R_k) on the listed modes; returns factors. */
static void planted(gbtd_tensor *x, int ndim, const int64_t *shape, const int *modes, int nm,
                    const int64_t *ranks, gbtd_tensor *u)
{
    int64_t cs[GBTD_MAX_MODES];
    memcpy(cs, shape, sizeof(int64_t) * (size_t)ndim);
    for (int k = 0; k < nm; k++) cs[modes[k]] = ranks[k];
    gbtd_tensor g;
    random_tensor(&g, ndim, cs);
    const gbtd_tensor *up[GBTD_MAX_MODES];
    for (int k = 0; k < nm; k++) {
        gbtd_matrix_alloc(&u[k], shape[modes[k]], ranks[k]);
        gbtd_tensor_fill_normal(&u[k], rng, 0.0, 1.0);
        up[k] = &u[k];
    }
    gbtd_multi_ttm_alloc(&g, up, modes, nm, GBTD_NOTRANS, x);
    gbtd_tensor_free(&g);
}

static double orth_defect(const gbtd_tensor *u)
{
    gbtd_tensor g;
    gbtd_matrix_alloc(&g, u->shape[1], u->shape[1]);
    gbtd_gemm(GBTD_TRANS, GBTD_NOTRANS, 1.0, u, u, 0.0, &g);
    double m = 0.0;
    for (int64_t i = 0; i < g.shape[0]; i++)
        for (int64_t j = 0; j < g.shape[1]; j++)
            m = fmax(m, fabs(g.data[i * g.shape[1] + j] - (i == j ? 1.0 : 0.0)));
    gbtd_tensor_free(&g);
    return m;
}

static int stop_at_two(int iter, double e, double t, void *ctx)
{
    (void)e;
    (void)t;
    (*(int *)ctx)++;
    return iter >= 2;
}

static void test_full_rank(void)
{
    const int64_t shape[3] = {4, 5, 6};
    gbtd_tensor x, xh;
    random_tensor(&x, 3, shape);
    gbtd_tucker t = {0};
    gbtd_decomp_info info;
    gbtd_decomp_info_init(&info);
    CHECK_OK(gbtd_tucker_hosvd(&x, shape, &t, NULL, &info), "full-rank hosvd runs");
    CHECK_OK(gbtd_tucker_reconstruct_alloc(&t, &xh), "full-rank reconstruct");
    double d = 1.0;
    gbtd_tensor_max_abs_diff(&x, &xh, &d);
    /* Orthogonal 6x6 transforms applied and undone: rounding ~ a few hundred eps x max|X|. */
    CHECK_LE(d, 200 * DBL_EPSILON * 5.0, "full-rank Tucker reconstructs X exactly");
    CHECK_LE(info.rel_error, 1e-13, "full-rank Tucker reports zero error");
    CHECK(info.stop == GBTD_STOP_EXACT && info.iterations == 0, "hosvd: no iterations, stop exact");
    CHECK(gbtd_tucker_param_count(&t) == 120 + 16 + 25 + 36, "param count = core + factors");
    gbtd_tensor_free(&xh);
    gbtd_tucker_free(&t);
    gbtd_decomp_info_free(&info);
    gbtd_tensor_free(&x);
}

static void test_identity(void)
{
    const int64_t shape[3] = {6, 7, 8}, ranks[3] = {2, 3, 4};
    gbtd_tensor x, xh;
    random_tensor(&x, 3, shape);
    gbtd_tucker t = {0};
    gbtd_decomp_info info;
    gbtd_decomp_info_init(&info);
    CHECK_OK(gbtd_tucker_hosvd(&x, ranks, &t, NULL, &info), "truncated hosvd runs");
    double worst = 0.0;
    for (int k = 0; k < 3; k++) worst = fmax(worst, orth_defect(&t.factors[k]));
    CHECK_LE(worst, 1e-13, "hosvd factors orthonormal (|U^T U - I| <= 1e-13)");
    gbtd_tucker_reconstruct_alloc(&t, &xh);
    gbtd_tensor_axpy(-1.0, &x, &xh);
    const double e2 = gbtd_tensor_norm(&xh) * gbtd_tensor_norm(&xh);
    const double nx = gbtd_tensor_norm(&x), ng = gbtd_tensor_norm(&t.core);
    /* ||X||^2 ~ 336: both sides carry ~numel eps ||X||^2 of rounding. */
    CHECK_CLOSE(e2, nx * nx - ng * ng, 1e-11 * nx * nx, 0.0,
                "||X - X_hat||^2 = ||X||^2 - ||G||^2 (orthonormal factors)");
    CHECK_CLOSE(info.rel_error, sqrt(e2) / nx, 0.0, 1e-10, "reported error matches the explicit one");
    gbtd_tensor_free(&xh);

    /* HOOI improves on the HOSVD it starts from, monotonically. */
    gbtd_tucker th = {0};
    gbtd_decomp_info ih;
    gbtd_decomp_info_init(&ih);
    gbtd_tucker_opts o = gbtd_tucker_opts_default();
    o.tol = 1e-12;
    CHECK_OK(gbtd_tucker_hooi(&x, ranks, &th, &o, &ih), "hooi on a random tensor");
    CHECK_LE(ih.rel_error, info.rel_error + 1e-14, "hooi error <= hosvd error");
    int mono = 1;
    for (int i = 1; i < ih.history_len; i++)
        mono &= ih.error_history[i] <= ih.error_history[i - 1] + 1e-13;
    CHECK(mono, "hooi error history non-increasing");
    CHECK(ih.history_len == ih.iterations && ih.iterations >= 1, "history length = iterations");
    gbtd_tucker_reconstruct_alloc(&th, &xh);
    double ex;
    gbtd_relative_error(&x, &xh, &ex);
    CHECK_CLOSE(ih.rel_error, ex, 0.0, 1e-10, "hooi error (identity) = explicit error");
    gbtd_tensor_free(&xh);
    gbtd_tucker_free(&th);
    gbtd_decomp_info_free(&ih);
    gbtd_tucker_free(&t);
    gbtd_decomp_info_free(&info);
    gbtd_tensor_free(&x);
}

static void test_planted(void)
{
    const int64_t shape[3] = {20, 25, 30}, ranks[3] = {3, 4, 5};
    const int modes[3] = {0, 1, 2};
    gbtd_tensor x, u[3];
    planted(&x, 3, shape, modes, 3, ranks, u);
    gbtd_tucker t = {0};
    gbtd_decomp_info info;
    gbtd_decomp_info_init(&info);
    gbtd_tucker_opts o = gbtd_tucker_opts_default();
    o.init = GBTD_TUCKER_INIT_RANDOM; /* HOOI itself must find the subspaces */
    o.seed = 7;
    CHECK_OK(gbtd_tucker_hooi(&x, ranks, &t, &o, &info), "hooi on a planted Tucker tensor");
    double worst = 0.0;
    for (int k = 0; k < 3; k++) {
        double s = 1.0;
        gbtd_subspace_sin_angle(&u[k], &t.factors[k], &s);
        worst = fmax(worst, s);
    }
    /* Exact low-rank data: the angles are rounding-level (eigenvector error ~ eps cond). */
    CHECK_LE(worst, 1e-9, "hooi (random start) recovers planted subspaces: sin(angle) <= 1e-9");
    CHECK_LE(info.rel_error, 1e-10, "planted Tucker fitted to rounding");
    CHECK(info.stop == GBTD_STOP_EXACT, "planted Tucker stops at the precision floor");

    /* 1 % noise: angles of the order of the noise. */
    gbtd_tensor n;
    random_tensor(&n, 3, shape);
    gbtd_tensor_scale(&n, 0.01 * gbtd_tensor_norm(&x) / gbtd_tensor_norm(&n));
    gbtd_tensor_axpy(1.0, &n, &x);
    gbtd_tucker t2 = {0};
    CHECK_OK(gbtd_tucker_hooi(&x, ranks, &t2, NULL, &info), "hooi on a noisy planted tensor");
    worst = 0.0;
    for (int k = 0; k < 3; k++) {
        double s = 1.0;
        gbtd_subspace_sin_angle(&u[k], &t2.factors[k], &s);
        worst = fmax(worst, s);
    }
    CHECK_LE(worst, 0.05, "noisy planted subspaces within 0.05 (noise 1%)");
    /* The fit cannot beat the noise; it removes only the part inside the model (~3% of dof). */
    CHECK(info.rel_error <= 0.01 && info.rel_error >= 0.009, "noisy error at the noise level");
    gbtd_tucker_free(&t2);
    gbtd_tensor_free(&n);
    for (int k = 0; k < 3; k++) gbtd_tensor_free(&u[k]);
    gbtd_tucker_free(&t);
    gbtd_decomp_info_free(&info);
    gbtd_tensor_free(&x);
}

static void test_partial(void)
{
    /* Tucker-2 of a conv kernel 3x3xC_inxC_out on the channel modes. */
    const int64_t shape[4] = {3, 3, 16, 20}, ranks[2] = {5, 4};
    const int modes[2] = {3, 2}; /* any order: ranks follow their modes */
    const int pm[2] = {2, 3};
    const int64_t pr[2] = {4, 5};
    gbtd_tensor x, u[2], xh;
    planted(&x, 4, shape, pm, 2, pr, u);
    gbtd_tucker t = {0};
    gbtd_decomp_info info;
    gbtd_decomp_info_init(&info);
    CHECK_OK(gbtd_tucker_partial_hooi(&x, modes, 2, ranks, &t, NULL, &info), "tucker-2 runs");
    CHECK(t.nmodes == 2 && t.modes[0] == 2 && t.modes[1] == 3, "tucker-2 modes sorted");
    CHECK(t.core.ndim == 4 && t.core.shape[0] == 3 && t.core.shape[1] == 3 &&
              t.core.shape[2] == 4 && t.core.shape[3] == 5,
          "tucker-2 core is 3x3x4x5");
    CHECK_LE(info.rel_error, 1e-10, "tucker-2 of a planted kernel is exact");
    double s0 = 1, s1 = 1;
    gbtd_subspace_sin_angle(&u[0], &t.factors[0], &s0);
    gbtd_subspace_sin_angle(&u[1], &t.factors[1], &s1);
    CHECK_LE(fmax(s0, s1), 1e-9, "tucker-2 recovers the channel subspaces");
    gbtd_tucker_reconstruct_alloc(&t, &xh);
    double e;
    gbtd_relative_error(&x, &xh, &e);
    CHECK_LE(e, 1e-10, "tucker-2 reconstruction matches X");
    gbtd_tensor_free(&xh);
    gbtd_tucker_free(&t);

    /* Partial HOSVD on one mode = projection on its leading left singular vectors. */
    const int m1[1] = {3};
    const int64_t r1[1] = {3};
    CHECK_OK(gbtd_tucker_partial_hosvd(&x, m1, 1, r1, &t, NULL, &info), "partial hosvd one mode");
    gbtd_tensor ul;
    gbtd_leading_singular_vectors(&x, 3, 3, &ul, NULL);
    double s = 1;
    gbtd_subspace_sin_angle(&ul, &t.factors[0], &s);
    CHECK_LE(s, 1e-10, "partial hosvd factor = leading singular subspace (via the 576 Gram)");
    CHECK_LE(orth_defect(&t.factors[0]), 1e-13, "factor from the smaller Gram is orthonormal");
    gbtd_tensor_free(&ul);
    gbtd_tucker_free(&t);

    /* Non-contiguous input (a permuted view) gives the same error as its contiguous copy. */
    const int perm[4] = {0, 1, 3, 2};
    gbtd_tensor v, vc;
    gbtd_tensor_view_permute(&x, perm, &v);
    gbtd_tensor_clone(&vc, &v);
    gbtd_tensor_fill_normal(&x, rng, 0.0, 1.0); /* changes v too */
    gbtd_tensor_copy(&vc, &v);
    const int m2[2] = {2, 3};
    const int64_t r2[2] = {6, 7};
    double ea, eb;
    CHECK_OK(gbtd_tucker_partial_hooi(&v, m2, 2, r2, &t, NULL, &info), "partial hooi on a view");
    ea = info.rel_error;
    gbtd_tucker_free(&t);
    CHECK_OK(gbtd_tucker_partial_hooi(&vc, m2, 2, r2, &t, NULL, &info), "partial hooi on a copy");
    eb = info.rel_error;
    CHECK_CLOSE(ea, eb, 0.0, 1e-12, "strided view and copy give the same error");
    gbtd_tucker_free(&t);
    gbtd_tensor_free(&vc);
    for (int k = 0; k < 2; k++) gbtd_tensor_free(&u[k]);
    gbtd_decomp_info_free(&info);
    gbtd_tensor_free(&x);
}

static void test_error_target(void)
{
    /* Superdiagonal tensor with s = (4, 3, 2, 1): every unfolding has singular values s, so
     * with target t the per-mode budget is t^2 * 30 / 3; t = 0.35 allows dropping 1 only. */
    const int64_t shape[3] = {4, 4, 4};
    gbtd_tensor x;
    gbtd_tensor_alloc(&x, 3, shape);
    for (int i = 0; i < 4; i++) x.data[i * 16 + i * 4 + i] = 4.0 - i;
    const int modes[3] = {0, 1, 2};
    int64_t r[3] = {0, 0, 0};
    CHECK_OK(gbtd_tucker_ranks_for_error(&x, modes, 3, 0.35, r), "ranks_for_error runs");
    CHECK(r[0] == 3 && r[1] == 3 && r[2] == 3, "ranks (3,3,3) for target 0.35 (closed form)");
    gbtd_tucker t = {0};
    gbtd_decomp_info info;
    gbtd_decomp_info_init(&info);
    gbtd_tucker_opts o = gbtd_tucker_opts_default();
    o.error_target = 0.35;
    CHECK_OK(gbtd_tucker_hosvd(&x, NULL, &t, &o, &info), "hosvd with an error target");
    CHECK_CLOSE(info.rel_error, 1.0 / sqrt(30.0), 0.0, 1e-12, "error = 1/sqrt(30) (closed form)");
    gbtd_tucker_free(&t);

    /* On a random tensor, the chosen ranks meet the target. */
    const int64_t s2[3] = {10, 12, 14};
    gbtd_tensor y;
    random_tensor(&y, 3, s2);
    o.error_target = 0.5;
    CHECK_OK(gbtd_tucker_hosvd(&y, NULL, &t, &o, &info), "hosvd target 0.5 on noise");
    CHECK_LE(info.rel_error, 0.5, "hosvd error <= target");
    CHECK(t.factors[0].shape[1] < 10 && t.factors[2].shape[1] < 14, "ranks below full");
    gbtd_tucker_free(&t);
    gbtd_tensor_free(&y);
    gbtd_decomp_info_free(&info);
    gbtd_tensor_free(&x);
}

static void test_stopping(void)
{
    const int64_t shape[3] = {10, 11, 12}, ranks[3] = {3, 3, 3};
    gbtd_tensor x;
    random_tensor(&x, 3, shape);
    gbtd_tucker t = {0};
    gbtd_decomp_info info;
    gbtd_decomp_info_init(&info);
    gbtd_tucker_opts o = gbtd_tucker_opts_default();
    o.tol = 0.0;
    o.max_iter = 3;
    CHECK_OK(gbtd_tucker_hooi(&x, ranks, &t, &o, &info), "hooi max_iter 3");
    CHECK(info.iterations == 3 && info.stop == GBTD_STOP_MAX_ITER && info.history_len == 3,
          "stops after max_iter with one history entry per sweep");
    gbtd_tucker_free(&t);
    int calls = 0;
    o.max_iter = 50;
    o.callback = stop_at_two;
    o.callback_ctx = &calls;
    CHECK_OK(gbtd_tucker_hooi(&x, ranks, &t, &o, &info), "hooi with callback");
    CHECK(calls == 2 && info.iterations == 2 && info.stop == GBTD_STOP_CALLBACK,
          "callback asked to stop after 2 sweeps");
    gbtd_tucker_free(&t);
    o.callback = NULL;
    o.time_budget = 1e-12;
    CHECK_OK(gbtd_tucker_hooi(&x, ranks, &t, &o, &info), "hooi with a time budget");
    CHECK(info.iterations == 1 && info.stop == GBTD_STOP_TIME, "time budget stops after sweep 1");
    gbtd_tucker_free(&t);
    o = gbtd_tucker_opts_default();
    o.tol = 1e-3;
    CHECK_OK(gbtd_tucker_hooi(&x, ranks, &t, &o, &info), "hooi tol 1e-3");
    CHECK(info.stop == GBTD_STOP_TOL, "stops on the relative change");
    const int n = info.history_len;
    CHECK(n >= 2 && fabs(info.error_history[n - 2] - info.error_history[n - 1]) <=
                        1e-3 * info.error_history[n - 2],
          "last change below tol");
    gbtd_tucker_free(&t);
    gbtd_decomp_info_free(&info);
    gbtd_tensor_free(&x);
}

static void test_errors(void)
{
    const int64_t shape[3] = {4, 5, 6};
    gbtd_tensor x;
    random_tensor(&x, 3, shape);
    gbtd_tucker t = {0};
    const int64_t big[3] = {4, 6, 2}, zero[3] = {0, 2, 2}, ok[3] = {2, 2, 2};
    CHECK_STATUS(gbtd_tucker_hooi(&x, big, &t, NULL, NULL), GBTD_ERANGE, "rank > dimension refused");
    CHECK_STATUS(gbtd_tucker_hosvd(&x, zero, &t, NULL, NULL), GBTD_ERANGE, "rank 0 refused");
    CHECK_STATUS(gbtd_tucker_hooi(&x, NULL, &t, NULL, NULL), GBTD_EINVAL, "no ranks, no target");
    const int bad_mode[2] = {1, 3};
    CHECK_STATUS(gbtd_tucker_partial_hooi(&x, bad_mode, 2, ok, &t, NULL, NULL), GBTD_ERANGE,
                 "mode 3 of a 3-way tensor refused");
    const int neg_mode[1] = {-1};
    CHECK_STATUS(gbtd_tucker_partial_hosvd(&x, neg_mode, 1, ok, &t, NULL, NULL), GBTD_ERANGE,
                 "negative mode refused");
    const int twice[2] = {1, 1};
    CHECK_STATUS(gbtd_tucker_partial_hooi(&x, twice, 2, ok, &t, NULL, NULL), GBTD_EINVAL,
                 "repeated mode refused");
    gbtd_tucker_opts o = gbtd_tucker_opts_default();
    o.max_iter = 0;
    CHECK_STATUS(gbtd_tucker_hooi(&x, ok, &t, &o, NULL), GBTD_EINVAL, "zero iterations refused");
    o = gbtd_tucker_opts_default();
    o.tol = NAN;
    CHECK_STATUS(gbtd_tucker_hooi(&x, ok, &t, &o, NULL), GBTD_EINVAL, "NaN tol refused");
    gbtd_tensor z;
    gbtd_tensor_alloc(&z, 3, shape);
    CHECK_STATUS(gbtd_tucker_hooi(&z, ok, &t, NULL, NULL), GBTD_EINVAL, "zero tensor refused");
    z.data[7] = NAN;
    CHECK_STATUS(gbtd_tucker_hosvd(&z, ok, &t, NULL, NULL), GBTD_ENONFINITE, "NaN input refused");
    z.data[7] = INFINITY;
    CHECK_STATUS(gbtd_tucker_hooi(&z, ok, &t, NULL, NULL), GBTD_ENONFINITE, "Inf input refused");
    CHECK_STATUS(gbtd_tucker_hooi(NULL, ok, &t, NULL, NULL), GBTD_EINVAL, "NULL tensor refused");
    CHECK_STATUS(gbtd_tucker_hooi(&x, ok, NULL, NULL, NULL), GBTD_EINVAL, "NULL output refused");
    const int all[3] = {0, 1, 2};
    int64_t r[3];
    CHECK_STATUS(gbtd_tucker_ranks_for_error(&x, all, 3, 0.0, r), GBTD_EINVAL, "target 0 refused");
    CHECK_STATUS(gbtd_tucker_reconstruct_alloc(&t, &z), GBTD_EINVAL, "reconstruct of empty model");
    CHECK(t.core.data == NULL, "failed calls leave the output empty");
    gbtd_tensor_free(&z);
    gbtd_tensor_free(&x);
}

static void test_alloc_failures(void)
{
    const int64_t shape[4] = {3, 3, 8, 12}, ranks[4] = {2, 2, 3, 4};
    gbtd_tensor x;
    random_tensor(&x, 4, shape);
    check_alloc_install();
    const char *names[5] = {"hosvd", "hooi", "partial_hooi", "ranks_for_error", "reconstruct"};
    for (int which = 0; which < 5; which++) {
        int ok_all = 1, reached = 0;
        for (long n = 0; n < 500; n++) {
            gbtd_tucker t = {0};
            gbtd_decomp_info info;
            gbtd_decomp_info_init(&info);
            gbtd_tucker_opts o = gbtd_tucker_opts_default();
            o.max_iter = 3;
            const long live = check_alloc_live();
            gbtd_tensor y = {0};
            gbtd_tucker base = {0};
            const int modes[2] = {2, 3};
            const int64_t pr[2] = {3, 4};
            int64_t rr[4];
            const int all[4] = {0, 1, 2, 3};
            if (which == 4) {
                check_alloc_fail_after(-1);
                gbtd_tucker_hosvd(&x, ranks, &base, NULL, NULL);
            }
            const long live2 = check_alloc_live();
            check_alloc_fail_after(n);
            int rc;
            switch (which) {
            case 0: rc = gbtd_tucker_hosvd(&x, ranks, &t, &o, &info); break;
            case 1: rc = gbtd_tucker_hooi(&x, ranks, &t, &o, &info); break;
            case 2: rc = gbtd_tucker_partial_hooi(&x, modes, 2, pr, &t, &o, &info); break;
            case 3: rc = gbtd_tucker_ranks_for_error(&x, all, 4, 0.5, rr); break;
            default: rc = gbtd_tucker_reconstruct_alloc(&base, &y); break;
            }
            check_alloc_fail_after(-1);
            if (rc == GBTD_OK) {
                reached = 1;
                gbtd_tucker_free(&t);
                gbtd_tucker_free(&base);
                gbtd_tensor_free(&y);
                gbtd_decomp_info_free(&info);
                ok_all &= check_alloc_live() == live;
                break;
            }
            ok_all &= rc == GBTD_ENOMEM && check_alloc_live() == live2;
            gbtd_tucker_free(&base);
            gbtd_decomp_info_free(&info);
        }
        char name[96];
        snprintf(name, sizeof name, "%s: every allocation failure -> ENOMEM, no leak", names[which]);
        CHECK(ok_all && reached, name);
    }
    gbtd_set_allocator(NULL);
    gbtd_tensor_free(&x);
}

/* out (rows x cols, row-major) = Q diag(d) P^T for Q (rows x k) and P (cols x k), row-major. */
static void q_diag_pt_(const gbtd_tensor *q, const double *d, const gbtd_tensor *p, double *out)
{
    const int64_t rows = q->shape[0], k = q->shape[1], cols = p->shape[0];
    for (int64_t i = 0; i < rows; i++)
        for (int64_t c = 0; c < cols; c++) {
            double v = 0.0;
            for (int64_t j = 0; j < k; j++) v += q->data[i * k + j] * d[j] * p->data[c * k + j];
            out[i * cols + c] = v;
        }
}

/* The eigensolver's paths (lib/decomp/tucker.c: tridiagonalisation, dsterf + inverse iteration
 * for the wanted vectors, MRRR when the tridiagonal matrix splits), through the mode-0 factor of
 * a partial HOSVD of X with X_(0) = Q diag(s) P^T (Q, P orthonormal): the factor must span the
 * columns of Q belonging to the largest s. Subspace angle bound 1e-10: backward-stable
 * eigenvectors of a Gram with gap >= 5 (relative to s_max^2 = 9) are accurate to about
 * n eps / gap ~ 1e-14; 1e-10 leaves room for the squared condition of the Gram path. */
static void test_eigen_paths(void)
{
    const int64_t shape[3] = {12, 5, 6}, cols = 30, n = 12;
    gbtd_tensor q, p, x, qs;
    gbtd_matrix_alloc(&q, n, n);
    gbtd_matrix_alloc(&p, cols, n);
    gbtd_tensor_alloc(&x, 3, shape);
    const double sv[12] = {3, 3, 3, 2, 2, 1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4};
    for (int variant = 0; variant < 2; variant++) {
        /* variant 0: Q = identity (the Gram is diagonal: the tridiagonal matrix splits, MRRR);
         * variant 1: Q random (unreduced; the wanted triple eigenvalue 9 is a cluster that
         * inverse iteration must orthogonalise). */
        gbtd_tensor_fill_normal(&p, rng, 0.0, 1.0);
        gbtd_tc_orthonormalize(&p);
        if (variant == 0) {
            gbtd_tensor_fill(&q, 0.0);
            for (int64_t i = 0; i < n; i++) q.data[i * n + i] = 1.0;
        } else {
            gbtd_tensor_fill_normal(&q, rng, 0.0, 1.0);
            gbtd_tc_orthonormalize(&q);
        }
        /* x (12 x 30 as the mode-0 unfolding) = Q diag(sv) P^T */
        q_diag_pt_(&q, sv, &p, x.data);
        const int m0[1] = {0};
        const int64_t r0[1] = {3};
        gbtd_tucker t = {0};
        CHECK_OK(gbtd_tucker_partial_hosvd(&x, m0, 1, r0, &t, NULL, NULL),
                 variant ? "hosvd, clustered eigenvalues" : "hosvd, split tridiagonal");
        gbtd_matrix_alloc(&qs, n, 3);
        for (int64_t i = 0; i < n; i++)
            for (int64_t k = 0; k < 3; k++) qs.data[i * 3 + k] = q.data[i * n + k];
        double s = 1.0;
        gbtd_subspace_sin_angle(&qs, &t.factors[0], &s);
        CHECK_LE(s, 1e-10, variant ? "cluster of 3 equal eigenvalues: exact subspace"
                                   : "split tridiagonal: exact subspace (the unit vectors)");
        CHECK_LE(orth_defect(&t.factors[0]), 1e-13,
                 variant ? "cluster: orthonormal factor" : "split: orthonormal factor");
        gbtd_tensor_free(&qs);
        gbtd_tucker_free(&t);
    }
    gbtd_tensor_free(&q);
    gbtd_tensor_free(&p);
    gbtd_tensor_free(&x);
}

/* gbtd_sym_eig_top (lib/linalg/svd.c, the eigensolver of the BTD start and of
 * gbtd_leading_singular_vectors): A = Q diag(lambda) Q^T with a known spectrum. Checks: all
 * eigenvalues (decreasing) to 1e-12 ||A|| (backward-stable tridiagonal QR: O(n eps ||A||)),
 * residuals ||A v - lambda v|| <= 1e-12 ||A|| and orthonormality 1e-12 for the r vectors, the
 * span of the r leading columns of Q (gap >= 1 against ||A|| = 40: angle ~ n eps ||A|| / gap),
 * on the unreduced path (random Q, with a double eigenvalue inside the wanted range), on a
 * diagonal A (split tridiagonal: MRRR), with r = n, and every error path. */
static void test_sym_eig_top(void)
{
    const int64_t n = 40, r = 9;
    gbtd_tensor q, a, v, qs;
    gbtd_matrix_alloc(&q, n, n);
    gbtd_matrix_alloc(&a, n, n);
    gbtd_matrix_alloc(&v, n, n);
    double lam[40], ev[40];
    for (int64_t i = 0; i < n; i++) lam[i] = 40.0 - (double)i; /* 40, 39, ..., 1 */
    lam[3] = lam[2];                                              /* a double eigenvalue */
    for (int variant = 0; variant < 3; variant++) {
        const int64_t rr = variant == 2 ? n : r;
        if (variant == 1) {
            gbtd_tensor_fill(&q, 0.0);
            for (int64_t i = 0; i < n; i++) q.data[i * n + (n - 1 - i)] = 1.0; /* diagonal A */
        } else {
            gbtd_tensor_fill_normal(&q, rng, 0.0, 1.0);
            gbtd_tc_orthonormalize(&q);
        }
        q_diag_pt_(&q, lam, &q, a.data);
        gbtd_tensor work;
        gbtd_tensor_clone(&work, &a);
        for (int64_t i = 0; i < n; i++) /* only the upper triangle may be read */
            for (int64_t j = 0; j < i; j++) work.data[i * n + j] = NAN;
        const char *vn[3] = {"random Q", "diagonal A (split)", "r = n"};
        char name[128];
        snprintf(name, sizeof name, "sym_eig_top, %s: runs", vn[variant]);
        CHECK_OK(gbtd_sym_eig_top(work.data, n, rr, ev, v.data, n), name);
        double de = 0.0, res = 0.0, orth = 0.0;
        for (int64_t i = 0; i < n; i++) de = fmax(de, fabs(ev[i] - lam[i]));
        for (int64_t c = 0; c < rr; c++) {
            for (int64_t i = 0; i < n; i++) {
                double s = 0.0;
                for (int64_t k = 0; k < n; k++) s += a.data[i * n + k] * v.data[k * n + c];
                res = fmax(res, fabs(s - ev[c] * v.data[i * n + c]));
            }
            for (int64_t d = 0; d <= c; d++) {
                double s = 0.0;
                for (int64_t i = 0; i < n; i++) s += v.data[i * n + c] * v.data[i * n + d];
                orth = fmax(orth, fabs(s - (c == d ? 1.0 : 0.0)));
            }
        }
        snprintf(name, sizeof name, "sym_eig_top, %s: all eigenvalues, decreasing", vn[variant]);
        CHECK_LE(de, 1e-12 * 40.0, name);
        snprintf(name, sizeof name, "sym_eig_top, %s: residuals of the r pairs", vn[variant]);
        CHECK_LE(res, 1e-12 * 40.0, name);
        snprintf(name, sizeof name, "sym_eig_top, %s: orthonormal vectors", vn[variant]);
        CHECK_LE(orth, 1e-12, name);
        gbtd_matrix_alloc(&qs, n, r);
        gbtd_tensor vr;
        gbtd_matrix_alloc(&vr, n, r);
        for (int64_t i = 0; i < n; i++)
            for (int64_t k = 0; k < r; k++) {
                qs.data[i * r + k] = q.data[i * n + k];
                vr.data[i * r + k] = v.data[i * n + k];
            }
        double sa = 1.0;
        gbtd_subspace_sin_angle(&qs, &vr, &sa);
        snprintf(name, sizeof name, "sym_eig_top, %s: leading subspace", vn[variant]);
        CHECK_LE(sa, 1e-12, name);
        gbtd_tensor_free(&qs);
        gbtd_tensor_free(&vr);
        gbtd_tensor_free(&work);
    }
    /* Error paths. */
    CHECK_STATUS(gbtd_sym_eig_top(a.data, n, n + 1, NULL, v.data, n + 1), GBTD_ERANGE,
                 "sym_eig_top: r > n refused");
    CHECK_STATUS(gbtd_sym_eig_top(a.data, n, 0, NULL, v.data, n), GBTD_ERANGE,
                 "sym_eig_top: r = 0 refused");
    CHECK_STATUS(gbtd_sym_eig_top(a.data, n, r, NULL, v.data, r - 1), GBTD_EINVAL,
                 "sym_eig_top: leading dimension < r refused");
    CHECK_STATUS(gbtd_sym_eig_top(NULL, n, r, NULL, v.data, r), GBTD_EINVAL,
                 "sym_eig_top: NULL matrix refused");
    a.data[5 * n + 7] = INFINITY;
    CHECK_STATUS(gbtd_sym_eig_top(a.data, n, r, NULL, v.data, r), GBTD_ENONFINITE,
                 "sym_eig_top: Inf entry refused");
    /* Every allocation failure gives ENOMEM and leaks nothing. */
    int ok_all = 1, reached = 0;
    check_alloc_install();
    for (long k = 0; k < 20 && !reached; k++) {
        gbtd_tensor_fill(&a, 0.0);
        for (int64_t i = 0; i < n; i++) a.data[i * n + i] = lam[i] + 0.01 * (double)(i % 3);
        for (int64_t i = 0; i + 1 < n; i++) a.data[i * n + i + 1] = 0.5;
        const long live = check_alloc_live();
        check_alloc_fail_after(k);
        const int rc = gbtd_sym_eig_top(a.data, n, r, NULL, v.data, n);
        check_alloc_fail_after(-1);
        if (rc == GBTD_OK) reached = 1;
        else ok_all &= rc == GBTD_ENOMEM;
        ok_all &= check_alloc_live() == live;
    }
    gbtd_set_allocator(NULL);
    CHECK(ok_all && reached, "sym_eig_top: every allocation failure -> ENOMEM, no leak");
    gbtd_tensor_free(&q);
    gbtd_tensor_free(&a);
    gbtd_tensor_free(&v);
}

int main(void)
{
    gbtd_rng_alloc(12345, &rng);
    test_full_rank();
    test_identity();
    test_planted();
    test_partial();
    test_eigen_paths();
    test_sym_eig_top();
    test_error_target();
    test_stopping();
    test_errors();
    test_alloc_failures();
    gbtd_rng_free(rng);
    return check_finish();
}
