#include "core/tensor.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/status.h"

/* ---- creation ------------------------------------------------------------------------- */

static void set_contiguous_strides(gbtd_tensor *t)
{
    int64_t s = 1;
    for (int k = t->ndim - 1; k >= 0; k--) {
        t->stride[k] = s;
        s *= t->shape[k] > 0 ? t->shape[k] : 1;
    }
}

static int check_shape(int ndim, const int64_t *shape, int64_t *numel)
{
    if (ndim < 0 || ndim > GBTD_MAX_MODES)
        return gbtd_error(GBTD_EINVAL, "tensor: %d modes (allowed 0..%d)", ndim, GBTD_MAX_MODES);
    if (ndim > 0 && shape == NULL) return gbtd_error(GBTD_EINVAL, "tensor: NULL shape");
    for (int k = 0; k < ndim; k++)
        if (shape[k] < 0)
            return gbtd_error(GBTD_EINVAL, "tensor: size %lld of mode %d is negative",
                              (long long)shape[k], k);
    int64_t n;
    GBTD_CHECK(gbtd_prod_i64(shape, ndim, &n));
    size_t bytes;
    GBTD_CHECK(gbtd_mul_size((size_t)n, sizeof(double), &bytes));
    *numel = n;
    return GBTD_OK;
}

int gbtd_tensor_alloc(gbtd_tensor *t, int ndim, const int64_t *shape)
{
    memset(t, 0, sizeof *t);
    int64_t n;
    GBTD_CHECK(check_shape(ndim, shape, &n));
    double *d = gbtd_calloc((size_t)n, sizeof(double));
    if (d == NULL) return GBTD_ENOMEM;
    t->data = d;
    t->owned = d;
    t->ndim = ndim;
    for (int k = 0; k < ndim; k++) t->shape[k] = shape[k];
    set_contiguous_strides(t);
    return GBTD_OK;
}

int gbtd_matrix_alloc(gbtd_tensor *t, int64_t rows, int64_t cols)
{
    const int64_t shape[2] = {rows, cols};
    return gbtd_tensor_alloc(t, 2, shape);
}

int gbtd_tensor_alloc_like(gbtd_tensor *t, const gbtd_tensor *like)
{
    return gbtd_tensor_alloc(t, like->ndim, like->shape);
}

int gbtd_tensor_clone(gbtd_tensor *dst, const gbtd_tensor *src)
{
    GBTD_CHECK(gbtd_tensor_alloc_like(dst, src));
    return gbtd_tensor_copy(dst, src);
}

void gbtd_tensor_free(gbtd_tensor *t)
{
    if (t == NULL) return;
    gbtd_free(t->owned);
    memset(t, 0, sizeof *t);
}

/* ---- views ---------------------------------------------------------------------------- */

int gbtd_tensor_wrap(double *data, int ndim, const int64_t *shape, gbtd_tensor *view)
{
    memset(view, 0, sizeof *view);
    int64_t n;
    GBTD_CHECK(check_shape(ndim, shape, &n));
    if (data == NULL && n > 0) return gbtd_error(GBTD_EINVAL, "tensor_wrap: NULL data");
    view->data = data;
    view->ndim = ndim;
    for (int k = 0; k < ndim; k++) view->shape[k] = shape[k];
    set_contiguous_strides(view);
    return GBTD_OK;
}

int gbtd_tensor_view_sub(const gbtd_tensor *src, const int64_t *start, const int64_t *size,
                         const int64_t *step, gbtd_tensor *view)
{
    gbtd_tensor v = *src;
    v.owned = NULL;
    for (int k = 0; k < src->ndim; k++) {
        const int64_t st = step ? step[k] : 1;
        const int64_t n = size[k];
        if (st == 0 || n < 0)
            return gbtd_error(GBTD_EINVAL, "view_sub: mode %d has step %lld, size %lld", k,
                              (long long)st, (long long)n);
        if (n > 0) {
            const int64_t last = start[k] + (n - 1) * st;
            if (start[k] < 0 || start[k] >= src->shape[k] || last < 0 || last >= src->shape[k])
                return gbtd_error(GBTD_ERANGE,
                                  "view_sub: mode %d: start %lld, size %lld, step %lld exceed "
                                  "size %lld",
                                  k, (long long)start[k], (long long)n, (long long)st,
                                  (long long)src->shape[k]);
            v.data += start[k] * src->stride[k];
        }
        v.shape[k] = n;
        v.stride[k] = src->stride[k] * st;
    }
    *view = v;
    return GBTD_OK;
}

