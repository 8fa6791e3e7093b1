/* 05: the paper's unification on one ResNeXt unit. A unit with R groups of width d computes,
 * without its nonlinearities, one 3x3 convolution whose kernel K (3 x 3 x C_in x C_out) is a
 * block term decomposition with R terms of rank (d, d). Fitting a BTD with fewer terms loses
 * part of K; with R = cardinality the fit is exact. */
#include <stdio.h>
#include <stdlib.h>

#include "gbtd.h"

int main(void)
{
    enum { CIN = 16, GROUPS = 4, D_G = 2, INNER = GROUPS * D_G, COUT = 12 };
    static float w1[INNER * CIN], w2[INNER * D_G * 9], w3[COUT * INNER];
    gbtd_rng *rng = NULL;
    if (gbtd_rng_alloc(7, &rng)) return 1;
    for (int i = 0; i < INNER * CIN; i++) w1[i] = (float)gbtd_rng_normal(rng);
    for (int i = 0; i < INNER * D_G * 9; i++) w2[i] = (float)gbtd_rng_normal(rng);
    for (int i = 0; i < COUT * INNER; i++) w3[i] = (float)gbtd_rng_normal(rng);
    gbtd_rng_free(rng);
    /* the unit's weights in PyTorch layout: 1x1 reduce, grouped 3x3, 1x1 expand */
    gbtd_unit_weights u = {CIN, INNER, COUT, 3, 3, GROUPS, w1, w2, w3, NULL, NULL, NULL};
    gbtd_tensor k;
    if (gbtd_unit_effective_kernel(&u, &k)) return 1;
    printf("ResNeXt unit: C_in %d, %d groups of width %d, C_out %d\n", CIN, GROUPS, D_G, COUT);
    printf("effective kernel %lld x %lld x %lld x %lld\n", (long long)k.shape[0],
           (long long)k.shape[1], (long long)k.shape[2], (long long)k.shape[3]);
    const int modes[2] = {2, 3};
    for (int R = 1; R <= GROUPS; R *= 2) {
        int64_t ranks[2 * GROUPS];
        for (int r = 0; r < 2 * R; r++) ranks[r] = D_G;
        gbtd_btd m;
        gbtd_btd_opts o = gbtd_btd_opts_default();
        o.restarts = 3;
        double e = 1;
        if (gbtd_btd_decompose(&k, 2, modes, R, ranks, &m, NULL, &o) ||
            gbtd_btd_relative_error(&k, &m, &e))
            return 1;
        printf("R = %d terms of rank (%d, %d): %lld parameters, relative error %s\n", R, D_G, D_G,
               (long long)gbtd_btd_num_params(&m), e < 1e-10 ? "< 1e-10 (exact)" : "> 1e-10");
        gbtd_btd_free(&m);
    }
    gbtd_tensor_free(&k);
    return 0;
}
