#include "cru/unit.h"

#include <math.h>
#include <string.h>

#include "core/status.h"

void gbtd_bn_fold_scale(const float *gamma, const float *var, double eps, int64_t n, float *out)
{
    for (int64_t c = 0; c < n; c++) out[c] = (float)((double)gamma[c] / sqrt((double)var[c] + eps));
}

static int check_unit(const gbtd_unit_weights *u)
{
    if (u == NULL || u->w1 == NULL || u->w2 == NULL || u->w3 == NULL)
        return gbtd_error(GBTD_EINVAL, "unit: NULL weights");
    if (u->c_in < 1 || u->inner < 1 || u->c_out < 1 || u->kh < 1 || u->kw < 1 || u->groups < 1)
        return gbtd_error(GBTD_EINVAL, "unit: sizes must be >= 1 (C_in %lld, D %lld, C_out %lld, "
                                       "%lldx%lld, groups %d)",
                          (long long)u->c_in, (long long)u->inner, (long long)u->c_out,
                          (long long)u->kh, (long long)u->kw, u->groups);
    if (u->inner % u->groups != 0)
        return gbtd_error(GBTD_EINVAL, "unit: %d groups do not divide %lld inner channels",
                          u->groups, (long long)u->inner);
    return GBTD_OK;
}

static double scale_at(const float *s, int64_t i) { return s ? (double)s[i] : 1.0; }

int gbtd_unit_to_btd(const gbtd_unit_weights *u, gbtd_btd *out)
{
    memset(out, 0, sizeof *out);
    GBTD_CHECK(check_unit(u));
    const int64_t cin = u->c_in, cout = u->c_out, kh = u->kh, kw = u->kw;
    const int R = u->groups;
    const int64_t d = u->inner / R;
    const int64_t shape[4] = {kh, kw, cin, cout};
    const int modes[2] = {2, 3};
    const int64_t ranks[2] = {d, d};
    GBTD_CHECK(gbtd_btd_alloc_uniform(out, 4, shape, 2, modes, R, ranks));
    for (int r = 0; r < R; r++) {
        gbtd_tensor *a = &out->factors[r * 2 + 0], *b = &out->factors[r * 2 + 1];
        gbtd_tensor *g = &out->cores[r];
        for (int64_t i = 0; i < cin; i++)
            for (int64_t x = 0; x < d; x++) {
                const int64_t ch = r * d + x;
                a->data[i * a->stride[0] + x * a->stride[1]] =
                    scale_at(u->scale1, ch) * (double)u->w1[ch * cin + i];
            }
        for (int64_t o = 0; o < cout; o++)
            for (int64_t y = 0; y < d; y++)
                b->data[o * b->stride[0] + y * b->stride[1]] =
                    scale_at(u->scale3, o) * (double)u->w3[o * u->inner + r * d + y];
        for (int64_t h = 0; h < kh; h++)
            for (int64_t w = 0; w < kw; w++)
                for (int64_t x = 0; x < d; x++)
                    for (int64_t y = 0; y < d; y++) {
                        const int64_t och = r * d + y;
                        const float v = u->w2[((och * d + x) * kh + h) * kw + w];
                        const int64_t idx[4] = {h, w, x, y};
                        *gbtd_tensor_ptr(g, idx) = scale_at(u->scale2, och) * (double)v;
                    }
    }
    return GBTD_OK;
}

int gbtd_unit_effective_kernel(const gbtd_unit_weights *u, gbtd_tensor *k)
{
    memset(k, 0, sizeof *k);
    gbtd_btd m;
    GBTD_CHECK(gbtd_unit_to_btd(u, &m));
    int rc = gbtd_btd_reconstruct_alloc(&m, k);
    gbtd_btd_free(&m);
    return rc;
}

