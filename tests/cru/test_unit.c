/* Unit tests of lib/cru/unit: a ResNeXt unit without nonlinearities is one convolution whose
 * kernel is the BTD of its weights (checked by running the convolutions in double), the
 * weights <-> BTD maps are inverse, and a stage stacks along the output mode. */
#include "check.h"
#include "cru/unit.h"

/* y[o, p, q] = sum_{i, h, w} W[o, i/groups-slice, h, w] x[g*cin_g + i, p + h - pad, q + w - pad],
 * double precision, zero padding, stride 1. W is [cout, cin/groups, k, k] in double. */
static void conv_ref(const double *x, int64_t cin, int64_t hgt, int64_t wid, const double *w,
                     int64_t cout, int64_t k, int groups, double *y)
{
    const int64_t cig = cin / groups, cog = cout / groups, pad = k / 2;
    for (int64_t o = 0; o < cout; o++) {
        const int64_t g = o / cog;
        for (int64_t p = 0; p < hgt; p++)
            for (int64_t q = 0; q < wid; q++) {
                double s = 0.0;
                for (int64_t i = 0; i < cig; i++)
                    for (int64_t h = 0; h < k; h++)
                        for (int64_t v = 0; v < k; v++) {
                            const int64_t pp = p + h - pad, qq = q + v - pad;
                            if (pp < 0 || pp >= hgt || qq < 0 || qq >= wid) continue;
                            s += w[((o * cig + i) * k + h) * k + v] *
                                 x[((g * cig + i) * hgt + pp) * wid + qq];
                        }
                y[(o * hgt + p) * wid + q] = s;
            }
    }
}

static void fill_f(float *v, int64_t n, gbtd_rng *rng)
{
    for (int64_t i = 0; i < n; i++) v[i] = (float)gbtd_rng_normal(rng);
}

static void test_unit_is_one_conv(gbtd_rng *rng, int groups, int with_bn)
{
    const int64_t cin = 6, d = 3, D = groups * d, cout = 5, k = 3, H = 5, W = 4;
    float w1[64 * 6], w2[64 * 3 * 9], w3[5 * 64], s1[64], s2[64], s3[5];
    fill_f(w1, D * cin, rng);
    fill_f(w2, D * d * k * k, rng);
    fill_f(w3, cout * D, rng);
    for (int64_t c = 0; c < D; c++) {
        s1[c] = (float)(0.5 + gbtd_rng_uniform(rng));
        s2[c] = (float)(0.5 + gbtd_rng_uniform(rng));
    }
    for (int64_t c = 0; c < cout; c++) s3[c] = (float)(0.5 + gbtd_rng_uniform(rng));
    gbtd_unit_weights u = {cin, D, cout, k, k, groups, w1, w2, w3,
                           with_bn ? s1 : NULL, with_bn ? s2 : NULL, with_bn ? s3 : NULL};
    gbtd_tensor K;
    CHECK_OK(gbtd_unit_effective_kernel(&u, &K), "effective kernel");
    /* The unit as three convolutions (BN scales applied per output channel) vs one conv by K. */
    double x[6 * 5 * 4], a1[64 * 20], a2[64 * 20], a3[5 * 20], y[5 * 20];
    double dw1[64 * 6], dw2[64 * 27], dw3[5 * 64], dk[5 * 6 * 9];
    for (int i = 0; i < cin * H * W; i++) x[i] = gbtd_rng_normal(rng);
    for (int64_t c = 0; c < D; c++)
        for (int64_t i = 0; i < cin; i++) dw1[c * cin + i] = (with_bn ? s1[c] : 1.0) * w1[c * cin + i];
    for (int64_t c = 0; c < D; c++)
        for (int64_t j = 0; j < d * 9; j++) dw2[c * d * 9 + j] = (with_bn ? s2[c] : 1.0) * w2[c * d * 9 + j];
    for (int64_t o = 0; o < cout; o++)
        for (int64_t c = 0; c < D; c++) dw3[o * D + c] = (with_bn ? s3[o] : 1.0) * w3[o * D + c];
    conv_ref(x, cin, H, W, dw1, D, 1, 1, a1);
    conv_ref(a1, D, H, W, dw2, D, 3, groups, a2);
    conv_ref(a2, D, H, W, dw3, cout, 1, 1, a3);
    /* K[h, w, i, o] -> PyTorch order [o, i, h, w] */
    for (int64_t o = 0; o < cout; o++)
        for (int64_t i = 0; i < cin; i++)
            for (int64_t h = 0; h < 3; h++)
                for (int64_t v = 0; v < 3; v++)
                    dk[((o * cin + i) * 3 + h) * 3 + v] = *gbtd_tensor_ptr(&K, (const int64_t[]){h, v, i, o});
    conv_ref(x, cin, H, W, dk, cout, 3, 1, y);
    double num = 0, den = 0;
    for (int i = 0; i < cout * H * W; i++) {
        num += (y[i] - a3[i]) * (y[i] - a3[i]);
        den += a3[i] * a3[i];
    }
    /* Both sides sum the same products in different orders: error ~ (terms per output) * eps. */
    char name[96];
    snprintf(name, sizeof name, "R=%d%s: unit == one conv with the BTD kernel", groups,
             with_bn ? " (BN folded)" : "");
    CHECK_LE(sqrt(num / den), 200 * DBL_EPSILON, name);

    /* weights -> BTD -> weights is the identity (float -> double -> float is exact). */
    gbtd_btd m;
    CHECK_OK(gbtd_unit_to_btd(&u, &m), "unit_to_btd");
    CHECK(m.nterms == groups && m.ranks[0] == d && m.ranks[1] == d, "R terms of rank (d, d)");
    CHECK(gbtd_btd_num_params(&m) == groups * (cin * d + 9 * d * d + cout * d), "BTD parameters = unit parameters");
    if (!with_bn) {
        float r1[64 * 6], r2[64 * 27], r3[5 * 64];
        CHECK_OK(gbtd_btd_to_unit(&m, r1, r2, r3), "btd_to_unit");
        CHECK(!memcmp(r1, w1, sizeof(float) * (size_t)(D * cin)) &&
                  !memcmp(r2, w2, sizeof(float) * (size_t)(D * d * 9)) &&
                  !memcmp(r3, w3, sizeof(float) * (size_t)(cout * D)),
              "btd_to_unit inverts unit_to_btd exactly");
    }
    gbtd_btd_free(&m);
    gbtd_tensor_free(&K);
}

