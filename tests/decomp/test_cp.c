/* Tests of lib/decomp/cp and metrics: planted rank-R recovery over 20 seeds (error and
 * factor-match score), noise at 30 dB SNR, the fit identity against the explicit error, init
 * and line-search variants, restarts, the factor-match score and subspace angle in closed
 * form, stopping rules, error paths and allocation failures. */
#include "check.h"
#include "decomp/cp.h"
#include "decomp/metrics.h"

static gbtd_rng *rng;

/* A planted CP model with N(0,1) factors and weights in [1, 2). */
static void planted_model(gbtd_cp *m, int nd, const int64_t *shape, int64_t r)
{
    gbtd_cp_alloc(m, nd, shape, r);
    for (int n = 0; n < nd; n++) gbtd_tensor_fill_normal(&m->factors[n], rng, 0.0, 1.0);
    gbtd_tensor_fill_uniform(&m->weights, rng, 1.0, 2.0);
}

static void test_planted_seeds(void)
{
    const int64_t shape[3] = {12, 14, 16};
    const int64_t r = 5;
    int good = 0, good_err = 0;
    double worst_fms = 1.0;
    for (int seed = 0; seed < 20; seed++) {
        gbtd_rng_seed(rng, 1000 + (uint64_t)seed);
        gbtd_cp ref = {0}, est = {0};
        planted_model(&ref, 3, shape, r);
        gbtd_tensor x;
        gbtd_cp_reconstruct_alloc(&ref, &x);
        gbtd_cp_opts o = gbtd_cp_opts_default();
        o.seed = 2000 + (uint64_t)seed;
        o.max_iter = 1000;
        gbtd_decomp_info info;
        gbtd_decomp_info_init(&info);
        double fms = 0.0;
        if (gbtd_cp_als(&x, r, &est, &o, &info) == GBTD_OK) {
            gbtd_cp_factor_match(&ref, &est, true, &fms, NULL, NULL);
            good_err += info.rel_error < 1e-8;
            good += info.rel_error < 1e-8 && fms > 0.99;
            worst_fms = fmin(worst_fms, fms);
        }
        gbtd_decomp_info_free(&info);
        gbtd_cp_free(&est);
        gbtd_cp_free(&ref);
        gbtd_tensor_free(&x);
    }
    char name[128];
    snprintf(name, sizeof name, "planted rank-5 CP of 12x14x16: %d/20 seeds with error < 1e-8 "
             "and FMS > 0.99 (need >= 19)", good);
    CHECK(good >= 19, name);
    CHECK(good_err >= 19, "planted CP: error < 1e-8 in >= 19/20 seeds");

    /* 4-way tensor exercises the general MTTKRP paths (inner modes with both neighbours). */
    const int64_t s4[4] = {6, 7, 8, 9};
    int good4 = 0;
    for (int seed = 0; seed < 5; seed++) {
        gbtd_rng_seed(rng, 3000 + (uint64_t)seed);
        gbtd_cp ref = {0}, est = {0};
        planted_model(&ref, 4, s4, 4);
        gbtd_tensor x;
        gbtd_cp_reconstruct_alloc(&ref, &x);
        gbtd_cp_opts o = gbtd_cp_opts_default();
        o.seed = (uint64_t)seed;
        gbtd_decomp_info info;
        gbtd_decomp_info_init(&info);
        double fms = 0.0;
        if (gbtd_cp_als(&x, 4, &est, &o, &info) == GBTD_OK)
            gbtd_cp_factor_match(&ref, &est, true, &fms, NULL, NULL);
        good4 += info.rel_error < 1e-8 && fms > 0.99;
        gbtd_decomp_info_free(&info);
        gbtd_cp_free(&est);
        gbtd_cp_free(&ref);
        gbtd_tensor_free(&x);
    }
    CHECK(good4 >= 4, "planted rank-4 CP of 6x7x8x9 recovered in >= 4/5 seeds");

    /* A matrix (2-way) of rank 3: the fit is exact (factors are not unique for matrices). */
    const int64_t s2[2] = {10, 12};
    gbtd_cp ref = {0}, est = {0};
    planted_model(&ref, 2, s2, 3);
    gbtd_tensor x;
    gbtd_cp_reconstruct_alloc(&ref, &x);
    gbtd_decomp_info info;
    gbtd_decomp_info_init(&info);
    CHECK_OK(gbtd_cp_als(&x, 3, &est, NULL, &info), "rank-3 CP of a matrix");
    CHECK_LE(info.rel_error, 1e-8, "matrix of rank 3 fitted exactly");
    gbtd_decomp_info_free(&info);
    gbtd_cp_free(&est);
    gbtd_cp_free(&ref);
    gbtd_tensor_free(&x);
}

