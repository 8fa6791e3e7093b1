/* 02_tucker: Tucker decompositions — truncated HOSVD, HOOI, ranks from an error target, and
 * Tucker-2 (partial Tucker) of a conv kernel on its channel modes.
 * Build: cc 02_tucker.c $(pkg-config --cflags --libs gbtd) */
#include <stdio.h>

#include "gbtd.h"

#define TRY(expr)                                                                                 \
    do {                                                                                          \
        if ((expr) != GBTD_OK) {                                                                  \
            fprintf(stderr, "%s: %s\n", #expr, gbtd_last_error());                                \
            return 1;                                                                             \
        }                                                                                         \
    } while (0)

static void print_ranks(const gbtd_tucker *t)
{
    printf("  core");
    for (int k = 0; k < t->core.ndim; k++) printf(" %lld", (long long)t->core.shape[k]);
    printf(", params %lld\n", (long long)gbtd_tucker_param_count(t));
}

int main(void)
{
    gbtd_set_threads(1);
    gbtd_rng *rng;
    TRY(gbtd_rng_alloc(42, &rng));

    /* A 30 x 40 x 50 tensor of multilinear rank (4, 5, 6) plus 1 % noise. */
    const int64_t shape[3] = {30, 40, 50}, ranks[3] = {4, 5, 6}, cs[3] = {4, 5, 6};
    const int modes[3] = {0, 1, 2};
    gbtd_tensor g, u[3], x, noise;
    const gbtd_tensor *up[3];
    TRY(gbtd_tensor_alloc(&g, 3, cs));
    gbtd_tensor_fill_normal(&g, rng, 0.0, 1.0);
    for (int k = 0; k < 3; k++) {
        TRY(gbtd_matrix_alloc(&u[k], shape[k], ranks[k]));
        gbtd_tensor_fill_normal(&u[k], rng, 0.0, 1.0);
        up[k] = &u[k];
    }
    TRY(gbtd_multi_ttm_alloc(&g, up, modes, 3, GBTD_NOTRANS, &x));
    TRY(gbtd_tensor_alloc_like(&noise, &x));
    gbtd_tensor_fill_normal(&noise, rng, 0.0, 1.0);
    gbtd_tensor_axpy(0.01 * gbtd_tensor_norm(&x) / gbtd_tensor_norm(&noise), &noise, &x);

    gbtd_tucker t = {0};
    gbtd_decomp_info info;
    gbtd_decomp_info_init(&info);
    TRY(gbtd_tucker_hosvd(&x, ranks, &t, NULL, &info));
    printf("truncated HOSVD, ranks (4, 5, 6): rel. error %.6f\n", info.rel_error);
    print_ranks(&t);
    gbtd_tucker_free(&t);

    TRY(gbtd_tucker_hooi(&x, ranks, &t, NULL, &info));
    printf("HOOI: rel. error %.6f after %d sweeps (stop: %s)\n", info.rel_error, info.iterations,
           gbtd_stop_reason_str(info.stop));
    double s, worst = 0.0;
    for (int k = 0; k < 3; k++) {
        TRY(gbtd_subspace_sin_angle(&u[k], &t.factors[k], &s));
        worst = s > worst ? s : worst;
    }
    printf("  planted subspaces recovered: largest sin(angle) < 0.01: %s\n",
           worst < 0.01 ? "yes" : "no");
    gbtd_tucker_free(&t);

    gbtd_tucker_opts o = gbtd_tucker_opts_default();
    o.error_target = 0.05;
    TRY(gbtd_tucker_hooi(&x, NULL, &t, &o, &info));
    printf("ranks for a 5 %% error target: rel. error %.6f\n", info.rel_error);
    print_ranks(&t);
    gbtd_tucker_free(&t);

    /* Tucker-2 of a 3x3x64x96 conv kernel K[h, w, c_in, c_out] on the channel modes. */
    const int64_t ks[4] = {3, 3, 64, 96}, kr[2] = {16, 24};
    const int kmodes[2] = {2, 3};
    gbtd_tensor k;
    TRY(gbtd_tensor_alloc(&k, 4, ks));
    gbtd_tensor_fill_normal(&k, rng, 0.0, 1.0);
    TRY(gbtd_tucker_partial_hooi(&k, kmodes, 2, kr, &t, NULL, &info));
    printf("Tucker-2 of a random 3x3x64x96 kernel, ranks (16, 24): rel. error %.4f\n",
           info.rel_error);
    print_ranks(&t);
    printf("  compression %.2fx\n", gbtd_compression_ratio(4, ks, gbtd_tucker_param_count(&t)));
    gbtd_tucker_free(&t);

    gbtd_decomp_info_free(&info);
    gbtd_tensor_free(&k);
    gbtd_tensor_free(&noise);
    gbtd_tensor_free(&x);
    for (int i = 0; i < 3; i++) gbtd_tensor_free(&u[i]);
    gbtd_tensor_free(&g);
    gbtd_rng_free(rng);
    return 0;
}
