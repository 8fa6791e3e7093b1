/* 03_cp: CP decomposition by ALS — recover a planted rank-5 CP, compare the factors with the
 * factor-match score, and fit a noisy tensor down to its noise level.
 * Build: cc 03_cp.c $(pkg-config --cflags --libs gbtd) */
#include <math.h>
#include <stdio.h>

#include "gbtd.h"

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
    gbtd_rng *rng;
    TRY(gbtd_rng_alloc(7, &rng));

    /* Planted model: 5 components in a 20 x 25 x 30 tensor. */
    const int64_t shape[3] = {20, 25, 30};
    gbtd_cp truth, est = {0};
    TRY(gbtd_cp_alloc(&truth, 3, shape, 5));
    for (int n = 0; n < 3; n++) gbtd_tensor_fill_normal(&truth.factors[n], rng, 0.0, 1.0);
    gbtd_tensor x;
    TRY(gbtd_cp_reconstruct_alloc(&truth, &x));

    gbtd_decomp_info info;
    gbtd_decomp_info_init(&info);
    gbtd_cp_opts o = gbtd_cp_opts_default(); /* random start (seed 42), line search on */
    TRY(gbtd_cp_als(&x, 5, &est, &o, &info));
    double fms, cmin;
    TRY(gbtd_cp_factor_match(&truth, &est, true, &fms, &cmin, NULL));
    printf("exact rank-5 tensor: rel. error below 1e-12: %s (stop: %s)\n",
           info.rel_error < 1e-12 ? "yes" : "no", gbtd_stop_reason_str(info.stop));
    printf("  factor-match score %.6f, smallest congruence %.6f\n", fms, cmin);
    printf("  parameters %lld for %lld values\n", (long long)gbtd_cp_param_count(&est),
           (long long)gbtd_tensor_numel(&x));
    gbtd_cp_free(&est);

    /* 30 dB of noise: the fit stops at the noise level, not below it. */
    gbtd_tensor noise;
    TRY(gbtd_tensor_alloc_like(&noise, &x));
    gbtd_tensor_fill_normal(&noise, rng, 0.0, 1.0);
    gbtd_tensor_scale(&noise, pow(10.0, -1.5) * gbtd_tensor_norm(&x) / gbtd_tensor_norm(&noise));
    gbtd_tensor_axpy(1.0, &noise, &x);
    const double level = gbtd_tensor_norm(&noise) / gbtd_tensor_norm(&x);
    TRY(gbtd_cp_als(&x, 5, &est, &o, &info));
    TRY(gbtd_cp_factor_match(&truth, &est, true, &fms, NULL, NULL));
    printf("30 dB SNR: noise level %.4f, rel. error %.4f, factor-match score %.3f\n", level,
           info.rel_error, fms);
    double check;
    TRY(gbtd_cp_relative_error(&x, &est, &check));
    printf("  error from the fit identity equals the explicit error: %s\n",
           fabs(check - info.rel_error) < 1e-10 ? "yes" : "no");

    gbtd_cp_free(&est);
    gbtd_decomp_info_free(&info);
    gbtd_tensor_free(&noise);
    gbtd_tensor_free(&x);
    gbtd_cp_free(&truth);
    gbtd_rng_free(rng);
    return 0;
}