static void test_variants(void)
{
    const int64_t shape[3] = {10, 11, 12};
    gbtd_rng_seed(rng, 77);
    gbtd_cp ref = {0};
    planted_model(&ref, 3, shape, 4);
    gbtd_tensor x;
    gbtd_cp_reconstruct_alloc(&ref, &x);
    const char *names[3] = {"svd init", "no line search", "svd init, no line search"};
    for (int v = 0; v < 3; v++) {
        gbtd_cp est = {0};
        gbtd_cp_opts o = gbtd_cp_opts_default();
        o.init = v != 1 ? GBTD_CP_INIT_SVD : GBTD_CP_INIT_RANDOM;
        o.line_search = v == 0;
        o.max_iter = 2000;
        gbtd_decomp_info info;
        gbtd_decomp_info_init(&info);
        double fms = 0.0;
        int rc = gbtd_cp_als(&x, 4, &est, &o, &info);
        if (rc == GBTD_OK) gbtd_cp_factor_match(&ref, &est, true, &fms, NULL, NULL);
        char name[96];
        snprintf(name, sizeof name, "%s: planted CP recovered (error < 1e-8, FMS > 0.99)", names[v]);
        CHECK(rc == GBTD_OK && info.rel_error < 1e-8 && fms > 0.99, name);
        gbtd_decomp_info_free(&info);
        gbtd_cp_free(&est);
    }
    gbtd_cp_free(&ref);
    gbtd_tensor_free(&x);
}

static void test_noise(void)
{
    /* SNR 30 dB: ||N|| = 10^(-1.5) ||X||. The least-squares fit removes the part of the noise
     * in the model's tangent space, R (sum I_n - N + 1) = 3 * 58 = 174 of 8000 dimensions, so
     * the error is sqrt(1 - 174/8000) = 0.989 of the noise (+-1% for the random draw). */
    const int64_t shape[3] = {20, 20, 20};
    gbtd_rng_seed(rng, 4242);
    gbtd_cp ref = {0}, est = {0};
    planted_model(&ref, 3, shape, 3);
    gbtd_tensor x, n;
    gbtd_cp_reconstruct_alloc(&ref, &x);
    gbtd_tensor_alloc_like(&n, &x);
    gbtd_tensor_fill_normal(&n, rng, 0.0, 1.0);
    gbtd_tensor_scale(&n, pow(10.0, -1.5) * gbtd_tensor_norm(&x) / gbtd_tensor_norm(&n));
    gbtd_tensor_axpy(1.0, &n, &x);
    const double level = gbtd_tensor_norm(&n) / gbtd_tensor_norm(&x);
    gbtd_decomp_info info;
    gbtd_decomp_info_init(&info);
    CHECK_OK(gbtd_cp_als(&x, 3, &est, NULL, &info), "CP at 30 dB SNR");
    CHECK(info.rel_error <= level && info.rel_error >= 0.975 * level,
          "30 dB: final error at the noise level (0.975..1 of it)");
    double fms = 0;
    gbtd_cp_factor_match(&ref, &est, true, &fms, NULL, NULL);
    CHECK(fms > 0.95, "30 dB: factors still match (FMS > 0.95)");
    double ex = 0;
    gbtd_cp_relative_error(&x, &est, &ex);
    CHECK_CLOSE(info.rel_error, ex, 0.0, 1e-9, "error from the identity = explicit error");
    gbtd_decomp_info_free(&info);
    gbtd_cp_free(&est);
    gbtd_cp_free(&ref);
    gbtd_tensor_free(&x);
    gbtd_tensor_free(&n);
}