int gbtd_tensor_view_permute(const gbtd_tensor *src, const int *perm, gbtd_tensor *view)
{
    unsigned seen = 0;
    gbtd_tensor v = *src;
    v.owned = NULL;
    for (int k = 0; k < src->ndim; k++) {
        const int p = perm[k];
        if (p < 0 || p >= src->ndim || (seen & (1u << p)))
            return gbtd_error(GBTD_EINVAL, "view_permute: entry %d (%d) is not a permutation of "
                                           "0..%d",
                              k, p, src->ndim - 1);
        seen |= 1u << p;
        v.shape[k] = src->shape[p];
        v.stride[k] = src->stride[p];
    }
    *view = v;
    return GBTD_OK;
}

int gbtd_tensor_view_reshape(const gbtd_tensor *src, int ndim, const int64_t *shape,
                             gbtd_tensor *view)
{
    if (!gbtd_tensor_is_contiguous(src))
        return gbtd_error(GBTD_EINVAL, "view_reshape: source is not contiguous (copy it first)");
    int64_t n;
    GBTD_CHECK(check_shape(ndim, shape, &n));
    if (n != gbtd_tensor_numel(src)) {
        char a[128], b[128];
        return gbtd_error(GBTD_ESHAPE, "view_reshape: cannot reshape %s into %s",
                          gbtd_shape_str(src->ndim, src->shape, a, sizeof a),
                          gbtd_shape_str(ndim, shape, b, sizeof b));
    }
    return gbtd_tensor_wrap(src->data, ndim, shape, view);
}

/* ---- queries -------------------------------------------------------------------------- */

int64_t gbtd_tensor_numel(const gbtd_tensor *t)
{
    int64_t n = 1;
    for (int k = 0; k < t->ndim; k++) n *= t->shape[k];
    return n;
}

bool gbtd_tensor_is_contiguous(const gbtd_tensor *t)
{
    int64_t s = 1;
    for (int k = t->ndim - 1; k >= 0; k--) {
        if (t->shape[k] == 0) return true;
        if (t->shape[k] != 1 && t->stride[k] != s) return false;
        s *= t->shape[k];
    }
    return true;
}

bool gbtd_tensor_same_shape(const gbtd_tensor *a, const gbtd_tensor *b)
{
    if (a->ndim != b->ndim) return false;
    for (int k = 0; k < a->ndim; k++)
        if (a->shape[k] != b->shape[k]) return false;
    return true;
}

double *gbtd_tensor_ptr(const gbtd_tensor *t, const int64_t *idx)
{
    double *p = t->data;
    for (int k = 0; k < t->ndim; k++) p += idx[k] * t->stride[k];
    return p;
}

char *gbtd_shape_str(int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t used = 0;
    if (len == 0) return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, len, "(");
    for (int k = 0; k < ndim && used < len; k++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", k ? ", " : "",
                                 (long long)shape[k]);
    if (used < len) snprintf(buf + used, len - used, ndim == 1 ? ",)" : ")");
    return buf;
}

/* ---- strided iteration ---------------------------------------------------------------- */

/* Walks the outer modes of up to two tensors of equal shape; the innermost mode is handed to
 * `inner` as a run of n elements with strides sa, sb. Contiguous tensors collapse to one run. */
typedef void (*run_fn)(double *a, int64_t sa, double *b, int64_t sb, int64_t n, void *ctx);