static void test_errors(void)
{
    float w[4] = {0};
    gbtd_unit_weights u = {2, 3, 2, 3, 3, 2, w, w, w, NULL, NULL, NULL};
    gbtd_btd m;
    CHECK_STATUS(gbtd_unit_to_btd(&u, &m), GBTD_EINVAL, "groups must divide D");
    u.groups = 1;
    u.w2 = NULL;
    CHECK_STATUS(gbtd_unit_to_btd(&u, &m), GBTD_EINVAL, "NULL weights");
    gbtd_tensor a, b, s;
    gbtd_tensor_alloc(&a, 4, (const int64_t[]){3, 3, 4, 5});
    gbtd_tensor_alloc(&b, 4, (const int64_t[]){3, 3, 4, 6});
    const gbtd_tensor *ks[2] = {&a, &b};
    CHECK_STATUS(gbtd_stage_stack(ks, 2, &s), GBTD_ESHAPE, "stage_stack shape mismatch");
    gbtd_tensor_free(&a);
    gbtd_tensor_free(&b);
}

static void test_stack(gbtd_rng *rng)
{
    gbtd_tensor k[3];
    const gbtd_tensor *ks[3];
    for (int l = 0; l < 3; l++) {
        gbtd_tensor_alloc(&k[l], 4, (const int64_t[]){3, 3, 4, 5});
        gbtd_tensor_fill_normal(&k[l], rng, 0, 1);
        ks[l] = &k[l];
    }
    gbtd_tensor s;
    CHECK_OK(gbtd_stage_stack(ks, 3, &s), "stage_stack");
    int good = s.shape[3] == 15;
    for (int l = 0; l < 3; l++)
        for (int64_t h = 0; h < 3; h++)
            for (int64_t i = 0; i < 4; i++)
                for (int64_t o = 0; o < 5; o++) {
                    const int64_t a[4] = {h, 2 - h, i, o}, b[4] = {h, 2 - h, i, l * 5 + o};
                    if (*gbtd_tensor_ptr(&k[l], a) != *gbtd_tensor_ptr(&s, b)) good = 0;
                }
    CHECK(good, "stacked along the output mode, unit-major");
    gbtd_tensor_free(&s);
    for (int l = 0; l < 3; l++) gbtd_tensor_free(&k[l]);
}

int main(void)
{
    gbtd_rng *rng;
    gbtd_rng_alloc(2017, &rng);
    test_unit_is_one_conv(rng, 1, 0);
    test_unit_is_one_conv(rng, 4, 0);
    test_unit_is_one_conv(rng, 4, 1);
    test_unit_is_one_conv(rng, 12, 1);
    test_errors();
    test_stack(rng);
    gbtd_rng_free(rng);
    return check_finish();
}