static void test_random_tensor(void)
{
    /* Not low rank: the fit is poor; the identity must still equal the explicit error, the
     * history must end at the reported error, and restarts keep the best run. */
    const int64_t shape[3] = {8, 9, 10};
    gbtd_tensor x;
    gbtd_tensor_alloc(&x, 3, shape);
    gbtd_tensor_fill_normal(&x, rng, 0.0, 1.0);
    gbtd_cp est = {0};
    gbtd_decomp_info info;
    gbtd_decomp_info_init(&info);
    gbtd_cp_opts o = gbtd_cp_opts_default();
    o.max_iter = 40;
    o.tol = 0.0;
    CHECK_OK(gbtd_cp_als(&x, 6, &est, &o, &info), "CP of a random tensor");
    double ex = 0;
    gbtd_cp_relative_error(&x, &est, &ex);
    CHECK_CLOSE(info.rel_error, ex, 0.0, 1e-10, "identity error = explicit error (random tensor)");
    CHECK(info.iterations == 40 && info.stop == GBTD_STOP_MAX_ITER && info.history_len == 40,
          "40 sweeps, max_iter stop, 40 history entries");
    CHECK(info.error_history[39] == info.rel_error, "history ends at the reported error");
    int mono = 1;
    for (int i = 1; i < info.history_len; i++)
        mono &= info.error_history[i] <= info.error_history[i - 1] * (1 + 1e-12);
    CHECK(mono, "ALS (+ accepted extrapolations) never increases the error");
    int pos = 1;
    for (int64_t c = 0; c < 6; c++) pos &= est.weights.data[c] >= 0.0;
    double cn = 0;
    for (int64_t i = 0; i < 9; i++) cn += est.factors[1].data[i * 6 + 2] * est.factors[1].data[i * 6 + 2];
    CHECK(pos && fabs(cn - 1.0) < 1e-12, "weights non-negative, factor columns unit norm");
    CHECK(gbtd_cp_param_count(&est) == 6 + 6 * 27, "param count R + R sum I_n");
    const double single = info.rel_error;
    gbtd_cp_free(&est);
    o.restarts = 3;
    CHECK_OK(gbtd_cp_als(&x, 6, &est, &o, &info), "CP with 3 restarts");
    CHECK(info.restarts == 3 && info.rel_error <= single + 1e-15,
          "restarts: 3 runs, best no worse than run 0 alone");
    gbtd_cp_free(&est);

    gbtd_tensor y;
    gbtd_cp_opts o2 = gbtd_cp_opts_default();
    o2.error_target = 0.9;
    CHECK_OK(gbtd_cp_als(&x, 6, &est, &o2, &info), "CP with an error target");
    CHECK(info.stop == GBTD_STOP_ERROR_TOL && info.rel_error <= 0.9, "stops at the error target");
    CHECK_OK(gbtd_cp_reconstruct_alloc(&est, &y), "reconstruct");
    double self = 1;
    gbtd_cp_relative_error(&y, &est, &self);
    CHECK_LE(self, 1e-15, "a model's own reconstruction has zero error");
    gbtd_tensor_free(&y);
    gbtd_cp_free(&est);
    gbtd_decomp_info_free(&info);
    gbtd_tensor_free(&x);
}