int gbtd_btd_to_unit(const gbtd_btd *m, float *w1, float *w2, float *w3)
{
    if (m == NULL || w1 == NULL || w2 == NULL || w3 == NULL)
        return gbtd_error(GBTD_EINVAL, "btd_to_unit: NULL argument");
    if (m->ndim != 4 || m->nmodes != 2 || m->modes[0] != 2 || m->modes[1] != 3)
        return gbtd_error(GBTD_EINVAL, "btd_to_unit: the model must be 4-way (kh, kw, C_in, "
                                       "C_out) with factored modes {2, 3}");
    const int R = m->nterms;
    const int64_t din = m->ranks[0], dout = m->ranks[1];
    for (int r = 1; r < R; r++)
        if (m->ranks[r * 2] != din || m->ranks[r * 2 + 1] != dout)
            return gbtd_error(GBTD_EINVAL, "btd_to_unit: term %d has ranks (%lld, %lld), term 0 "
                                           "(%lld, %lld); a grouped unit needs equal ranks",
                              r, (long long)m->ranks[r * 2], (long long)m->ranks[r * 2 + 1],
                              (long long)din, (long long)dout);
    const int64_t kh = m->shape[0], kw = m->shape[1], cin = m->shape[2], cout = m->shape[3];
    for (int r = 0; r < R; r++) {
        const gbtd_tensor *a = &m->factors[r * 2], *b = &m->factors[r * 2 + 1], *g = &m->cores[r];
        for (int64_t x = 0; x < din; x++)
            for (int64_t i = 0; i < cin; i++)
                w1[(r * din + x) * cin + i] = (float)a->data[i * a->stride[0] + x * a->stride[1]];
        for (int64_t o = 0; o < cout; o++)
            for (int64_t y = 0; y < dout; y++)
                w3[o * (R * dout) + r * dout + y] =
                    (float)b->data[o * b->stride[0] + y * b->stride[1]];
        for (int64_t y = 0; y < dout; y++)
            for (int64_t x = 0; x < din; x++)
                for (int64_t h = 0; h < kh; h++)
                    for (int64_t w = 0; w < kw; w++) {
                        const int64_t idx[4] = {h, w, x, y};
                        w2[(((r * dout + y) * din + x) * kh + h) * kw + w] =
                            (float)*gbtd_tensor_ptr(g, idx);
                    }
    }
    return GBTD_OK;
}

int gbtd_stage_stack(const gbtd_tensor *const *kernels, int count, gbtd_tensor *out)
{
    memset(out, 0, sizeof *out);
    if (kernels == NULL || count < 1) return gbtd_error(GBTD_EINVAL, "stage_stack: no kernels");
    const gbtd_tensor *k0 = kernels[0];
    if (k0 == NULL || k0->ndim != 4)
        return gbtd_error(GBTD_EINVAL, "stage_stack: kernels must be 4-way (kh, kw, C_in, C_out)");
    for (int l = 1; l < count; l++)
        if (kernels[l] == NULL || !gbtd_tensor_same_shape(kernels[l], k0)) {
            char a[96], b[96];
            return gbtd_error(GBTD_ESHAPE, "stage_stack: kernel %d has shape %s, kernel 0 %s", l,
                              kernels[l] ? gbtd_shape_str(4, kernels[l]->shape, a, sizeof a) : "?",
                              gbtd_shape_str(4, k0->shape, b, sizeof b));
        }
    const int64_t cout = k0->shape[3];
    int64_t total;
    GBTD_CHECK(gbtd_mul_i64(cout, count, &total));
    const int64_t shape[4] = {k0->shape[0], k0->shape[1], k0->shape[2], total};
    GBTD_CHECK(gbtd_tensor_alloc(out, 4, shape));
    for (int l = 0; l < count; l++) {
        const int64_t start[4] = {0, 0, 0, l * cout};
        gbtd_tensor block;
        int rc = gbtd_tensor_view_sub(out, start, k0->shape, NULL, &block);
        if (rc == GBTD_OK) rc = gbtd_tensor_copy(&block, kernels[l]);
        if (rc != GBTD_OK) {
            gbtd_tensor_free(out);
            return rc;
        }
    }
    return GBTD_OK;
}

int gbtd_stage_unit_factor(const gbtd_btd *m, int units, int unit, int term, gbtd_tensor *view)
{
    if (m == NULL || m->ndim != 4 || m->nmodes != 2 || m->modes[1] != 3)
        return gbtd_error(GBTD_EINVAL, "stage_unit_factor: model must factor modes {2, 3}");
    if (units < 1 || m->shape[3] % units != 0)
        return gbtd_error(GBTD_EINVAL, "stage_unit_factor: %d units do not divide %lld output "
                                       "channels",
                          units, (long long)m->shape[3]);
    if (unit < 0 || unit >= units || term < 0 || term >= m->nterms)
        return gbtd_error(GBTD_ERANGE, "stage_unit_factor: unit %d of %d, term %d of %d", unit,
                          units, term, m->nterms);
    const int64_t cout = m->shape[3] / units;
    const gbtd_tensor *b = &m->factors[term * 2 + 1];
    const int64_t start[2] = {unit * cout, 0}, size[2] = {cout, b->shape[1]};
    return gbtd_tensor_view_sub(b, start, size, NULL, view);
}