static void walk2(const gbtd_tensor *a, const gbtd_tensor *b, run_fn inner, void *ctx)
{
    const int64_t total = gbtd_tensor_numel(a);
    if (total == 0) return;
    if (a->ndim == 0 || (gbtd_tensor_is_contiguous(a) && (b == NULL || gbtd_tensor_is_contiguous(b)))) {
        inner(a->data, 1, b ? b->data : NULL, 1, total, ctx);
        return;
    }
    const int nd = a->ndim;
    const int64_t n = a->shape[nd - 1];
    const int64_t sa = a->stride[nd - 1];
    const int64_t sb = b ? b->stride[nd - 1] : 0;
    int64_t idx[GBTD_MAX_MODES] = {0};
    for (int64_t done = 0; done < total; done += n) {
        double *pa = a->data;
        double *pb = b ? b->data : NULL;
        for (int k = 0; k < nd - 1; k++) {
            pa += idx[k] * a->stride[k];
            if (b) pb += idx[k] * b->stride[k];
        }
        inner(pa, sa, pb, sb, n, ctx);
        for (int k = nd - 2; k >= 0; k--) {
            if (++idx[k] < a->shape[k]) break;
            idx[k] = 0;
        }
    }
}

static void run_copy(double *a, int64_t sa, double *b, int64_t sb, int64_t n, void *ctx)
{
    (void)ctx;
    if (sa == 1 && sb == 1) {
        memmove(a, b, (size_t)n * sizeof(double));
        return;
    }
    for (int64_t i = 0; i < n; i++) a[i * sa] = b[i * sb];
}

int gbtd_tensor_copy(gbtd_tensor *dst, const gbtd_tensor *src)
{
    if (!gbtd_tensor_same_shape(dst, src)) {
        char a[128], b[128];
        return gbtd_error(GBTD_ESHAPE, "tensor_copy: destination %s, source %s",
                          gbtd_shape_str(dst->ndim, dst->shape, a, sizeof a),
                          gbtd_shape_str(src->ndim, src->shape, b, sizeof b));
    }
    walk2(dst, src, run_copy, NULL);
    return GBTD_OK;
}

static void run_fill(double *a, int64_t sa, double *b, int64_t sb, int64_t n, void *ctx)
{
    (void)b;
    (void)sb;
    const double v = *(const double *)ctx;
    for (int64_t i = 0; i < n; i++) a[i * sa] = v;
}

void gbtd_tensor_fill(gbtd_tensor *t, double value) { walk2(t, NULL, run_fill, &value); }

struct rand_ctx {
    gbtd_rng *rng;
    double p, q;
    int normal;
};

static void run_rand(double *a, int64_t sa, double *b, int64_t sb, int64_t n, void *ctx)
{
    (void)b;
    (void)sb;
    struct rand_ctx *c = ctx;
    if (c->normal)
        for (int64_t i = 0; i < n; i++) a[i * sa] = c->p + c->q * gbtd_rng_normal(c->rng);
    else
        for (int64_t i = 0; i < n; i++) a[i * sa] = c->p + c->q * gbtd_rng_uniform(c->rng);
}

void gbtd_tensor_fill_uniform(gbtd_tensor *t, gbtd_rng *rng, double lo, double hi)
{
    struct rand_ctx c = {rng, lo, hi - lo, 0};
    walk2(t, NULL, run_rand, &c);
}

void gbtd_tensor_fill_normal(gbtd_tensor *t, gbtd_rng *rng, double mean, double sd)
{
    struct rand_ctx c = {rng, mean, sd, 1};
    walk2(t, NULL, run_rand, &c);
}

static void run_scale(double *a, int64_t sa, double *b, int64_t sb, int64_t n, void *ctx)
{
    (void)b;
    (void)sb;
    const double s = *(const double *)ctx;
    for (int64_t i = 0; i < n; i++) a[i * sa] *= s;
}

void gbtd_tensor_scale(gbtd_tensor *t, double alpha) { walk2(t, NULL, run_scale, &alpha); }

static void run_axpy(double *y, int64_t sy, double *x, int64_t sx, int64_t n, void *ctx)
{
    const double alpha = *(const double *)ctx;
    for (int64_t i = 0; i < n; i++) y[i * sy] += alpha * x[i * sx];
}

static int need_same(const char *op, const gbtd_tensor *a, const gbtd_tensor *b)
{
    if (gbtd_tensor_same_shape(a, b)) return GBTD_OK;
    char sa[128], sb[128];
    return gbtd_error(GBTD_ESHAPE, "%s: shapes %s and %s differ", op,
                      gbtd_shape_str(a->ndim, a->shape, sa, sizeof sa),
                      gbtd_shape_str(b->ndim, b->shape, sb, sizeof sb));
}

