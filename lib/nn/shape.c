/* gbtd nn: shape validation, size queries and the BLAS thread switch shared by the kernels. */
#include <stdarg.h>

#include "core/blas.h"
#include "nn/ops_internal.h"

int nn_numel(const char *fn, int64_t *out, int count, ...)
{
    va_list ap;
    va_start(ap, count);
    int64_t p = 1;
    for (int i = 0; i < count; i++) {
        const int64_t v = va_arg(ap, int64_t);
        if (gbtd_mul_i64(p, v, &p) != GBTD_OK) {
            va_end(ap);
            return gbtd_error(GBTD_EOVERFLOW, "%s: tensor size overflows int64", fn);
        }
    }
    va_end(ap);
    *out = p;
    return GBTD_OK;
}

static int64_t out_size(int64_t in, int64_t k, int64_t stride, int64_t pad)
{
    return (in + 2 * pad - k) / stride + 1;
}

gbtd_conv2d_shape gbtd_conv2d_shape_make(int64_t n, int64_t c_in, int64_t h, int64_t w,
                                         int64_t c_out, int64_t k, int64_t stride, int64_t pad,
                                         int64_t groups)
{
    gbtd_conv2d_shape s = {n, c_in, h, w, c_out, k, k, stride, pad, groups, 0, 0};
    if (stride >= 1) {
        s.h_out = out_size(h, k, stride, pad);
        s.w_out = out_size(w, k, stride, pad);
    }
    return s;
}

int gbtd_conv2d_shape_init(gbtd_conv2d_shape *s)
{
    static const char *fn = "conv2d";
    NN_NONNULL(fn, s);
    NN_ATLEAST(fn, s->n, 1);
    NN_ATLEAST(fn, s->c_in, 1);
    NN_ATLEAST(fn, s->h, 1);
    NN_ATLEAST(fn, s->w, 1);
    NN_ATLEAST(fn, s->c_out, 1);
    NN_ATLEAST(fn, s->kh, 1);
    NN_ATLEAST(fn, s->kw, 1);
    NN_ATLEAST(fn, s->stride, 1);
    NN_ATLEAST(fn, s->pad, 0);
    NN_ATLEAST(fn, s->groups, 1);
    if (s->h + 2 * s->pad < s->kh || s->w + 2 * s->pad < s->kw)
        return gbtd_error(GBTD_EINVAL, "%s: kernel %lldx%lld larger than padded input %lldx%lld", fn,
                          (long long)s->kh, (long long)s->kw, (long long)(s->h + 2 * s->pad),
                          (long long)(s->w + 2 * s->pad));
    if (s->c_in % s->groups || s->c_out % s->groups)
        return gbtd_error(GBTD_ESHAPE, "%s: groups = %lld does not divide c_in = %lld and c_out = %lld",
                          fn, (long long)s->groups, (long long)s->c_in, (long long)s->c_out);
    s->h_out = out_size(s->h, s->kh, s->stride, s->pad);
    s->w_out = out_size(s->w, s->kw, s->stride, s->pad);
    int64_t t;
    GBTD_CHECK(nn_numel(fn, &t, 4, s->n, s->c_in, s->h, s->w));
    GBTD_CHECK(nn_numel(fn, &t, 4, s->n, s->c_out, s->h_out, s->w_out));
    GBTD_CHECK(nn_numel(fn, &t, 4, s->c_out, s->c_in / s->groups, s->kh, s->kw));
    GBTD_CHECK(nn_numel(fn, &t, 5, s->c_in, s->kh, s->kw, s->h_out, s->w_out));
    if (s->h * s->w > INT32_MAX)
        return gbtd_error(GBTD_EOVERFLOW, "%s: plane of %lldx%lld too large", fn, (long long)s->h,
                          (long long)s->w);
    return GBTD_OK;
}

int nn_conv_shape(const char *fn, const gbtd_conv2d_shape *in, gbtd_conv2d_shape *out)
{
    if (!in) return gbtd_error(GBTD_EINVAL, "%s: shape is NULL", fn);
    *out = *in;
    return gbtd_conv2d_shape_init(out);
}

int64_t gbtd_conv2d_weight_count(const gbtd_conv2d_shape *s)
{
    return s->c_out * (s->c_in / s->groups) * s->kh * s->kw;
}

int64_t gbtd_conv2d_macs(const gbtd_conv2d_shape *s)
{
    return s->n * s->c_out * s->h_out * s->w_out * (s->c_in / s->groups) * s->kh * s->kw;
}

gbtd_pool2d_shape gbtd_pool2d_shape_make(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k,
                                         int64_t stride, int64_t pad)
{
    gbtd_pool2d_shape s = {n, c, h, w, k, stride, pad, 0, 0};
    if (stride >= 1) {
        s.h_out = out_size(h, k, stride, pad);
        s.w_out = out_size(w, k, stride, pad);
    }
    return s;
}

int gbtd_pool2d_shape_init(gbtd_pool2d_shape *s)
{
    static const char *fn = "pool2d";
    NN_NONNULL(fn, s);
    NN_ATLEAST(fn, s->n, 1);
    NN_ATLEAST(fn, s->c, 1);
    NN_ATLEAST(fn, s->h, 1);
    NN_ATLEAST(fn, s->w, 1);
    NN_ATLEAST(fn, s->k, 1);
    NN_ATLEAST(fn, s->stride, 1);
    NN_ATLEAST(fn, s->pad, 0);
    if (2 * s->pad > s->k)
        return gbtd_error(GBTD_EINVAL, "%s: pad = %lld exceeds half the window %lld", fn,
                          (long long)s->pad, (long long)s->k);
    if (s->h + 2 * s->pad < s->k || s->w + 2 * s->pad < s->k)
        return gbtd_error(GBTD_EINVAL, "%s: window %lld larger than padded input %lldx%lld", fn,
                          (long long)s->k, (long long)(s->h + 2 * s->pad),
                          (long long)(s->w + 2 * s->pad));
    int64_t t;
    GBTD_CHECK(nn_numel(fn, &t, 4, s->n, s->c, s->h, s->w));
    if (s->h * s->w > INT32_MAX)
        return gbtd_error(GBTD_EOVERFLOW, "%s: plane too large for int32 argmax", fn);
    s->h_out = out_size(s->h, s->k, s->stride, s->pad);
    s->w_out = out_size(s->w, s->k, s->stride, s->pad);
    return GBTD_OK;
}

int nn_pool_shape(const char *fn, const gbtd_pool2d_shape *in, gbtd_pool2d_shape *out)
{
    if (!in) return gbtd_error(GBTD_EINVAL, "%s: shape is NULL", fn);
    *out = *in;
    return gbtd_pool2d_shape_init(out);
}

int nn_bn_shape(const char *fn, const gbtd_bn_shape *s)
{
    NN_NONNULL(fn, s);
    NN_ATLEAST(fn, s->n, 1);
    NN_ATLEAST(fn, s->c, 1);
    NN_ATLEAST(fn, s->hw, 1);
    int64_t t;
    return nn_numel(fn, &t, 3, s->n, s->c, s->hw);
}

int nn_blas_single_begin(int omp_threads)
{
    if (omp_threads <= 1) return 0;
    const int saved = openblas_get_num_threads();
    if (saved != 1) openblas_set_num_threads(1);
    return saved;
}

void nn_blas_single_end(int saved)
{
    if (saved > 1) openblas_set_num_threads(saved);
}