static void test_match_score(void)
{
    /* est = ref with components permuted, two modes of one component negated, columns scaled
     * (weights compensate): score 1 and the permutation recovered. */
    const int64_t shape[3] = {5, 6, 7};
    gbtd_cp ref = {0}, est = {0};
    planted_model(&ref, 3, shape, 4);
    gbtd_cp_alloc(&est, 3, shape, 4);
    const int64_t p[4] = {2, 0, 3, 1};
    for (int n = 0; n < 3; n++)
        for (int64_t i = 0; i < shape[n]; i++)
            for (int64_t c = 0; c < 4; c++) {
                const double sgn = (c == 1 && n < 2) ? -1.0 : 1.0;
                est.factors[n].data[i * 4 + p[c]] = sgn * 3.0 * ref.factors[n].data[i * 4 + c];
            }
    for (int64_t c = 0; c < 4; c++) est.weights.data[p[c]] = ref.weights.data[c] / 27.0;
    double s = 0, cmin = 0;
    int64_t perm[4];
    CHECK_OK(gbtd_cp_factor_match(&ref, &est, true, &s, &cmin, perm), "factor match runs");
    CHECK_CLOSE(s, 1.0, 1e-12, 0.0, "permuted, sign-flipped, rescaled copy scores 1");
    CHECK(perm[0] == 2 && perm[1] == 0 && perm[2] == 3 && perm[3] == 1, "permutation recovered");
    CHECK_CLOSE(cmin, 1.0, 1e-12, 0.0, "min congruence 1");

    /* Closed form: rank-1 models whose mode-0 vectors meet at angle t, others equal: score
     * cos t without weights, cos t * (1 - 1/3) with magnitudes 3 and 2. */
    gbtd_cp a = {0}, b = {0};
    const int64_t s1[3] = {2, 2, 2};
    gbtd_cp_alloc(&a, 3, s1, 1);
    gbtd_cp_alloc(&b, 3, s1, 1);
    const double t = 0.3;
    a.factors[0].data[0] = 1;
    b.factors[0].data[0] = cos(t);
    b.factors[0].data[1] = sin(t);
    for (int n = 1; n < 3; n++) a.factors[n].data[1] = b.factors[n].data[1] = 1;
    a.weights.data[0] = 3;
    b.weights.data[0] = 2;
    CHECK_OK(gbtd_cp_factor_match(&a, &b, false, &s, NULL, NULL), "rank-1 match");
    CHECK_CLOSE(s, cos(t), 1e-15, 0.0, "congruence = cos t (closed form)");
    gbtd_cp_factor_match(&a, &b, true, &s, NULL, NULL);
    CHECK_CLOSE(s, cos(t) * (1.0 - 1.0 / 3.0), 1e-15, 0.0, "weighted score = cos t (1 - 1/3)");
    CHECK_STATUS(gbtd_cp_factor_match(&a, &ref, true, &s, NULL, NULL), GBTD_ESHAPE,
                 "models of different rank refused");

    /* Principal angle in closed form. */
    gbtd_tensor u, v;
    gbtd_matrix_alloc(&u, 3, 1);
    gbtd_matrix_alloc(&v, 3, 2);
    u.data[0] = cos(t);
    u.data[1] = 0.0;
    u.data[2] = sin(t); /* angle t to the plane span(e0, e1) */
    v.data[0] = 2.0;
    v.data[3] = 1.0;
    v.data[2 * 2 + 0] = 0.0;
    v.data[1 * 2 + 1] = 5.0;
    double sn = 0;
    CHECK_OK(gbtd_subspace_sin_angle(&u, &v, &sn), "subspace angle runs");
    CHECK_CLOSE(sn, sin(t), 1e-15, 0.0, "sin of the principal angle (closed form)");
    CHECK_STATUS(gbtd_subspace_sin_angle(&v, &u, &sn), GBTD_ESHAPE, "p > q refused");
    CHECK_CLOSE(gbtd_compression_ratio(3, shape, 30), 7.0, 0.0, 1e-15, "compression ratio 210/30");
    gbtd_tensor_free(&u);
    gbtd_tensor_free(&v);
    gbtd_cp_free(&a);
    gbtd_cp_free(&b);
    gbtd_cp_free(&ref);
    gbtd_cp_free(&est);
}

static int stop_at_three(int iter, double e, double t, void *ctx)
{
    (void)e;
    (void)t;
    (void)ctx;
    return iter >= 3;
}