int gbtd_tensor_axpy(double alpha, const gbtd_tensor *x, gbtd_tensor *y)
{
    GBTD_CHECK(need_same("tensor_axpy", x, y));
    walk2(y, x, run_axpy, &alpha);
    return GBTD_OK;
}

/* Scaled sum of squares (LAPACK dlassq style): value = scale^2 * ssq. */
struct ssq_ctx {
    double scale, ssq;
};

static void run_ssq(double *a, int64_t sa, double *b, int64_t sb, int64_t n, void *ctx)
{
    (void)b;
    (void)sb;
    struct ssq_ctx *c = ctx;
    for (int64_t i = 0; i < n; i++) {
        const double v = fabs(a[i * sa]);
        if (v == 0.0) continue;
        if (isnan(v) || c->scale < v) {
            const double r = c->scale / v;
            c->ssq = 1.0 + c->ssq * r * r;
            c->scale = v;
        } else {
            const double r = v / c->scale;
            c->ssq += r * r;
        }
    }
}

double gbtd_tensor_norm(const gbtd_tensor *t)
{
    struct ssq_ctx c = {0.0, 1.0};
    walk2(t, NULL, run_ssq, &c);
    return c.scale == 0.0 ? 0.0 : c.scale * sqrt(c.ssq);
}

static void run_dot(double *a, int64_t sa, double *b, int64_t sb, int64_t n, void *ctx)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += a[i * sa] * b[i * sb];
    *(double *)ctx += s;
}

int gbtd_tensor_inner(const gbtd_tensor *a, const gbtd_tensor *b, double *out)
{
    GBTD_CHECK(need_same("tensor_inner", a, b));
    double s = 0.0;
    walk2(a, b, run_dot, &s);
    *out = s;
    return GBTD_OK;
}

static void run_maxdiff(double *a, int64_t sa, double *b, int64_t sb, int64_t n, void *ctx)
{
    double *m = ctx;
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs(a[i * sa] - b[i * sb]);
        if (isnan(d) || d > *m) *m = d;
        if (isnan(*m)) return;
    }
}

int gbtd_tensor_max_abs_diff(const gbtd_tensor *a, const gbtd_tensor *b, double *out)
{
    GBTD_CHECK(need_same("tensor_max_abs_diff", a, b));
    double m = 0.0;
    walk2(a, b, run_maxdiff, &m);
    *out = m;
    return GBTD_OK;
}

struct finite_ctx {
    int64_t seen, bad;
};

static void run_finite(double *a, int64_t sa, double *b, int64_t sb, int64_t n, void *ctx)
{
    (void)b;
    (void)sb;
    struct finite_ctx *c = ctx;
    if (c->bad >= 0) return;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(a[i * sa])) {
            c->bad = c->seen + i;
            return;
        }
    c->seen += n;
}

int gbtd_tensor_check_finite(const gbtd_tensor *t, const char *what)
{
    struct finite_ctx c = {0, -1};
    walk2(t, NULL, run_finite, &c);
    if (c.bad < 0) return GBTD_OK;
    return gbtd_error(GBTD_ENONFINITE, "%s: non-finite value at flat index %lld",
                      what ? what : "tensor", (long long)c.bad);
}

/* ---- float32 conversion --------------------------------------------------------------- */

struct conv_ctx {
    float *f;
    int to_float;
};

static void run_conv(double *a, int64_t sa, double *b, int64_t sb, int64_t n, void *ctx)
{
    (void)b;
    (void)sb;
    struct conv_ctx *c = ctx;
    if (c->to_float)
        for (int64_t i = 0; i < n; i++) c->f[i] = (float)a[i * sa];
    else
        for (int64_t i = 0; i < n; i++) a[i * sa] = (double)c->f[i];
    c->f += n;
}

void gbtd_tensor_from_float(gbtd_tensor *dst, const float *src)
{
    struct conv_ctx c = {(float *)src, 0};
    walk2(dst, NULL, run_conv, &c);
}

void gbtd_tensor_to_float(const gbtd_tensor *src, float *dst)
{
    struct conv_ctx c = {dst, 1};
    walk2(src, NULL, run_conv, &c);
}
