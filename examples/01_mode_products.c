/* 01_mode_products: unfoldings, the mode-n product Y = X x_n U, Kronecker and Khatri-Rao
 * products and a Tucker reconstruction with the multi-mode product. The conventions are
 * TensorLy's (docs/conventions.md). Build: cc 01_mode_products.c $(pkg-config --cflags --libs gbtd) */
#include <stdio.h>
#include <time.h>

#include "gbtd.h"

static void print_matrix(const char *what, const gbtd_tensor *m)
{
    printf("%s (%lld x %lld):\n", what, (long long)m->shape[0], (long long)m->shape[1]);
    for (int64_t i = 0; i < m->shape[0]; i++) {
        printf("  ");
        for (int64_t j = 0; j < m->shape[1]; j++)
            printf(" %7.3f", m->data[i * m->stride[0] + j * m->stride[1]]);
        printf("\n");
    }
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define TRY(expr)                                                                                 \
    do {                                                                                          \
        if ((expr) != GBTD_OK) {                                                                  \
            fprintf(stderr, "%s: %s\n", #expr, gbtd_last_error());                                \
            return 1;                                                                             \
        }                                                                                         \
    } while (0)

int main(void)
{
    gbtd_set_threads(1);
    /* x[i, j, k] = i + 10 j + 100 k on a 2 x 3 x 2 tensor: the unfoldings are easy to read. */
    const int64_t shape[3] = {2, 3, 2};
    gbtd_tensor x, m, back;
    TRY(gbtd_tensor_alloc(&x, 3, shape));
    for (int64_t e = 0; e < 12; e++) x.data[e] = (double)(e / 6 + 10 * ((e / 2) % 3) + 100 * (e % 2));
    for (int n = 0; n < 3; n++) {
        char what[64];
        snprintf(what, sizeof what, "unfold(x, %d)", n);
        TRY(gbtd_unfold_alloc(&x, n, &m));
        print_matrix(what, &m);
        TRY(gbtd_fold_alloc(&m, n, 3, shape, &back));
        double d;
        gbtd_tensor_max_abs_diff(&back, &x, &d);
        printf("  fold(unfold(x, %d), %d) == x: %s\n", n, n, d == 0.0 ? "yes" : "no");
        gbtd_tensor_free(&back);
        gbtd_tensor_free(&m);
    }

    /* Mode-1 product with U (J x I_1 = 2 x 3): Y[i, j, k] = sum_l U[j, l] x[i, l, k]. */
    gbtd_tensor u, y, yref;
    TRY(gbtd_matrix_alloc(&u, 2, 3));
    const double uv[6] = {1, 0, -1, 0.5, 0.5, 0.5};
    for (int e = 0; e < 6; e++) u.data[e] = uv[e];
    TRY(gbtd_ttm_alloc(&x, &u, 1, GBTD_NOTRANS, &y));
    char sh[64];
    printf("y = x x_1 U: shape %s\n", gbtd_shape_str(y.ndim, y.shape, sh, sizeof sh));
    TRY(gbtd_unfold_alloc(&y, 1, &m));
    print_matrix("unfold(y, 1) = U unfold(x, 1)", &m);
    gbtd_tensor_free(&m);
    TRY(gbtd_tensor_alloc_like(&yref, &y));
    TRY(gbtd_ttm_ref(&x, &u, 1, GBTD_NOTRANS, &yref));
    double d;
    gbtd_tensor_max_abs_diff(&y, &yref, &d);
    printf("  GEMM kernel vs naive reference: max |diff| = %g\n", d);
    /* The same product with the transposed operand: x x_1 (U^T)^T. */
    gbtd_tensor ut, y2;
    TRY(gbtd_matrix_alloc(&ut, 3, 2));
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) ut.data[i * 2 + j] = uv[j * 3 + i];
    TRY(gbtd_ttm_alloc(&x, &ut, 1, GBTD_TRANS, &y2));
    gbtd_tensor_max_abs_diff(&y, &y2, &d);
    printf("  with GBTD_TRANS on U^T: max |diff| = %g\n", d);

    /* Kronecker and Khatri-Rao products. */
    gbtd_tensor a, b, k;
    TRY(gbtd_matrix_alloc(&a, 2, 2));
    TRY(gbtd_matrix_alloc(&b, 3, 2));
    const double av[4] = {1, 2, 3, 4}, bv[6] = {1, 10, 0, 1, -1, 0};
    for (int e = 0; e < 4; e++) a.data[e] = av[e];
    for (int e = 0; e < 6; e++) b.data[e] = bv[e];
    TRY(gbtd_kron_alloc(&a, &b, &k));
    print_matrix("kron(A, B)", &k);
    gbtd_tensor_free(&k);
    const gbtd_tensor *ab[2] = {&a, &b};
    TRY(gbtd_khatri_rao_alloc(ab, 2, -1, &k));
    print_matrix("khatri_rao(A, B) (column r = kron(A[:, r], B[:, r]))", &k);
    gbtd_tensor_free(&k);

    /* Tucker reconstruction: G (2 x 2 x 2) x_0 A0 x_1 A1 x_2 A2, the order chosen by flops. */
    gbtd_rng *rng;
    gbtd_rng_alloc(1, &rng);
    const int64_t gs[3] = {2, 2, 2};
    gbtd_tensor g, f[3], t;
    TRY(gbtd_tensor_alloc(&g, 3, gs));
    gbtd_tensor_fill_uniform(&g, rng, -1, 1);
    const int64_t rows[3] = {5, 40, 3};
    const gbtd_tensor *fs[3];
    const int modes[3] = {0, 1, 2};
    for (int n = 0; n < 3; n++) {
        TRY(gbtd_matrix_alloc(&f[n], rows[n], 2));
        gbtd_tensor_fill_uniform(&f[n], rng, -1, 1);
        fs[n] = &f[n];
    }
    int order[3];
    double flops;
    TRY(gbtd_multi_ttm_order(&g, fs, modes, 3, GBTD_NOTRANS, order, &flops));
    TRY(gbtd_multi_ttm_alloc(&g, fs, modes, 3, GBTD_NOTRANS, &t));
    printf("Tucker reconstruction: shape %s, modes applied in order %d %d %d (%.0f flops), "
           "||X||_F = %.6f\n",
           gbtd_shape_str(t.ndim, t.shape, sh, sizeof sh), modes[order[0]], modes[order[1]],
           modes[order[2]], flops, gbtd_tensor_norm(&t));

    /* Timing lines start with "time": the example test ignores their values. */
    const int64_t bs[3] = {128, 128, 128};
    gbtd_tensor big, ub, yb;
    TRY(gbtd_tensor_alloc(&big, 3, bs));
    gbtd_tensor_fill_uniform(&big, rng, -1, 1);
    TRY(gbtd_matrix_alloc(&ub, 64, 128));
    gbtd_tensor_fill_uniform(&ub, rng, -1, 1);
    for (int n = 0; n < 3; n++) {
        const double t0 = seconds();
        TRY(gbtd_ttm_alloc(&big, &ub, n, GBTD_NOTRANS, &yb));
        const double dt = seconds() - t0;
        printf("time 128^3 x_%d (64 x 128): %.2f ms, %.1f GFLOP/s\n", n, 1e3 * dt,
               2.0 * 64 * 128 * 128 * 128 / dt * 1e-9);
        gbtd_tensor_free(&yb);
    }
    gbtd_tensor *all[] = {&x, &u, &y, &yref, &ut, &y2, &a, &b, &g, &f[0], &f[1], &f[2], &t, &big, &ub};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) gbtd_tensor_free(all[i]);
    gbtd_rng_free(rng);
    return 0;
}