static void test_errors(void)
{
    const int64_t shape[3] = {4, 5, 6};
    gbtd_tensor x;
    gbtd_tensor_alloc(&x, 3, shape);
    gbtd_tensor_fill_normal(&x, rng, 0.0, 1.0);
    gbtd_cp m = {0};
    gbtd_decomp_info info;
    gbtd_decomp_info_init(&info);
    CHECK_STATUS(gbtd_cp_als(&x, 0, &m, NULL, NULL), GBTD_ERANGE, "rank 0 refused");
    CHECK_STATUS(gbtd_cp_als(&x, 21, &m, NULL, NULL), GBTD_ERANGE,
                 "rank 21 > 4*5 (maximal rank of a 4x5x6 tensor) refused");
    gbtd_cp_opts o = gbtd_cp_opts_default();
    o.max_iter = 0;
    CHECK_STATUS(gbtd_cp_als(&x, 2, &m, &o, NULL), GBTD_EINVAL, "zero iterations refused");
    o = gbtd_cp_opts_default();
    o.restarts = 0;
    CHECK_STATUS(gbtd_cp_als(&x, 2, &m, &o, NULL), GBTD_EINVAL, "zero restarts refused");
    o = gbtd_cp_opts_default();
    o.tol = -1;
    CHECK_STATUS(gbtd_cp_als(&x, 2, &m, &o, NULL), GBTD_EINVAL, "negative tol refused");
    o = gbtd_cp_opts_default();
    o.callback = stop_at_three;
    o.tol = 0;
    CHECK_OK(gbtd_cp_als(&x, 2, &m, &o, &info), "CP with a stopping callback");
    CHECK(info.iterations == 3 && info.stop == GBTD_STOP_CALLBACK, "callback stops after 3");
    gbtd_cp_free(&m);
    gbtd_tensor z;
    gbtd_tensor_alloc(&z, 3, shape);
    CHECK_STATUS(gbtd_cp_als(&z, 2, &m, NULL, NULL), GBTD_EINVAL, "zero tensor refused");
    z.data[3] = NAN;
    CHECK_STATUS(gbtd_cp_als(&z, 2, &m, NULL, NULL), GBTD_ENONFINITE, "NaN input refused");
    z.data[3] = -INFINITY;
    CHECK_STATUS(gbtd_cp_als(&z, 2, &m, NULL, NULL), GBTD_ENONFINITE, "Inf input refused");
    const int64_t one[1] = {5};
    gbtd_tensor v;
    gbtd_tensor_alloc(&v, 1, one);
    gbtd_tensor_fill(&v, 1.0);
    CHECK_STATUS(gbtd_cp_als(&v, 1, &m, NULL, NULL), GBTD_EINVAL, "1-way tensor refused");
    CHECK_STATUS(gbtd_cp_als(NULL, 1, &m, NULL, NULL), GBTD_EINVAL, "NULL tensor refused");
    gbtd_tensor out = {0};
    CHECK_STATUS(gbtd_cp_reconstruct_alloc(&m, &out), GBTD_EINVAL, "reconstruct empty model refused");
    CHECK(m.weights.data == NULL, "failed calls leave the model empty");
    gbtd_tensor_free(&v);
    gbtd_tensor_free(&z);
    gbtd_decomp_info_free(&info);
    gbtd_tensor_free(&x);
}

static void test_alloc_failures(void)
{
    const int64_t shape[4] = {4, 5, 3, 6};
    gbtd_tensor x;
    gbtd_tensor_alloc(&x, 4, shape);
    gbtd_tensor_fill_normal(&x, rng, 0.0, 1.0);
    gbtd_cp base = {0};
    gbtd_cp_opts o = gbtd_cp_opts_default();
    o.max_iter = 4;
    o.init = GBTD_CP_INIT_SVD;
    o.restarts = 2;
    gbtd_cp_als(&x, 3, &base, &o, NULL);
    check_alloc_install();
    const char *names[4] = {"cp_als", "cp_reconstruct", "cp_relative_error", "cp_factor_match"};
    for (int which = 0; which < 4; which++) {
        int ok_all = 1, reached = 0;
        for (long n = 0; n < 400; n++) {
            gbtd_cp m = {0};
            gbtd_tensor y = {0};
            gbtd_decomp_info info;
            gbtd_decomp_info_init(&info);
            double d;
            const long live = check_alloc_live();
            check_alloc_fail_after(n);
            int rc;
            switch (which) {
            case 0: rc = gbtd_cp_als(&x, 3, &m, &o, &info); break;
            case 1: rc = gbtd_cp_reconstruct_alloc(&base, &y); break;
            case 2: rc = gbtd_cp_relative_error(&x, &base, &d); break;
            default: rc = gbtd_cp_factor_match(&base, &base, true, &d, NULL, NULL); break;
            }
            check_alloc_fail_after(-1);
            if (rc == GBTD_OK) {
                reached = 1;
                gbtd_cp_free(&m);
                gbtd_tensor_free(&y);
                gbtd_decomp_info_free(&info);
                ok_all &= check_alloc_live() == live;
                break;
            }
            ok_all &= rc == GBTD_ENOMEM && check_alloc_live() == live;
            gbtd_decomp_info_free(&info);
        }
        char name[96];
        snprintf(name, sizeof name, "%s: every allocation failure -> ENOMEM, no leak", names[which]);
        CHECK(ok_all && reached, name);
    }
    gbtd_set_allocator(NULL);
    gbtd_cp_free(&base);
    gbtd_tensor_free(&x);
}

int main(void)
{
    gbtd_rng_alloc(2024, &rng);
    test_planted_seeds();
    test_variants();
    test_noise();
    test_random_tensor();
    test_match_score();
    test_errors();
    test_alloc_failures();
    gbtd_rng_free(rng);
    return check_finish();
}
