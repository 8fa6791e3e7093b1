/* Tests of the layer kernels (lib/nn/ops.h), C only:
 *  1. every backward of the double-precision reference twins against central finite differences
 *     of the matching forward (ReLU / max-pool kinks kept away: inputs at least 0.05 from 0 and
 *     pool inputs on a grid with spacing 0.01, far above the step 1e-6);
 *  2. the fast float kernels against the float reference twins on many shapes (odd sizes, stride 2,
 *     padding, groups 1/2/4/depthwise, channel multiplier, batch 1), tolerance from the
 *     accumulation length times the sum of absolute terms;
 *  3. gradients accumulate (never overwrite) and a shared weight sums the gradients of its uses;
 *     the internal store variants (set_dx) equal accumulation onto zeros over any old contents;
 *  4. every error code of the public kernels. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "nn/gemm_small.h"
#include "nn/ops.h"
#include "nn/ops_internal.h"

static gbtd_rng *rng;
static const double U32 = 5.9604644775390625e-8; /* float32 unit roundoff 2^-24 */

static double *dvec(int64_t n, double lo, double hi)
{
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * gbtd_rng_uniform(rng);
    return v;
}

/* Uniform values with |v| >= 0.05 (kinks of ReLU out of reach of a 1e-6 step). */
static double *dvec_away(int64_t n)
{
    double *v = dvec(n, -1.0, 1.0);
    for (int64_t i = 0; i < n; i++) v[i] = v[i] < 0 ? v[i] - 0.05 : v[i] + 0.05;
    return v;
}

static float *fvec(int64_t n, double lo, double hi)
{
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) v[i] = (float)(lo + (hi - lo) * gbtd_rng_uniform(rng));
    return v;
}

static float *fzeros(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(float)); }
static double *dzeros(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(double)); }

static double dot(const double *a, const double *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ---- 1. finite differences ------------------------------------------------------------------
 * A layer is f: (inputs) -> y. With a random cotangent r, L = <f(x), r>; backward with dy = r
 * gives dL/dx, compared with (L(x + h e_i) - L(x - h e_i)) / 2h at every index (shapes small).
 * Error of the difference: h^2/6 |L'''| + eps |L| / h ~ 1e-12 + 1e-10; bound 1e-7 (1 + |g|). */
typedef double (*loss_fn)(void *ctx);

static void fd_check(const char *name, loss_fn L, void *ctx, double *param, int64_t n,
                     const double *grad)
{
    const double h = 1e-6;
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double keep = param[i];
        param[i] = keep + h;
        const double lp = L(ctx);
        param[i] = keep - h;
        const double lm = L(ctx);
        param[i] = keep;
        const double fd = (lp - lm) / (2 * h);
        const double err = fabs(fd - grad[i]) / (1.0 + fabs(grad[i]));
        if (err > worst) worst = err;
    }
    CHECK_LE(worst, 1e-7, name);
}

typedef struct conv_ctx {
    gbtd_conv2d_shape s;
    double *x, *w, *b, *r, *y;
} conv_ctx;

static double conv_loss(void *p)
{
    conv_ctx *c = p;
    gbtd_conv2d_forward_refd(&c->s, c->x, c->w, c->b, c->y);
    return dot(c->y, c->r, c->s.n * c->s.c_out * c->s.h_out * c->s.w_out);
}

static void fd_conv(const char *tag, gbtd_conv2d_shape s)
{
    gbtd_conv2d_shape_init(&s);
    const int64_t nx = s.n * s.c_in * s.h * s.w, nw = gbtd_conv2d_weight_count(&s);
    const int64_t ny = s.n * s.c_out * s.h_out * s.w_out;
    conv_ctx c = {s, dvec(nx, -1, 1), dvec(nw, -1, 1), dvec(s.c_out, -1, 1), dvec(ny, -1, 1),
                  dzeros(ny)};
    double *dx = dzeros(nx), *dw = dzeros(nw), *db = dzeros(s.c_out);
    char name[160];
    snprintf(name, sizeof name, "conv %s: backward_refd runs", tag);
    CHECK_OK(gbtd_conv2d_backward_refd(&s, c.x, c.w, c.r, dx, dw, db), name);
    snprintf(name, sizeof name, "conv %s: dx = finite differences (double)", tag);
    fd_check(name, conv_loss, &c, c.x, nx, dx);
    snprintf(name, sizeof name, "conv %s: dw = finite differences (double)", tag);
    fd_check(name, conv_loss, &c, c.w, nw, dw);
    snprintf(name, sizeof name, "conv %s: db = finite differences (double)", tag);
    fd_check(name, conv_loss, &c, c.b, s.c_out, db);
    free(c.x); free(c.w); free(c.b); free(c.r); free(c.y); free(dx); free(dw); free(db);
}

typedef struct bn_ctx {
    gbtd_bn_shape s;
    double *x, *g, *b, *r, *y, *mean, *rstd;
} bn_ctx;

static double bn_loss(void *p)
{
    bn_ctx *c = p;
    gbtd_bn_forward_train_refd(&c->s, c->x, c->g, c->b, 1e-5, 0.1, NULL, NULL, c->mean, c->rstd, c->y);
    return dot(c->y, c->r, c->s.n * c->s.c * c->s.hw);
}

static void fd_bn(void)
{
    const gbtd_bn_shape s = {3, 2, 5};
    const int64_t nx = 30;
    bn_ctx c = {s, dvec(nx, -2, 3), dvec(2, 0.5, 1.5), dvec(2, -1, 1), dvec(nx, -1, 1), dzeros(nx),
                dzeros(2), dzeros(2)};
    double *dx = dzeros(nx), *dg = dzeros(2), *db = dzeros(2);
    bn_loss(&c);
    CHECK_OK(gbtd_bn_backward_refd(&s, c.x, c.g, c.mean, c.rstd, c.r, dx, dg, db), "bn: backward_refd runs");
    fd_check("bn: dx = finite differences (double)", bn_loss, &c, c.x, nx, dx);
    fd_check("bn: dgamma = finite differences (double)", bn_loss, &c, c.g, 2, dg);
    fd_check("bn: dbeta = finite differences (double)", bn_loss, &c, c.b, 2, db);
    free(c.x); free(c.g); free(c.b); free(c.r); free(c.y); free(c.mean); free(c.rstd);
    free(dx); free(dg); free(db);
}

typedef struct gen_ctx {
    int kind;
    gbtd_pool2d_shape ps;
    int64_t n, c, h, w, k, in, out;
    double *x, *w2, *b, *r, *y;
    int32_t *idx;
    double smoothing;
} gen_ctx;

enum { K_RELU, K_MAXPOOL, K_AVGPOOL, K_GAP, K_LINX, K_XENT, K_SHORTA };

static int64_t gen_ny(const gen_ctx *c)
{
    switch (c->kind) {
    case K_RELU: return c->n;
    case K_MAXPOOL:
    case K_AVGPOOL: return c->ps.n * c->ps.c * c->ps.h_out * c->ps.w_out;
    case K_GAP: return c->n * c->c;
    case K_LINX: return c->n * c->out;
    case K_XENT: return 1;
    default: return c->n * (c->c + 2 * c->k) * ((c->h + 1) / 2) * ((c->w + 1) / 2);
    }
}

static double gen_loss(void *p)
{
    gen_ctx *c = p;
    double loss = 0;
    switch (c->kind) {
    case K_RELU: gbtd_relu_forward_refd(c->n, c->x, c->y); break;
    case K_MAXPOOL: gbtd_maxpool2d_forward_refd(&c->ps, c->x, c->y, c->idx); break;
    case K_AVGPOOL: gbtd_avgpool2d_forward_refd(&c->ps, c->x, c->y); break;
    case K_GAP: gbtd_global_avgpool_forward_refd(c->n, c->c, c->h * c->w, c->x, c->y); break;
    case K_LINX: gbtd_linear_forward_refd(c->n, c->in, c->out, c->x, c->w2, c->b, c->y); break;
    case K_XENT:
        gbtd_xent_forward_refd(c->n, c->k, c->x, c->idx, c->smoothing, c->y, NULL, &loss);
        return loss * c->r[0];
    default: gbtd_shortcut_a_forward_refd(c->n, c->c, c->h, c->w, c->k, c->x, c->y); break;
    }
    return dot(c->y, c->r, gen_ny(c));
}

static void fd_simple(void)
{
    /* ReLU */
    gen_ctx c = {.kind = K_RELU, .n = 40};
    c.x = dvec_away(40); c.r = dvec(40, -1, 1); c.y = dzeros(40);
    double *dx = dzeros(40);
    gen_loss(&c);
    gbtd_relu_backward_refd(40, c.y, c.r, dx);
    fd_check("relu: dx = finite differences (double)", gen_loss, &c, c.x, 40, dx);
    free(c.x); free(c.r); free(c.y); free(dx);

    /* pools: values are a random permutation of a grid with spacing 0.01, so no ties */
    for (int kind = K_MAXPOOL; kind <= K_AVGPOOL; kind++)
        for (int cfg = 0; cfg < 2; cfg++) {
            gen_ctx p = {.kind = kind};
            p.ps = cfg ? gbtd_pool2d_shape_make(2, 2, 7, 6, 3, 2, 1) : gbtd_pool2d_shape_make(1, 3, 4, 5, 2, 2, 0);
            gbtd_pool2d_shape_init(&p.ps);
            const int64_t nx = p.ps.n * p.ps.c * p.ps.h * p.ps.w, ny = gen_ny(&p);
            p.x = dzeros(nx);
            for (int64_t i = 0; i < nx; i++) p.x[i] = 0.01 * (double)i - 0.3;
            for (int64_t i = nx - 1; i > 0; i--) {
                const int64_t j = (int64_t)gbtd_rng_uint(rng, (uint64_t)i + 1);
                const double t = p.x[i]; p.x[i] = p.x[j]; p.x[j] = t;
            }
            p.r = dvec(ny, -1, 1); p.y = dzeros(ny); p.idx = calloc((size_t)ny, sizeof(int32_t));
            double *g = dzeros(nx);
            gen_loss(&p);
            if (kind == K_MAXPOOL) gbtd_maxpool2d_backward_refd(&p.ps, p.idx, p.r, g);
            else gbtd_avgpool2d_backward_refd(&p.ps, p.r, g);
            char name[96];
            snprintf(name, sizeof name, "%s pool cfg %d: dx = finite differences (double)",
                     kind == K_MAXPOOL ? "max" : "avg", cfg);
            fd_check(name, gen_loss, &p, p.x, nx, g);
            free(p.x); free(p.r); free(p.y); free(p.idx); free(g);
        }

    /* global average pool */
    {
        gen_ctx p = {.kind = K_GAP, .n = 2, .c = 3, .h = 3, .w = 2};
        p.x = dvec(36, -1, 1); p.r = dvec(6, -1, 1); p.y = dzeros(6);
        double *g = dzeros(36);
        gbtd_global_avgpool_backward_refd(2, 3, 6, p.r, g);
        fd_check("global avgpool: dx = finite differences (double)", gen_loss, &p, p.x, 36, g);
        free(p.x); free(p.r); free(p.y); free(g);
    }
    /* linear */
    {
        gen_ctx p = {.kind = K_LINX, .n = 3, .in = 5, .out = 4};
        p.x = dvec(15, -1, 1); p.w2 = dvec(20, -1, 1); p.b = dvec(4, -1, 1); p.r = dvec(12, -1, 1);
        p.y = dzeros(12);
        double *gx = dzeros(15), *gw = dzeros(20), *gb = dzeros(4);
        gbtd_linear_backward_refd(3, 5, 4, p.x, p.w2, p.r, gx, gw, gb);
        fd_check("linear: dx = finite differences (double)", gen_loss, &p, p.x, 15, gx);
        fd_check("linear: dw = finite differences (double)", gen_loss, &p, p.w2, 20, gw);
        fd_check("linear: db = finite differences (double)", gen_loss, &p, p.b, 4, gb);
        free(p.x); free(p.w2); free(p.b); free(p.r); free(p.y); free(gx); free(gw); free(gb);
    }
    /* softmax cross-entropy, with and without label smoothing */
    for (int sm = 0; sm < 2; sm++) {
        gen_ctx p = {.kind = K_XENT, .n = 4, .k = 5, .smoothing = sm ? 0.1 : 0.0};
        p.x = dvec(20, -3, 3); p.r = dvec(1, 0.5, 2); p.y = dzeros(20);
        int32_t lab[4] = {0, 4, 2, 2};
        p.idx = lab;
        double *g = dzeros(20);
        gen_loss(&p);
        gbtd_xent_backward_refd(4, 5, p.y, lab, p.smoothing, p.r[0], g);
        fd_check(sm ? "xent smoothing 0.1: dlogits = finite differences (double)"
                    : "xent: dlogits = finite differences (double)", gen_loss, &p, p.x, 20, g);
        free(p.x); free(p.r); free(p.y); free(g);
    }
    /* option-A shortcut, odd spatial size */
    {
        gen_ctx p = {.kind = K_SHORTA, .n = 2, .c = 3, .h = 5, .w = 4, .k = 2};
        const int64_t nx = 120, ny = gen_ny(&p);
        p.x = dvec(nx, -1, 1); p.r = dvec(ny, -1, 1); p.y = dzeros(ny);
        double *g = dzeros(nx);
        gbtd_shortcut_a_backward_refd(2, 3, 5, 4, 2, p.r, g);
        fd_check("shortcut A: dx = finite differences (double)", gen_loss, &p, p.x, nx, g);
        free(p.x); free(p.r); free(p.y); free(g);
    }
}

/* ---- 2. fast float kernels against the float reference --------------------------------------
 * A float sum of L products has error <= L u sum |terms| (first order; FMAs only lower it); the
 * reference sums in double and rounds once (u |ref|). The exact sum of |terms| is the same
 * reference kernel run on |x|, |w|, |dy|. Bound: (L + 2) u sum|terms| + 2 u |ref|, and a private
 * weight-gradient reduction over T threads adds T terms (covered by +2 up to 2 threads; we add
 * the thread count explicitly). */
static double max_violation(const float *got, const float *ref, const float *absref, int64_t n,
                            double L)
{
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double tol = (L + 2.0) * U32 * absref[i] + 2.0 * U32 * fabs(ref[i]) + 1e-30;
        const double v = fabs((double)got[i] - (double)ref[i]) / tol;
        if (!(v <= worst)) worst = v; /* NaN propagates */
    }
    return worst;
}

static void fabs_vec(float *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
}

/* use_ws = 0 passes no workspace: only legal where the kernel falls back to workspace-free loops
 * (depthwise). */
static void conv_vs_ref_ws(gbtd_conv2d_shape s, int with_bias, int use_ws)
{
    char tag[140], name[200];
    gbtd_conv2d_shape_init(&s);
    snprintf(tag, sizeof tag, "n%lld c%lld>%lld %lldx%lld k%lld s%lld p%lld g%lld%s%s", (long long)s.n,
             (long long)s.c_in, (long long)s.c_out, (long long)s.h, (long long)s.w, (long long)s.kh,
             (long long)s.stride, (long long)s.pad, (long long)s.groups, with_bias ? " bias" : "",
             use_ws ? "" : " no workspace");
    const int64_t nx = s.n * s.c_in * s.h * s.w, nw = gbtd_conv2d_weight_count(&s);
    const int64_t ny = s.n * s.c_out * s.h_out * s.w_out;
    float *x = fvec(nx, -1, 1), *w = fvec(nw, -1, 1), *b = with_bias ? fvec(s.c_out, -1, 1) : NULL;
    float *dy = fvec(ny, -1, 1);
    const size_t wl = use_ws ? gbtd_conv2d_workspace_size(&s, 0) : 0;
    float *ws = wl ? malloc(sizeof(float) * wl) : NULL;
    float *y = fzeros(ny), *yr = fzeros(ny), *ya = fzeros(ny);
    /* gradients start from a non-zero value to check accumulation */
    float *dx = fvec(nx, -1, 1), *dw = fvec(nw, -1, 1), *db = fvec(s.c_out, -1, 1);
    float *dxr = malloc(sizeof(float) * (size_t)nx), *dwr = malloc(sizeof(float) * (size_t)nw);
    float *dbr = malloc(sizeof(float) * (size_t)s.c_out);
    memcpy(dxr, dx, sizeof(float) * (size_t)nx);
    memcpy(dwr, dw, sizeof(float) * (size_t)nw);
    memcpy(dbr, db, sizeof(float) * (size_t)s.c_out);
    float *dxa = fzeros(nx), *dwa = fzeros(nw), *dba = fzeros(s.c_out);

    snprintf(name, sizeof name, "conv %s: forward runs", tag);
    CHECK_OK(gbtd_conv2d_forward(&s, x, w, b, y, ws, wl), name);
    gbtd_conv2d_forward_ref(&s, x, w, b, yr);
    snprintf(name, sizeof name, "conv %s: backward runs", tag);
    CHECK_OK(gbtd_conv2d_backward(&s, x, w, dy, dx, dw, b ? db : NULL, ws, wl), name);
    gbtd_conv2d_backward_ref(&s, x, w, dy, dxr, dwr, b ? dbr : NULL);
    /* sums of |terms|: the reference on absolute values, plus |initial gradient| */
    fabs_vec(x, nx); fabs_vec(w, nw); fabs_vec(dy, ny);
    if (b) fabs_vec(b, s.c_out);
    gbtd_conv2d_forward_ref(&s, x, w, b, ya);
    gbtd_conv2d_backward_ref(&s, x, w, dy, dxa, dwa, dba);
    for (int64_t i = 0; i < nx; i++) dxa[i] += fabsf(dxr[i]);
    for (int64_t i = 0; i < nw; i++) dwa[i] += fabsf(dwr[i]);
    for (int64_t i = 0; i < s.c_out; i++) dba[i] += fabsf(dbr[i]);
    const double cig = (double)(s.c_in / s.groups), cog = (double)(s.c_out / s.groups);
    const double taps = (double)(s.kh * s.kw), npix = (double)(s.n * s.h_out * s.w_out);
    const double T = gbtd_get_threads();
    snprintf(name, sizeof name, "conv %s: forward = ref (L = cig k k)", tag);
    CHECK_LE(max_violation(y, yr, ya, ny, cig * taps + 1), 1.0, name);
    snprintf(name, sizeof name, "conv %s: dx = ref, accumulated (L = cog k k)", tag);
    CHECK_LE(max_violation(dx, dxr, dxa, nx, cog * taps + 1), 1.0, name);
    snprintf(name, sizeof name, "conv %s: dw = ref, accumulated (L = n ho wo + T)", tag);
    CHECK_LE(max_violation(dw, dwr, dwa, nw, npix + T + 1), 1.0, name);
    if (b) {
        snprintf(name, sizeof name, "conv %s: db = ref, accumulated (L = n ho wo)", tag);
        CHECK_LE(max_violation(db, dbr, dba, s.c_out, npix + 1), 1.0, name);
    }
    free(x); free(w); free(b); free(dy); free(ws); free(y); free(yr); free(ya);
    free(dx); free(dw); free(db); free(dxr); free(dwr); free(dbr); free(dxa); free(dwa); free(dba);
}

static void conv_vs_ref(gbtd_conv2d_shape s, int with_bias) { conv_vs_ref_ws(s, with_bias, 1); }

/* Depthwise through the phase-plane kernels: strides 1-3, padding 0/1/2, odd sizes, batch 1,
 * channel multipliers 2 and 3, kernels 1x1 to 7x7, planes long enough for the 32-float blocks and
 * their 8-float tails; then the workspace-free fallback. */
static void conv_dw_cases(void)
{
    typedef struct { int64_t n, ci, h, w, co, k, s, p; int bias; } cs;
    static const cs cases[] = {
        {3, 5, 14, 14, 5, 3, 1, 1, 1},   /* CRU-like 14x14 */
        {2, 4, 28, 28, 4, 3, 1, 1, 0},   /* 28x28 */
        {2, 4, 28, 28, 4, 3, 2, 1, 1},   /* stride 2, even size */
        {1, 3, 15, 13, 3, 3, 2, 1, 0},   /* stride 2, odd sizes, batch 1 */
        {2, 3, 9, 11, 3, 3, 2, 0, 1},    /* stride 2, padding 0 */
        {2, 3, 10, 7, 3, 3, 1, 0, 0},    /* stride 1, padding 0 */
        {2, 4, 13, 12, 8, 3, 2, 1, 1},   /* multiplier 2, stride 2 */
        {1, 3, 11, 9, 9, 3, 1, 1, 0},    /* multiplier 3 */
        {2, 3, 12, 11, 3, 5, 2, 2, 1},   /* 5x5 stride 2 pad 2 */
        {1, 2, 13, 14, 4, 7, 1, 3, 0},   /* 7x7 pad 3, multiplier 2 */
        {2, 3, 6, 5, 3, 3, 1, 4, 1},     /* pad 4 >= kernel: rows keep their own padding */
        {2, 3, 9, 8, 3, 3, 3, 1, 1},     /* stride 3 */
        {2, 4, 7, 9, 4, 1, 2, 0, 0},     /* 1x1 stride 2 (phases no tap reads) */
        {2, 3, 2, 3, 3, 3, 1, 1, 1},     /* plane smaller than one vector */
        {1, 2, 9, 9, 2, 9, 1, 4, 1},     /* 81 taps: direct loops */
        {1, 2, 11, 11, 2, 3, 5, 1, 0},   /* stride 5: direct loops */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const cs *c = &cases[i];
        conv_vs_ref(gbtd_conv2d_shape_make(c->n, c->ci, c->h, c->w, c->co, c->k, c->s, c->p, c->ci),
                    c->bias);
    }
    conv_vs_ref_ws(gbtd_conv2d_shape_make(2, 4, 9, 10, 8, 3, 2, 1, 4), 1, 0);
    conv_vs_ref_ws(gbtd_conv2d_shape_make(2, 6, 14, 14, 6, 3, 1, 1, 6), 0, 0);
}

/* Dense 3x3 stride-1 convolutions through Winograd F(2x2, 3x3) (conv_wino.c; 64 channels from
 * 12x12, 32 from 28x28). Its rounding errors are not bounded by the direct sum of |terms| of each
 * output (a tile's transforms mix all 16 inputs under the tile), so the bound is normwise, from
 * the largest terms the transforms can make: |B^T d B| <= 4 max|x| (two +-1 per row of B^T),
 * |G g G^T| <= 9/4 max|w| (rows of G sum to 3/2 in absolute value), three +-1 per row of A^T:
 * forward terms up to 9 * 4 * 9/4 cig max|w| max|x| = 81 cig max|w| max|x|, over L = cig + 16
 * roundings (cig products summed, 2 + 2 input-transform and 4 output-transform additions, 4 in
 * the kernel transform, the bias); dx the same with cog and dy. dw by F(3x3, 2x2): |A dy A^T| <=
 * 4 max|dy|, |B^T x B| <= 4 max|x|, the rows of G^T sum to 2: terms up to 64 n ltp max|dy|
 * max|x| over L = n ltp + T + 16 (ltp <= (h/2 + 1)(w/2 + 2) tiles per image, T threads). The
 * result must also differ from the direct path's (GBTD_NN_NO_WINOGRAD=1), or Winograd did not
 * run. */
static double vmax_abs(const float *v, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) m = fabs(v[i]) > m ? fabs(v[i]) : m;
    return m;
}

static double max_violation_norm(const float *got, const float *ref, int64_t n, double L,
                                 double scale)
{
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double tol = (L + 2.0) * U32 * scale + 2.0 * U32 * fabs(ref[i]) + 1e-30;
        const double v = fabs((double)got[i] - (double)ref[i]) / tol;
        if (!(v <= worst)) worst = v;
    }
    return worst;
}

static void conv_wino_case(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int with_bias)
{
    char tag[120], name[200];
    gbtd_conv2d_shape s = gbtd_conv2d_shape_make(n, c, h, w, k, 3, 1, 1, 1);
    gbtd_conv2d_shape_init(&s);
    snprintf(tag, sizeof tag, "winograd n%lld c%lld>%lld %lldx%lld%s", (long long)n, (long long)c,
             (long long)k, (long long)h, (long long)w, with_bias ? " bias" : "");
    const int64_t nx = n * c * h * w, nw = k * c * 9, ny = n * k * h * w;
    float *x = fvec(nx, -1, 1), *wt = fvec(nw, -1, 1), *b = with_bias ? fvec(k, -1, 1) : NULL;
    float *dy = fvec(ny, -1, 1), *y = fzeros(ny), *yr = fzeros(ny), *yd = fzeros(ny);
    float *dx = fvec(nx, -1, 1), *dw = fvec(nw, -1, 1);
    float *dxr = malloc(sizeof(float) * (size_t)nx), *dwr = malloc(sizeof(float) * (size_t)nw);
    float *dxd = malloc(sizeof(float) * (size_t)nx), *dwd = malloc(sizeof(float) * (size_t)nw);
    memcpy(dxr, dx, sizeof(float) * (size_t)nx);
    memcpy(dwr, dw, sizeof(float) * (size_t)nw);
    memcpy(dxd, dx, sizeof(float) * (size_t)nx);
    memcpy(dwd, dw, sizeof(float) * (size_t)nw);
    const double mx = vmax_abs(x, nx), mw = vmax_abs(wt, nw), mdy = vmax_abs(dy, ny);
    const double mb = b ? vmax_abs(b, k) : 0.0;
    /* the workspace for both paths (the direct one may need more or less) */
    setenv("GBTD_NN_NO_WINOGRAD", "1", 1);
    const size_t wl0 = gbtd_conv2d_workspace_size(&s, 0);
    unsetenv("GBTD_NN_NO_WINOGRAD");
    const size_t wl1 = gbtd_conv2d_workspace_size(&s, 0), wl = wl0 > wl1 ? wl0 : wl1;
    float *ws = malloc(sizeof(float) * wl);

    snprintf(name, sizeof name, "conv %s: forward and backward run", tag);
    CHECK(gbtd_conv2d_forward(&s, x, wt, b, y, ws, wl) == GBTD_OK &&
              gbtd_conv2d_backward(&s, x, wt, dy, dx, dw, NULL, ws, wl) == GBTD_OK, name);
    setenv("GBTD_NN_NO_WINOGRAD", "1", 1);
    gbtd_conv2d_forward(&s, x, wt, b, yd, ws, wl);
    gbtd_conv2d_backward(&s, x, wt, dy, dxd, dwd, NULL, ws, wl);
    unsetenv("GBTD_NN_NO_WINOGRAD");
    gbtd_conv2d_forward_ref(&s, x, wt, b, yr);
    gbtd_conv2d_backward_ref(&s, x, wt, dy, dxr, dwr, NULL);

    const double T = gbtd_get_threads(), ltp = (double)((h / 2 + 1) * (w / 2 + 2));
    snprintf(name, sizeof name, "conv %s: forward = ref (normwise, L = cig + 16)", tag);
    CHECK_LE(max_violation_norm(y, yr, ny, (double)c + 16, 81.0 * (double)c * mw * mx + mb), 1.0,
             name);
    snprintf(name, sizeof name, "conv %s: dx = ref, accumulated (normwise, L = cog + 16)", tag);
    CHECK_LE(max_violation_norm(dx, dxr, nx, (double)k + 16, 81.0 * (double)k * mw * mdy), 1.0,
             name);
    snprintf(name, sizeof name, "conv %s: dw = ref, accumulated (normwise, L = n ltp + T + 16)",
             tag);
    CHECK_LE(max_violation_norm(dw, dwr, nw, (double)n * ltp + T + 16,
                                64.0 * (double)n * ltp * mdy * mx), 1.0, name);
    snprintf(name, sizeof name, "conv %s: not the direct path's result (Winograd ran)", tag);
    CHECK(memcmp(y, yd, sizeof(float) * (size_t)ny) != 0 &&
              memcmp(dx, dxd, sizeof(float) * (size_t)nx) != 0 &&
              memcmp(dw, dwd, sizeof(float) * (size_t)nw) != 0, name);
    free(x); free(wt); free(b); free(dy); free(y); free(yr); free(yd); free(dx); free(dw);
    free(dxr); free(dwr); free(dxd); free(dwd); free(ws);
}

static void conv_wino_cases(void)
{
    conv_wino_case(3, 64, 12, 12, 64, 1); /* smallest map taken; 3 images in one group of 6 */
    conv_wino_case(9, 64, 12, 13, 64, 0); /* a group of 5 images and a last one of 4 */
    /* 4 x 9 tiles: each row's last block of 8 runs 7 tiles past it, the last row's past the
     * phase planes' 40 tile positions (into the output planes' slack) */
    conv_wino_case(2, 64, 8, 18, 16, 1);
    conv_wino_case(5, 32, 28, 28, 16, 1); /* 32 channels on 28x28, fewer outputs than inputs */
    conv_wino_case(2, 72, 13, 15, 12, 0); /* odd sizes; 12 outputs: no 8-wide dy transform */
    conv_wino_case(1, 64, 14, 14, 40, 1); /* one image: threads without work */
}

/* Grouped and small dense convolutions through phase planes and the implicit-GEMM kernels (row
 * blocks of 1 to 8, column tails of 8 and fewer), plus a wide dense one left to im2col + BLAS. */
static void conv_grp_cases(void)
{
    typedef struct { int64_t n, ci, h, w, co, k, s, p, g; int bias; } cs;
    static const cs cases[] = {
        {2, 16, 14, 14, 16, 3, 1, 1, 4, 1},   /* 4 in / 4 out per group, 14x14 */
        {1, 24, 15, 13, 24, 3, 2, 1, 3, 0},   /* stride 2, odd sizes, batch 1 */
        {2, 12, 9, 11, 18, 3, 2, 0, 3, 1},    /* stride 2, padding 0, 4 in / 6 out */
        {2, 8, 10, 9, 16, 5, 1, 2, 2, 0},     /* 5x5 pad 2, 8 out per group */
        {2, 6, 11, 10, 6, 3, 3, 1, 2, 1},     /* stride 3 */
        {2, 14, 7, 8, 28, 3, 1, 1, 2, 0},     /* 7 in / 14 out per group: ragged row blocks */
        {3, 64, 6, 6, 64, 3, 1, 1, 16, 0},    /* 16 groups */
        {2, 32, 8, 8, 40, 3, 1, 1, 1, 1},     /* dense 32 > 40 through the phase path */
        {2, 72, 6, 5, 8, 3, 1, 1, 1, 0},      /* dense, 72 input channels */
        {2, 136, 6, 5, 8, 3, 1, 1, 1, 0},     /* dense, 136 input channels: im2col + BLAS */
        {2, 8, 5, 5, 8, 1, 2, 0, 2, 1},       /* grouped 1x1 stride 2 */
        {2, 8, 12, 11, 8, 3, 5, 1, 2, 1},     /* grouped stride 5: im2col + small GEMMs */
        {2, 8, 6, 7, 16, 3, 1, 2, 2, 0},      /* pad 2 = kernel - 1: rows share all padding */
        {2, 8, 5, 6, 8, 3, 1, 3, 2, 1},       /* pad 3 >= kernel: rows keep their own padding */
        {1, 4, 10, 10, 6, 9, 1, 4, 2, 0},     /* grouped 9x9 (81 taps): im2col + small GEMMs */
        /* the layers of a CIFAR ResNeXt-29 8x4d on 16x16 inputs, batch 4 */
        {4, 1, 16, 16, 32, 3, 1, 1, 1, 0},    /* stem */
        {4, 32, 16, 16, 32, 3, 1, 1, 8, 0},   /* grouped 3x3 */
        {4, 64, 16, 16, 64, 3, 2, 1, 8, 0},   /* grouped 3x3, stride 2 */
        {4, 32, 16, 16, 128, 1, 1, 0, 1, 0},  /* 1x1 expand */
        {4, 128, 16, 16, 256, 1, 2, 0, 1, 0}, /* 1x1 projection, stride 2 */
        {4, 64, 16, 16, 256, 1, 2, 0, 1, 0},  /* 1x1 projection, stride 2, 64 channels */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const cs *c = &cases[i];
        conv_vs_ref(gbtd_conv2d_shape_make(c->n, c->ci, c->h, c->w, c->co, c->k, c->s, c->p, c->g),
                    c->bias);
    }
}

static void conv_fast_cases(void)
{
    typedef struct { int64_t n, ci, h, w, co, k, s, p, g; int bias; } cs;
    static const cs cases[] = {
        {2, 3, 7, 9, 5, 3, 1, 1, 1, 1},     /* dense, odd sizes */
        {3, 8, 9, 8, 16, 3, 2, 1, 1, 0},    /* dense, stride 2 */
        {2, 16, 6, 5, 8, 1, 1, 0, 1, 1},    /* 1x1 stride 1: plain GEMM */
        {3, 16, 12, 12, 20, 1, 1, 0, 1, 1}, /* 1x1 on 144 pixels: the streaming GEMM */
        {2, 40, 28, 28, 13, 1, 1, 0, 1, 0}, /* the same, 28x28, 13 rows (blocks of 5 and 4) */
        {2, 16, 7, 7, 32, 1, 2, 0, 1, 0},   /* 1x1 stride 2: projection shortcut */
        {2, 16, 28, 28, 32, 1, 2, 0, 1, 0}, /* the same from 28x28: vector rows, overlapping end */
        {3, 8, 19, 21, 16, 1, 2, 0, 1, 1},  /* odd width 21: one output per row left over */
        {5, 16, 18, 17, 24, 1, 2, 0, 1, 0}, /* 9x9 outputs: images in chunks, odd width */
        {1, 3, 11, 13, 4, 7, 2, 3, 1, 1},   /* stem-like 7x7, batch 1 */
        {2, 8, 7, 6, 6, 3, 1, 1, 2, 1},     /* groups 2 */
        {3, 16, 9, 9, 16, 3, 2, 1, 4, 0},   /* groups 4, stride 2 */
        {2, 64, 6, 7, 64, 3, 1, 1, 2, 0},   /* groups 2 wide: BLAS per group */
        {2, 32, 5, 5, 32, 3, 1, 1, 8, 1},   /* 4 channels per group (ResNeXt 32x4d-like) */
        {5, 12, 4, 5, 12, 3, 1, 1, 12, 1},  /* depthwise */
        {2, 10, 9, 8, 10, 3, 2, 1, 10, 0},  /* depthwise stride 2 */
        {2, 6, 5, 7, 12, 3, 1, 1, 6, 1},    /* depthwise, channel multiplier 2 */
        {1, 7, 6, 6, 7, 5, 1, 2, 7, 0},     /* depthwise 5x5, batch 1 */
        {4, 6, 4, 4, 9, 3, 1, 0, 3, 1},     /* groups 3, no padding, 2 in / 3 out per group */
        {1, 4, 3, 3, 4, 3, 1, 1, 4, 0},     /* tiny depthwise */
        {2, 32, 17, 19, 8, 3, 1, 1, 4, 0},  /* long rows: 16-column tiles plus a tail */
        /* dense through OpenBLAS on small maps: images side by side in chunks (11 at 7x7),
         * per-thread ranges cut into equal chunks, odd batches, a short last chunk */
        {13, 96, 7, 7, 160, 1, 1, 0, 1, 1}, /* 1x1 wide, 7x7 */
        {25, 128, 7, 7, 64, 1, 1, 0, 1, 0}, /* 1x1 wide, 7x7, 13 + 12 images per thread */
        {5, 80, 14, 14, 48, 3, 2, 1, 1, 1}, /* 3x3 stride 2 to 7x7, 80 channels: phase planes */
        {5, 136, 14, 14, 24, 3, 2, 1, 1, 1}, /* the same with 136 channels: batched im2col */
        {1, 136, 24, 23, 8, 3, 2, 1, 1, 0}, /* 136 channels to 12x12: im2col per image */
        {12, 128, 14, 13, 96, 1, 2, 0, 1, 0}, /* 1x1 stride 2 projection to 7x7 */
        {3, 72, 9, 9, 24, 3, 1, 1, 1, 1},   /* 3x3 on 9x9 (81 pixels) */
        {3, 144, 9, 9, 24, 3, 1, 1, 1, 1},  /* the same with 144 channels: batched im2col */
        {1, 32, 66, 65, 8, 3, 1, 1, 1, 0},  /* 66x65: past Winograd's tile cap, phase planes */
        {1, 96, 7, 7, 32, 3, 1, 1, 1, 0},   /* batch 1: one image per GEMM */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const cs *c = &cases[i];
        conv_vs_ref(gbtd_conv2d_shape_make(c->n, c->ci, c->h, c->w, c->co, c->k, c->s, c->p, c->g),
                    c->bias);
    }
}

/* Batch norm: the fast kernel sums planes in eight float lanes (length hw/8 + 8) then in double,
 * so statistics have relative error ~ (hw/8 + 16) u; the output error is that times the size of
 * the terms: tol = 8 (hw/8 + 16) u (|gamma| (|xh| + 1) + |beta| + |y_ref|). Backward likewise
 * with the scale |gamma| rstd (|dy| + mean|dy| + |xh| mean|dy xh|). */
static void bn_vs_ref(gbtd_bn_shape s, int relu)
{
    char name[160];
    const int64_t nx = s.n * s.c * s.hw;
    float *x = fvec(nx, -2, 4), *g = fvec(s.c, 0.5, 1.5), *b = fvec(s.c, -1, 1), *dy = fvec(nx, -1, 1);
    float *rm = fvec(s.c, -1, 1), *rv = fvec(s.c, 0.5, 2), *rmr = malloc(sizeof(float) * (size_t)s.c);
    float *rvr = malloc(sizeof(float) * (size_t)s.c);
    memcpy(rmr, rm, sizeof(float) * (size_t)s.c);
    memcpy(rvr, rv, sizeof(float) * (size_t)s.c);
    float *y = fzeros(nx), *yr = fzeros(nx), *mean = fzeros(s.c), *rstd = fzeros(s.c);
    float *meanr = fzeros(s.c), *rstdr = fzeros(s.c);
    float *dx = fzeros(nx), *dxr = fzeros(nx), *dg = fzeros(s.c), *dgr = fzeros(s.c), *db = fzeros(s.c),
          *dbr = fzeros(s.c);
    const char *tag = relu ? "bn+relu" : "bn";
    if (relu) {
        CHECK_OK(gbtd_bn_relu_forward_train(&s, x, g, b, 1e-5f, 0.1f, rm, rv, mean, rstd, y), "bn+relu: forward runs");
        CHECK_OK(gbtd_bn_relu_backward(&s, x, g, mean, rstd, y, dy, dx, dg, db), "bn+relu: backward runs");
    } else {
        CHECK_OK(gbtd_bn_forward_train(&s, x, g, b, 1e-5f, 0.1f, rm, rv, mean, rstd, y), "bn: forward runs");
        CHECK_OK(gbtd_bn_backward(&s, x, g, mean, rstd, dy, dx, dg, db), "bn: backward runs");
    }
    gbtd_bn_forward_train_ref(&s, x, g, b, 1e-5f, 0.1f, rmr, rvr, meanr, rstdr, yr);
    float *dyr = malloc(sizeof(float) * (size_t)nx);
    for (int64_t i = 0; i < nx; i++) {
        if (relu) yr[i] = yr[i] > 0 ? yr[i] : 0.0f;
        dyr[i] = (!relu || yr[i] > 0) ? dy[i] : 0.0f;
    }
    gbtd_bn_backward_ref(&s, x, g, meanr, rstdr, dyr, dxr, dgr, dbr);
    const double Lf = 8.0 * ((double)s.hw / 8.0 + 16.0) * U32;
    double wy = 0, wdx = 0, wst = 0, wg = 0;
    for (int64_t c = 0; c < s.c; c++) {
        double sdy = 0, sdyxh = 0, sabs = 0;
        for (int64_t n = 0; n < s.n; n++)
            for (int64_t t = 0; t < s.hw; t++) {
                const int64_t k = (n * s.c + c) * s.hw + t;
                const double xh = ((double)x[k] - meanr[c]) * rstdr[c];
                sdy += fabs(dyr[k]);
                sdyxh += fabs(dyr[k] * xh);
                sabs += fabs(x[k] - meanr[c]);
            }
        const double m = (double)(s.n * s.hw);
        wst = fmax(wst, fabs(mean[c] - meanr[c]) / (Lf * sabs / m + Lf * fabs(meanr[c]) + 1e-30));
        wst = fmax(wst, fabs(rstd[c] - rstdr[c]) / (Lf * rstdr[c]));
        wst = fmax(wst, fabs(rm[c] - rmr[c]) / (Lf * (fabs(rmr[c]) + sabs / m)));
        wst = fmax(wst, fabs(rv[c] - rvr[c]) / (Lf * rvr[c]));
        wg = fmax(wg, fabs(dg[c] - dgr[c]) / (Lf * (sdyxh + 1e-30)));
        wg = fmax(wg, fabs(db[c] - dbr[c]) / (Lf * (sdy + 1e-30)));
        for (int64_t n = 0; n < s.n; n++)
            for (int64_t t = 0; t < s.hw; t++) {
                const int64_t k = (n * s.c + c) * s.hw + t;
                const double xh = fabs(((double)x[k] - meanr[c]) * rstdr[c]);
                const double ty = Lf * (fabs(g[c]) * (xh + 1) + fabs(b[c]) + fabs(yr[k]));
                wy = fmax(wy, fabs(y[k] - yr[k]) / ty);
                const double td = Lf * fabs(g[c]) * rstdr[c] * (fabs(dyr[k]) + sdy / m + xh * sdyxh / m);
                wdx = fmax(wdx, fabs(dx[k] - dxr[k]) / (td + 1e-30));
            }
    }
    snprintf(name, sizeof name, "%s n%lld c%lld hw%lld: y = ref (L = hw/8 + 16)", tag, (long long)s.n, (long long)s.c, (long long)s.hw);
    CHECK_LE(wy, 1.0, name);
    snprintf(name, sizeof name, "%s n%lld c%lld hw%lld: batch and running statistics = ref", tag, (long long)s.n, (long long)s.c, (long long)s.hw);
    CHECK_LE(wst, 1.0, name);
    snprintf(name, sizeof name, "%s n%lld c%lld hw%lld: dx = ref", tag, (long long)s.n, (long long)s.c, (long long)s.hw);
    CHECK_LE(wdx, 1.0, name);
    snprintf(name, sizeof name, "%s n%lld c%lld hw%lld: dgamma, dbeta = ref", tag, (long long)s.n, (long long)s.c, (long long)s.hw);
    CHECK_LE(wg, 1.0, name);
    /* evaluation mode */
    gbtd_bn_forward_eval(&s, x, g, b, 1e-5f, rm, rv, y);
    gbtd_bn_forward_eval_ref(&s, x, g, b, 1e-5f, rm, rv, yr);
    double we = 0;
    for (int64_t i = 0; i < nx; i++) we = fmax(we, fabs(y[i] - yr[i]) / (8 * U32 * (fabs(yr[i]) + fabs(x[i]) * 2 + 2)));
    snprintf(name, sizeof name, "%s n%lld c%lld hw%lld: eval forward = ref (few roundings)", tag, (long long)s.n, (long long)s.c, (long long)s.hw);
    CHECK_LE(we, 1.0, name);
    free(x); free(g); free(b); free(dy); free(rm); free(rv); free(rmr); free(rvr); free(y); free(yr);
    free(mean); free(rstd); free(meanr); free(rstdr); free(dx); free(dxr); free(dg); free(dgr);
    free(db); free(dbr); free(dyr);
}

/* Batch statistics of data far from zero (mean 1000, standard deviation ~0.6): a one-pass
 * sum-of-squares formula would lose every digit of the variance in float; the kernel must keep
 * rstd within the same L = hw/8 + 16 roundings (relative) as for centred data. */
static void bn_offset_stats(void)
{
    const gbtd_bn_shape s = {6, 3, 50};
    const int64_t nx = s.n * s.c * s.hw;
    float *x = fvec(nx, 999.0, 1001.0), *y = fzeros(nx), *mean = fzeros(s.c), *rstd = fzeros(s.c);
    double *xd = dzeros(nx), *yd = dzeros(nx), *md = dzeros(s.c), *rd = dzeros(s.c);
    for (int64_t i = 0; i < nx; i++) xd[i] = x[i];
    CHECK_OK(gbtd_bn_forward_train(&s, x, NULL, NULL, 1e-5f, 0.1f, NULL, NULL, mean, rstd, y),
             "bn offset data: forward runs");
    gbtd_bn_forward_train_refd(&s, xd, NULL, NULL, 1e-5, 0.1, NULL, NULL, md, rd, yd);
    const double Lf = 8.0 * ((double)s.hw / 8.0 + 16.0) * U32;
    double w = 0.0;
    for (int64_t c = 0; c < s.c; c++) w = fmax(w, fabs(rstd[c] - rd[c]) / (Lf * rd[c]));
    CHECK_LE(w, 1.0, "bn offset data (mean 1000): rstd = double reference (L = hw/8 + 16)");
    free(x); free(y); free(mean); free(rstd); free(xd); free(yd); free(md); free(rd);
}

/* Float kernels that are plain loops, against their double twins (a few roundings each). */
static void simple_vs_refd(void)
{
    const int64_t n = 3, c = 4, h = 7, w = 6, nx = n * c * h * w;
    float *x = fvec(nx, -1, 1);
    double *xd = dzeros(nx);
    for (int64_t i = 0; i < nx; i++) xd[i] = x[i];
    gbtd_pool2d_shape ps = gbtd_pool2d_shape_make(n, c, h, w, 3, 2, 1);
    gbtd_pool2d_shape_init(&ps);
    const int64_t ny = n * c * ps.h_out * ps.w_out;
    float *y = fzeros(ny);
    double *yd = dzeros(ny);
    int32_t *a = calloc((size_t)ny, 4), *ad = calloc((size_t)ny, 4);
    CHECK_OK(gbtd_maxpool2d_forward(&ps, x, y, a), "maxpool: forward runs");
    gbtd_maxpool2d_forward_refd(&ps, xd, yd, ad);
    int same = 1;
    for (int64_t i = 0; i < ny; i++) same &= (y[i] == (float)yd[i]) && a[i] == ad[i];
    CHECK(same, "maxpool: values and argmax = refd exactly");
    float *dy = fvec(ny, -1, 1), *dx = fzeros(nx);
    double *dyd = dzeros(ny), *dxd = dzeros(nx);
    for (int64_t i = 0; i < ny; i++) dyd[i] = dy[i];
    gbtd_maxpool2d_backward(&ps, a, dy, dx);
    gbtd_maxpool2d_backward_refd(&ps, ad, dyd, dxd);
    double e = 0;
    for (int64_t i = 0; i < nx; i++) e = fmax(e, fabs(dx[i] - dxd[i]));
    CHECK_LE(e, 9 * 2 * U32, "maxpool: backward = refd (at most 9 float additions of |dy| <= 1)");
    CHECK_OK(gbtd_avgpool2d_forward(&ps, x, y), "avgpool: forward runs");
    gbtd_avgpool2d_forward_refd(&ps, xd, yd);
    e = 0;
    for (int64_t i = 0; i < ny; i++) e = fmax(e, fabs(y[i] - yd[i]));
    CHECK_LE(e, 12 * U32, "avgpool: forward = refd (9 terms |x| <= 1, /9)");
    memset(dx, 0, sizeof(float) * (size_t)nx);
    memset(dxd, 0, sizeof(double) * (size_t)nx);
    gbtd_avgpool2d_backward(&ps, dy, dx);
    gbtd_avgpool2d_backward_refd(&ps, dyd, dxd);
    e = 0;
    for (int64_t i = 0; i < nx; i++) e = fmax(e, fabs(dx[i] - dxd[i]));
    CHECK_LE(e, 12 * U32, "avgpool: backward = refd");
    float gy[12];
    double gyd[12];
    gbtd_global_avgpool_forward(n, c, h * w, x, gy);
    gbtd_global_avgpool_forward_refd(n, c, h * w, xd, gyd);
    e = 0;
    for (int i = 0; i < 12; i++) e = fmax(e, fabs(gy[i] - gyd[i]));
    CHECK_LE(e, 2 * U32, "global avgpool: forward = refd (double sum, one rounding)");
    /* shortcut A with odd sizes */
    const int64_t nys = n * (c + 4) * 4 * 3;
    float *ys = fzeros(nys);
    double *ysd = dzeros(nys);
    gbtd_shortcut_a_forward(n, c, h, w, 2, x, ys);
    gbtd_shortcut_a_forward_refd(n, c, h, w, 2, xd, ysd);
    same = 1;
    for (int64_t i = 0; i < nys; i++) same &= ys[i] == (float)ysd[i];
    CHECK(same, "shortcut A: forward = refd exactly");
    /* xent */
    float logits[15], probs[15], losses[3], loss, dl[15] = {0};
    double ld[15], pd[15], lossd, dld[15] = {0};
    int32_t lab[3] = {2, 0, 4};
    for (int i = 0; i < 15; i++) ld[i] = logits[i] = (float)(6 * gbtd_rng_uniform(rng) - 3);
    CHECK_OK(gbtd_xent_forward(3, 5, logits, lab, 0.2f, probs, losses, &loss), "xent: forward runs");
    gbtd_xent_forward_refd(3, 5, ld, lab, (double)0.2f, pd, NULL, &lossd);
    CHECK_CLOSE(loss, lossd, 0, 64 * U32, "xent: loss = refd (exp/log in float, 64 u)");
    gbtd_xent_backward(3, 5, probs, lab, 0.2f, 1.0f, dl);
    gbtd_xent_backward_refd(3, 5, pd, lab, (double)0.2f, 1.0, dld);
    e = 0;
    for (int i = 0; i < 15; i++) e = fmax(e, fabs(dl[i] - dld[i]));
    CHECK_LE(e, 64 * U32, "xent: dlogits = refd");
    /* linear, fast vs float ref */
    float *lw = fvec(5 * 7, -1, 1), *lb = fvec(5, -1, 1), *lx = fvec(3 * 7, -1, 1);
    float ly[15], lyr[15];
    gbtd_linear_forward(3, 7, 5, lx, lw, lb, ly);
    gbtd_linear_forward_ref(3, 7, 5, lx, lw, lb, lyr);
    e = 0;
    for (int i = 0; i < 15; i++) e = fmax(e, fabs(ly[i] - lyr[i]));
    CHECK_LE(e, 10 * 8 * U32, "linear: forward = ref (L = 8, terms <= 1)");
    float ldx[21] = {0}, ldxr[21] = {0}, ldw[35] = {0}, ldwr[35] = {0}, ldb[5] = {0}, ldbr[5] = {0};
    gbtd_linear_backward(3, 7, 5, lx, lw, ly, ldx, ldw, ldb);
    gbtd_linear_backward_ref(3, 7, 5, lx, lw, ly, ldxr, ldwr, ldbr);
    e = 0;
    for (int i = 0; i < 21; i++) e = fmax(e, fabs(ldx[i] - ldxr[i]));
    for (int i = 0; i < 35; i++) e = fmax(e, fabs(ldw[i] - ldwr[i]));
    for (int i = 0; i < 5; i++) e = fmax(e, fabs(ldb[i] - ldbr[i]));
    CHECK_LE(e, 10 * 8 * 8 * U32, "linear: backward = ref (L <= 5, terms <= 8)");
    /* element-wise */
    float ea[5] = {-1, 2, -3, 4, 0.5f}, eb[5] = {2, -3, 1, 1, -1}, ey[5], eda[5] = {1, 1, 1, 1, 1}, edb[5] = {0};
    float edy[5] = {1, 2, 3, 4, 5};
    gbtd_add_relu_forward(5, ea, eb, ey);
    gbtd_add_relu_backward(5, ey, edy, eda, edb);
    CHECK(ey[0] == 1 && ey[1] == 0 && ey[2] == 0 && ey[3] == 5 && ey[4] == 0, "add_relu: forward");
    CHECK(eda[0] == 2 && eda[1] == 1 && eda[3] == 5 && edb[0] == 1 && edb[2] == 0 && edb[3] == 4,
          "add_relu: backward masks and accumulates");
    gbtd_add_forward(5, ea, eb, ea); /* aliasing allowed */
    CHECK(ea[0] == 1 && ea[1] == -1 && ea[4] == -0.5f, "add: forward in place");
    float ad2[5] = {0};
    gbtd_add_backward(5, edy, ad2, NULL);
    CHECK(ad2[4] == 5, "add: backward accumulates, NULL gradient skipped");
    gbtd_relu_forward(5, ea, ea);
    CHECK(ea[0] == 1 && ea[1] == 0 && ea[4] == 0, "relu: forward in place");
    /* the runner's add backward (store or accumulate each side; ReLU gate or none): every case
     * on a length past the parallel threshold and not a multiple of the chunk; each output is one
     * float operation (g, or old + g), so the expected values are exact */
    {
        const int64_t L = 70001;
        float *ry = fvec(L, -1, 1), *rdy = fvec(L, -1, 1), *a0 = fvec(L, -1, 1), *b0 = fvec(L, -1, 1);
        float *ra = fzeros(L), *rb = fzeros(L);
        int bad = 0;
        for (int relu = 0; relu < 2; relu++)
            for (int ma = 0; ma < 3; ma++)
                for (int mb = 0; mb < 3; mb++) {
                    memcpy(ra, a0, sizeof(float) * (size_t)L);
                    memcpy(rb, b0, sizeof(float) * (size_t)L);
                    nn_add_backward_store(L, relu, ry, rdy, ma ? ra : NULL, ma == 2, mb ? rb : NULL,
                                          mb == 2);
                    for (int64_t i = 0; i < L; i++) {
                        const float g = relu && !(ry[i] > 0.0f) ? 0.0f : rdy[i];
                        const float ea_ = ma == 0 ? a0[i] : ma == 2 ? g : a0[i] + g;
                        const float eb_ = mb == 0 ? b0[i] : mb == 2 ? g : b0[i] + g;
                        bad += ra[i] != ea_ || rb[i] != eb_;
                    }
                }
        CHECK(bad == 0, "add backward store: 18 store / accumulate / skip cases exact");
        /* one value as both inputs: it receives the gradient twice */
        memcpy(ra, a0, sizeof(float) * (size_t)L);
        nn_add_backward_store(L, 1, ry, rdy, ra, 1, ra, 1);
        bad = 0;
        for (int64_t i = 0; i < L; i++) {
            const float g = ry[i] > 0.0f ? rdy[i] : 0.0f;
            bad += ra[i] != g + g;
        }
        CHECK(bad == 0, "add backward store: same buffer both sides gets 2 g");
        free(ry); free(rdy); free(a0); free(b0); free(ra); free(rb);
    }
    free(x); free(xd); free(y); free(yd); free(a); free(ad); free(dy); free(dx); free(dyd); free(dxd);
    free(ys); free(ysd); free(lw); free(lb); free(lx);
}

/* ---- 3. weight sharing ------------------------------------------------------------------------
 * The same depthwise weight used on two inputs (and a 1x1 projection at strides 1 and 2): two
 * backward calls into one dw equal the sum of the separate gradients. */
static void sharing(void)
{
    gbtd_conv2d_shape s1 = gbtd_conv2d_shape_make(2, 8, 6, 6, 8, 3, 1, 1, 8);
    gbtd_conv2d_shape s2 = gbtd_conv2d_shape_make(2, 8, 6, 6, 8, 3, 2, 1, 8);
    gbtd_conv2d_shape_init(&s1);
    gbtd_conv2d_shape_init(&s2);
    const size_t wl = gbtd_conv2d_workspace_size(&s1, 0) + gbtd_conv2d_workspace_size(&s2, 0) + 16;
    float *ws = malloc(sizeof(float) * wl);
    float *w = fvec(72, -1, 1), *x1 = fvec(576, -1, 1), *x2 = fvec(576, -1, 1);
    float *d1 = fvec(576, -1, 1), *d2 = fvec(2 * 8 * 3 * 3, -1, 1);
    float *dw = fzeros(72), *a = fzeros(72), *b = fzeros(72);
    gbtd_conv2d_backward(&s1, x1, w, d1, NULL, dw, NULL, ws, wl);
    gbtd_conv2d_backward(&s2, x2, w, d2, NULL, dw, NULL, ws, wl);
    gbtd_conv2d_backward_ref(&s1, x1, w, d1, NULL, a, NULL);
    gbtd_conv2d_backward_ref(&s2, x2, w, d2, NULL, b, NULL);
    double e = 0;
    for (int i = 0; i < 72; i++) e = fmax(e, fabs(dw[i] - (a[i] + b[i])) / (fabs(a[i]) + fabs(b[i]) + 72.0 * 4 * U32 * 72));
    CHECK_LE(e, 1.0, "sharing: depthwise weight used at stride 1 and 2 gets the sum of both gradients");
    free(ws); free(w); free(x1); free(x2); free(d1); free(d2); free(dw); free(a); free(b);
}

/* ---- 4. errors ------------------------------------------------------------------------------- */
static void errors(void)
{
    gbtd_conv2d_shape s = gbtd_conv2d_shape_make(1, 6, 5, 5, 4, 3, 1, 1, 4);
    CHECK_STATUS(gbtd_conv2d_shape_init(&s), GBTD_ESHAPE, "conv: groups not dividing c_in -> ESHAPE");
    CHECK(strstr(gbtd_last_error(), "groups") != NULL, "conv: ESHAPE detail names groups");
    s = gbtd_conv2d_shape_make(1, 4, 2, 2, 4, 7, 1, 1, 1);
    CHECK_STATUS(gbtd_conv2d_shape_init(&s), GBTD_EINVAL, "conv: kernel larger than padded input -> EINVAL");
    s = gbtd_conv2d_shape_make(0, 4, 5, 5, 4, 3, 1, 1, 1);
    CHECK_STATUS(gbtd_conv2d_shape_init(&s), GBTD_EINVAL, "conv: n = 0 -> EINVAL");
    s = gbtd_conv2d_shape_make(1, 4, 5, 5, 4, 3, 0, 1, 1);
    CHECK_STATUS(gbtd_conv2d_shape_init(&s), GBTD_EINVAL, "conv: stride 0 -> EINVAL");
    CHECK_STATUS(gbtd_conv2d_shape_init(NULL), GBTD_EINVAL, "conv: NULL shape -> EINVAL");
    s = gbtd_conv2d_shape_make(INT64_C(1) << 40, 1 << 20, 1 << 10, 1 << 10, 4, 3, 1, 1, 1);
    CHECK_STATUS(gbtd_conv2d_shape_init(&s), GBTD_EOVERFLOW, "conv: huge shape -> EOVERFLOW");
    s = gbtd_conv2d_shape_make(2, 4, 5, 5, 4, 3, 1, 1, 1);
    gbtd_conv2d_shape_init(&s);
    float x[200] = {0}, w[144] = {0}, y[200], ws[1];
    CHECK_STATUS(gbtd_conv2d_forward(&s, x, w, NULL, y, NULL, 0), GBTD_EINVAL, "conv: missing workspace -> EINVAL");
    CHECK(strstr(gbtd_last_error(), "workspace") != NULL, "conv: workspace detail");
    CHECK_STATUS(gbtd_conv2d_forward(&s, x, w, NULL, y, ws, 1), GBTD_EINVAL, "conv: small workspace -> EINVAL");
    CHECK_STATUS(gbtd_conv2d_backward(&s, x, w, y, x, NULL, NULL, ws, 1), GBTD_EINVAL, "conv backward: small workspace -> EINVAL");
    CHECK_STATUS(gbtd_conv2d_forward(&s, NULL, w, NULL, y, ws, 1), GBTD_EINVAL, "conv: NULL x -> EINVAL");
    CHECK_STATUS(gbtd_conv2d_forward_ref(&s, x, NULL, NULL, y), GBTD_EINVAL, "conv ref: NULL w -> EINVAL");
    CHECK_STATUS(gbtd_conv2d_backward(&s, x, w, NULL, x, NULL, NULL, ws, 1), GBTD_EINVAL, "conv backward: NULL dy -> EINVAL");
    CHECK(gbtd_conv2d_workspace_size(NULL, 1) == 0, "conv: workspace size of a NULL shape is 0");
    gbtd_bn_shape bs = {1, 2, 1};
    float m[2], r[2];
    CHECK_STATUS(gbtd_bn_forward_train(&bs, x, NULL, NULL, 1e-5f, 0.1f, NULL, NULL, m, r, y), GBTD_EINVAL, "bn: one value per channel -> EINVAL");
    bs.hw = 4;
    CHECK_STATUS(gbtd_bn_forward_train(&bs, x, NULL, NULL, 0.0f, 0.1f, NULL, NULL, m, r, y), GBTD_EINVAL, "bn: eps = 0 -> EINVAL");
    CHECK_STATUS(gbtd_bn_forward_train(&bs, x, NULL, NULL, 1e-5f, 0.1f, NULL, NULL, NULL, r, y), GBTD_EINVAL, "bn: NULL mean cache -> EINVAL");
    CHECK_STATUS(gbtd_bn_forward_eval(&bs, x, NULL, NULL, 1e-5f, NULL, r, y), GBTD_EINVAL, "bn eval: NULL running mean -> EINVAL");
    CHECK_STATUS(gbtd_bn_relu_backward(&bs, x, NULL, m, r, NULL, y, x, NULL, NULL), GBTD_EINVAL, "bn+relu backward: NULL y -> EINVAL");
    bs.c = -1;
    CHECK_STATUS(gbtd_bn_backward(&bs, x, NULL, m, r, y, x, NULL, NULL), GBTD_EINVAL, "bn: negative c -> EINVAL");
    gbtd_pool2d_shape ps = gbtd_pool2d_shape_make(1, 1, 4, 4, 3, 1, 2);
    CHECK_STATUS(gbtd_pool2d_shape_init(&ps), GBTD_EINVAL, "pool: pad > k/2 -> EINVAL");
    ps = gbtd_pool2d_shape_make(1, 1, 2, 2, 5, 1, 1);
    CHECK_STATUS(gbtd_maxpool2d_forward(&ps, x, y, (int32_t *)ws), GBTD_EINVAL, "pool: window larger than input -> EINVAL");
    ps = gbtd_pool2d_shape_make(1, 1, 4, 4, 2, 2, 0);
    CHECK_STATUS(gbtd_maxpool2d_forward(&ps, x, y, NULL), GBTD_EINVAL, "maxpool: NULL argmax -> EINVAL");
    CHECK_STATUS(gbtd_avgpool2d_forward(&ps, NULL, y), GBTD_EINVAL, "avgpool: NULL x -> EINVAL");
    CHECK_STATUS(gbtd_global_avgpool_forward(1, 0, 4, x, y), GBTD_EINVAL, "global avgpool: c = 0 -> EINVAL");
    CHECK_STATUS(gbtd_linear_forward(2, 0, 3, x, w, NULL, y), GBTD_EINVAL, "linear: in = 0 -> EINVAL");
    CHECK_STATUS(gbtd_linear_forward(INT64_C(1) << 40, 2, 3, x, w, NULL, y), GBTD_EOVERFLOW, "linear: n beyond BLAS int -> EOVERFLOW");
    int32_t lab[2] = {0, 3};
    float loss;
    CHECK_STATUS(gbtd_xent_forward(2, 3, x, lab, 0.0f, y, NULL, &loss), GBTD_ERANGE, "xent: label 3 of 3 classes -> ERANGE");
    CHECK(strstr(gbtd_last_error(), "label 3") != NULL, "xent: ERANGE detail names the label");
    CHECK_STATUS(gbtd_xent_backward(2, 3, x, lab, 0.0f, 1.0f, y), GBTD_ERANGE, "xent backward: label out of range -> ERANGE");
    lab[1] = 1;
    CHECK_STATUS(gbtd_xent_forward(2, 3, x, lab, 1.5f, y, NULL, &loss), GBTD_EINVAL, "xent: smoothing 1.5 -> EINVAL");
    CHECK_STATUS(gbtd_shortcut_a_forward(1, 2, 4, 4, -1, x, y), GBTD_EINVAL, "shortcut A: pad_c < 0 -> EINVAL");
    CHECK_STATUS(gbtd_relu_forward(0, x, y), GBTD_EINVAL, "relu: len 0 -> EINVAL");
    CHECK_STATUS(gbtd_add_forward(3, x, NULL, y), GBTD_EINVAL, "add: NULL b -> EINVAL");
}

/* The store variants used by the network backward: dx written over NaN garbage equals dx
 * accumulated onto zeros (same operations, so exactly), on every conv path and both BN kinds. */
static void store_mode(void)
{
    typedef struct { int64_t n, ci, h, w, co, k, s, p, g; } cs;
    static const cs cases[] = {
        {3, 16, 6, 5, 24, 1, 1, 0, 1},  /* 1x1 stride 1: sgemm writes dx */
        {3, 24, 12, 12, 16, 1, 1, 0, 1}, /* 1x1 on 144 pixels: the streaming GEMM stores dx */
        {2, 80, 7, 7, 96, 3, 1, 1, 1},  /* wide dense 3x3: im2col + col2im */
        {2, 96, 8, 8, 128, 1, 2, 0, 1}, /* 1x1 stride 2 projection, wide */
        {2, 16, 28, 28, 32, 1, 2, 0, 1}, /* the same from 28x28: upsampled rows stored */
        {5, 16, 18, 17, 24, 1, 2, 0, 1}, /* the same on chunks of images, odd width */
        {13, 96, 7, 7, 64, 1, 1, 0, 1}, /* 1x1 on 7x7: images in chunks, dx copied out */
        {7, 80, 7, 7, 40, 3, 1, 1, 1},  /* 3x3 on 7x7: chunks, col2im per image */
        {2, 16, 9, 9, 16, 3, 2, 1, 1},  /* narrow dense: phase planes */
        {2, 32, 5, 5, 32, 3, 1, 1, 8},  /* grouped */
        {3, 24, 11, 19, 24, 3, 2, 1, 4}, /* grouped stride 2, odd width: phase planes stored */
        {2, 12, 10, 11, 12, 3, 3, 1, 3}, /* grouped stride 3 (portable unpack) */
        {2, 16, 28, 28, 16, 3, 1, 1, 1}, /* narrow dense 28x28 stride 1: phase planes stored */
        {2, 12, 6, 6, 12, 3, 1, 1, 12}, /* depthwise */
        {2, 8, 9, 11, 16, 3, 2, 1, 8},  /* depthwise stride 2, multiplier 2: planes stored */
    };
    for (int t = 1; t <= 2; t++) {
        gbtd_set_threads(t);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            const cs *c = &cases[i];
            gbtd_conv2d_shape s =
                gbtd_conv2d_shape_make(c->n, c->ci, c->h, c->w, c->co, c->k, c->s, c->p, c->g);
            gbtd_conv2d_shape_init(&s);
            const int64_t nx = s.n * s.c_in * s.h * s.w, nw = gbtd_conv2d_weight_count(&s);
            const int64_t ny = s.n * s.c_out * s.h_out * s.w_out;
            float *x = fvec(nx, -1, 1), *w = fvec(nw, -1, 1), *dy = fvec(ny, -1, 1);
            const size_t wl = gbtd_conv2d_workspace_size(&s, 0);
            float *ws = malloc(sizeof(float) * (wl ? wl : 1));
            float *dxa = fzeros(nx), *dxs = malloc(sizeof(float) * (size_t)nx);
            float *dwa = fzeros(nw), *dws = fzeros(nw);
            for (int64_t k = 0; k < nx; k++) dxs[k] = NAN;
            char name[160];
            snprintf(name, sizeof name, "store conv c%lld>%lld k%lld s%lld g%lld threads %d: runs",
                     (long long)c->ci, (long long)c->co, (long long)c->k, (long long)c->s,
                     (long long)c->g, t);
            CHECK_OK(gbtd_conv2d_backward(&s, x, w, dy, dxa, dwa, NULL, ws, wl), name);
            CHECK_OK(nn_conv2d_backward_set(&s, x, w, dy, dxs, dws, NULL, ws, wl, 1), name);
            int64_t bad = 0;
            for (int64_t k = 0; k < nx; k++) bad += !(dxs[k] == dxa[k]);
            for (int64_t k = 0; k < nw; k++) bad += !(dws[k] == dwa[k]);
            snprintf(name, sizeof name, "store conv c%lld>%lld k%lld s%lld g%lld threads %d: dx, dw "
                     "equal accumulation onto zeros", (long long)c->ci, (long long)c->co,
                     (long long)c->k, (long long)c->s, (long long)c->g, t);
            CHECK(bad == 0, name);
            free(x); free(w); free(dy); free(ws); free(dxa); free(dxs); free(dwa); free(dws);
        }
    }
    gbtd_set_threads(2);
    for (int relu = 0; relu <= 1; relu++) {
        gbtd_bn_shape s = {4, 6, 37};
        const int64_t len = s.n * s.c * s.hw;
        float *x = fvec(len, -2, 2), *g = fvec(s.c, 0.5, 1.5), *b = fvec(s.c, -0.5, 0.5);
        float *dy = fvec(len, -1, 1), *y = fzeros(len), *mean = fzeros(s.c), *rstd = fzeros(s.c);
        float *dxa = fzeros(len), *dxs = malloc(sizeof(float) * (size_t)len);
        float *dga = fzeros(s.c), *dba = fzeros(s.c), *dgs = fzeros(s.c), *dbs = fzeros(s.c);
        for (int64_t k = 0; k < len; k++) dxs[k] = NAN;
        CHECK_OK(relu ? gbtd_bn_relu_forward_train(&s, x, g, b, 1e-5f, 0.1f, NULL, NULL, mean, rstd, y)
                      : gbtd_bn_forward_train(&s, x, g, b, 1e-5f, 0.1f, NULL, NULL, mean, rstd, y),
                 "store bn: forward runs");
        CHECK_OK(relu ? gbtd_bn_relu_backward(&s, x, g, mean, rstd, y, dy, dxa, dga, dba)
                      : gbtd_bn_backward(&s, x, g, mean, rstd, dy, dxa, dga, dba),
                 "store bn: backward runs");
        CHECK_OK(nn_bn_backward_set(&s, x, g, mean, rstd, relu ? y : NULL, dy, dxs, dgs, dbs, 1),
                 "store bn: store variant runs");
        int64_t bad = 0;
        for (int64_t k = 0; k < len; k++) bad += !(dxs[k] == dxa[k]);
        for (int64_t k = 0; k < s.c; k++) bad += !(dgs[k] == dga[k]) + !(dbs[k] == dba[k]);
        CHECK(bad == 0, relu ? "store bn+relu: dx, dgamma, dbeta equal accumulation onto zeros"
                             : "store bn: dx, dgamma, dbeta equal accumulation onto zeros");
        free(x); free(g); free(b); free(dy); free(y); free(mean); free(rstd); free(dxa); free(dxs);
        free(dga); free(dba); free(dgs); free(dbs);
    }
}

/* ref = C0 + A B in double (acc; else A B) and mag the sum of the terms' magnitudes, for the
 * streaming GEMM's checks; stream_bad counts the elements of C outside the float32 bound. */
static void stream_ref(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                       const float *B, int64_t ldb, const float *C, int64_t ldc, int acc,
                       double *ref, double *mag)
{
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double sm = acc ? C[m * ldc + n] : 0.0, t = 0.0;
            for (int64_t k = 0; k < K; k++) {
                sm += (double)A[m * lda + k] * B[k * ldb + n];
                t += fabs((double)A[m * lda + k] * B[k * ldb + n]);
            }
            ref[m * N + n] = sm;
            mag[m * N + n] = t + (acc ? fabs(C[m * ldc + n]) : 0.0);
        }
}

static int64_t stream_bad(int64_t M, int64_t N, int64_t K, const float *C, int64_t ldc,
                          const double *ref, const double *mag)
{
    int64_t bad = 0;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            const double e = fabs(C[m * ldc + n] - ref[m * N + n]);
            bad += !(e <= (K + 2) * U32 * mag[m * N + n] + 2 * U32 * fabs(ref[m * N + n]));
        }
    return bad;
}

/* ---- the streaming GEMM of 1x1 convolutions ---------------------------------------------------
 * nn_gemm_stream against a double product: row counts that split into uneven blocks of at most
 * 6, column counts with and without 16- and 8-column tails, strides wider than the matrices, an
 * output 4 bytes off 32-byte alignment (no non-temporal stores there), store and accumulate.
 * Tolerance: (K + 2) u sum |a b| + 2 u |c| per element. */
static void gemm_stream_cases(void)
{
    static const int64_t Ms[] = {1, 5, 7, 13, 32}, Ns[] = {8, 13, 16, 20, 37, 64, 100},
                         Ks[] = {1, 3, 32, 70};
    int64_t bad = 0, runs = 0;
    for (size_t im = 0; im < sizeof Ms / sizeof Ms[0]; im++)
        for (size_t in = 0; in < sizeof Ns / sizeof Ns[0]; in++)
            for (size_t ik = 0; ik < sizeof Ks / sizeof Ks[0]; ik++)
                for (int mode = 0; mode < 4; mode++) {
                    const int64_t M = Ms[im], N = Ns[in], K = Ks[ik];
                    const int acc = mode & 1, wide = mode >> 1; /* wide: strides past the sizes */
                    const int64_t lda = K + wide, ldb = N + 3 * wide, ldc = N + 5 * wide;
                    float *A = fvec(M * lda, -1, 1), *B = fvec(K * ldb, -1, 1);
                    /* C11 aligned_alloc: the size a multiple of the alignment */
                    const size_t cn = (size_t)((M * ldc + 16 + 7) / 8 * 8);
                    float *Cbuf = aligned_alloc(32, sizeof(float) * cn);
                    float *C = Cbuf + wide; /* wide: 4 bytes off alignment */
                    for (int64_t i = 0; i < M * ldc; i++)
                        C[i] = (float)(gbtd_rng_uniform(rng) - 0.5);
                    double *ref = dzeros(M * N), *mag = dzeros(M * N);
                    stream_ref(M, N, K, A, lda, B, ldb, C, ldc, acc, ref, mag);
                    const float guard = C[M * ldc - ldc + N]; /* past the last row's N columns */
                    nn_gemm_stream(M, N, K, A, lda, B, ldb, C, ldc, acc, 1);
                    bad += stream_bad(M, N, K, C, ldc, ref, mag);
                    bad += wide && !(C[M * ldc - ldc + N] == guard);
                    runs++;
                    free(A); free(B); free(Cbuf); free(ref); free(mag);
                }
    char name[120];
    snprintf(name, sizeof name, "streaming 1x1 GEMM: %lld products (store, accumulate, tails, "
             "strides, unaligned) = double reference", (long long)runs);
    CHECK(bad == 0, name);
}

/* The fused backward of a 1x1 convolution (nn_gemm_stream_bwd): the input gradient as
 * nn_gemm_stream (store, accumulate, none) and the weight gradient, accumulated onto what G
 * held, in the layout nn_stream_bwd_gtrans names, against double sums: both gradient layouts,
 * vector sides of 8 (one 8-column block), 16, 24 (a 16 and an 8) and one not a multiple of 8
 * (the portable loops), one and several panels, strides past the sizes. */
static void gemm_stream_bwd_cases(void)
{
    /* (c_in, c_out) */
    static const int64_t dims[][2] = {{8, 13}, {16, 40}, {24, 24}, {40, 16}, {13, 32}, {32, 5},
                                      {64, 128}, {128, 32}};
    static const int64_t Ns[] = {16, 48, 64};
    int64_t bad = 0, runs = 0, layouts[2] = {0, 0};
    for (size_t id = 0; id < sizeof dims / sizeof dims[0]; id++)
        for (size_t in = 0; in < sizeof Ns / sizeof Ns[0]; in++)
            for (int mode = 0; mode < 6; mode++) {
                const int64_t M = dims[id][0], K = dims[id][1], N = Ns[in];
                const int acc = mode % 3 == 1, nodx = mode % 3 == 2, wide = mode / 3;
                const int64_t lda = K + wide, ldb = N + 16 * wide, ldc = N + 32 * wide;
                const int gt = nn_stream_bwd_gtrans(M, K);
                layouts[gt]++;
                float *A = fvec(M * lda, -1, 1), *B = fvec(K * ldb, -1, 1);
                float *X = fvec(M * ldb, -1, 1), *G = fvec(M * K, -1, 1);
                float *T = fvec(16 * (M > K ? M : K), 0, 0);
                const size_t cn = (size_t)((M * ldc + 7) / 8 * 8);
                float *C = aligned_alloc(32, sizeof(float) * cn);
                for (int64_t i = 0; i < M * ldc; i++) C[i] = (float)(gbtd_rng_uniform(rng) - 0.5);
                double *ref = dzeros(M * N), *mag = dzeros(M * N);
                double *gref = dzeros(M * K), *gmag = dzeros(M * K);
                stream_ref(M, N, K, A, lda, B, ldb, C, ldc, acc, ref, mag);
                for (int64_t o = 0; o < K; o++)
                    for (int64_t c = 0; c < M; c++) {
                        const int64_t gi = gt ? c * K + o : o * M + c;
                        double sm = G[gi], t = fabs(G[gi]);
                        for (int64_t n = 0; n < N; n++) {
                            sm += (double)B[o * ldb + n] * X[c * ldb + n];
                            t += fabs((double)B[o * ldb + n] * X[c * ldb + n]);
                        }
                        gref[gi] = sm;
                        gmag[gi] = t;
                    }
                const float guard = C[M * ldc - 1];
                float *C0 = nodx ? NULL : C;
                nn_gemm_stream_bwd(M, N, K, A, lda, B, ldb, C0, ldc, acc, 1, X, ldb, G, T);
                if (!nodx) bad += stream_bad(M, N, K, C, ldc, ref, mag);
                for (int64_t i = 0; i < M * K; i++) {
                    const double e = fabs(G[i] - gref[i]);
                    bad += !(e <= (N + 2) * U32 * gmag[i] + 2 * U32 * fabs(gref[i]));
                }
                bad += wide && !(C[M * ldc - 1] == guard);
                runs++;
                free(A); free(B); free(X); free(G); free(T); free(C);
                free(ref); free(mag); free(gref); free(gmag);
            }
    char name[160];
    snprintf(name, sizeof name, "fused 1x1 backward: %lld cases (%lld and %lld per gradient "
             "layout; dx stored, added, none) = double reference", (long long)runs,
             (long long)layouts[0], (long long)layouts[1]);
    CHECK(bad == 0 && layouts[0] > 0 && layouts[1] > 0, name);
}

/* ---- channel blocks ------------------------------------------------------------------------
 * Batch norm's passes take blocks of channels (nn_bn_block_bytes): one channel per block, the
 * default, and blocks as large as the thread count allows must give the same values bit for bit
 * (statistics, running averages, outputs, gradients, the fused add and its sides' maps), with
 * one and two threads; 11 channels leave a partial last block. */
static void bn_channel_blocks(void)
{
    const int64_t saved = nn_bn_block_bytes;
    const int64_t sizes[3] = {1, saved, (int64_t)1 << 40};
    gbtd_bn_shape s = {6, 11, 37};
    const int64_t len = s.n * s.c * s.hw, C = s.c;
    float *x = fvec(len, -2, 2), *x2 = fvec(len, -3, 1), *g = fvec(C, 0.5, 1.5);
    float *b = fvec(C, -0.5, 0.5), *dy = fvec(len, -1, 1);
    float *rm = fvec(C, -1, 1), *rv = fvec(C, 0.5, 2);
    for (int threads = 1; threads <= 2; threads++) {
        gbtd_set_threads(threads);
        for (int relu = 0; relu <= 1; relu++) {
            float *out[3][12];
            for (int v = 0; v < 3; v++) {
                nn_bn_block_bytes = sizes[v];
                float **o = out[v];
                o[0] = fzeros(len);  /* y */
                o[1] = fzeros(C);    /* mean */
                o[2] = fzeros(C);    /* rstd */
                o[3] = fzeros(C);    /* running mean, from rm */
                o[4] = fzeros(C);    /* running var, from rv */
                memcpy(o[3], rm, sizeof(float) * (size_t)C);
                memcpy(o[4], rv, sizeof(float) * (size_t)C);
                o[5] = fzeros(len);  /* dx */
                o[6] = fzeros(C);    /* dgamma */
                o[7] = fzeros(C);    /* dbeta */
                o[8] = fzeros(len);  /* fused add */
                o[9] = fzeros(4 * C); /* the sides' mean, rstd */
                o[10] = fzeros(4 * C); /* the sides' scale, shift */
                o[11] = fzeros(len); /* evaluation */
                CHECK_OK(relu ? gbtd_bn_relu_forward_train(&s, x, g, b, 1e-5f, 0.1f, o[3], o[4], o[1],
                                                           o[2], o[0])
                              : gbtd_bn_forward_train(&s, x, g, b, 1e-5f, 0.1f, o[3], o[4], o[1],
                                                      o[2], o[0]),
                         "blocks bn: forward runs");
                CHECK_OK(nn_bn_backward_set(&s, x, g, o[1], o[2], relu ? o[0] : NULL, dy, o[5],
                                            o[6], o[7], 1),
                         "blocks bn: backward runs");
                CHECK_OK(relu ? gbtd_bn_relu_forward_eval(&s, x, g, b, 1e-5f, o[3], o[4], o[11])
                              : gbtd_bn_forward_eval(&s, x, g, b, 1e-5f, o[3], o[4], o[11]),
                         "blocks bn: evaluation runs");
                nn_bn_side sa = {x, 1, g, b, 1e-5f, 0.1f, NULL, NULL, o[9], o[9] + C,
                                 o[10], o[10] + C};
                nn_bn_side sb = {x2, 1, b, g, 1e-3f, 0.1f, NULL, NULL, o[9] + 2 * C, o[9] + 3 * C,
                                 o[10] + 2 * C, o[10] + 3 * C};
                CHECK_OK(nn_bn_add_forward(&s, &sa, &sb, 1, relu, o[8]), "blocks bn: fused add runs");
            }
            const int64_t lens[12] = {len, C, C, C, C, len, C, C, len, 4 * C, 4 * C, len};
            int64_t bad = 0;
            for (int v = 1; v < 3; v++)
                for (int k = 0; k < 12; k++)
                    for (int64_t i = 0; i < lens[k]; i++) bad += !(out[v][k][i] == out[0][k][i]);
            char name[160];
            snprintf(name, sizeof name, "blocks bn%s, %d thread(s): blocks of channels give the "
                     "values of one channel at a time, bit for bit", relu ? "+relu" : "", threads);
            CHECK(bad == 0, name);
            for (int v = 0; v < 3; v++)
                for (int k = 0; k < 12; k++) free(out[v][k]);
        }
    }
    nn_bn_block_bytes = saved;
    free(x); free(x2); free(g); free(b); free(dy); free(rm); free(rv);
}

/* ---- ReLU mask from the input -------------------------------------------------------------
 * The network's batch norm + ReLU keeps each channel's affine map and takes the backward's mask
 * from x through it instead of reading y: the same outputs, statistics and gradients as the
 * y-masked pair, bit for bit, the map being the one applied (y = max(x scale + shift, 0) exactly
 * as floats), with exact zeros on the kink (planes whose values cancel in pairs: mean 0 and,
 * with beta 0, shift 0, so x = 0 gives 0 before the ReLU). */
static void bn_relu_map(void)
{
    gbtd_bn_shape s = {5, 9, 48}; /* planes of whole 16-float pairs of eight-lane groups */
    const int64_t len = s.n * s.c * s.hw, C = s.c;
    float *x = fvec(len, -2, 2), *g = fvec(C, 0.5, 1.5), *b = fvec(C, -0.5, 0.5);
    float *dy = fvec(len, -1, 1);
    for (int64_t p = 0; p < s.n * C; p++) { /* channels 0-2: exact zeros on the kink */
        if (p % C > 2) continue;
        float *pl = x + p * s.hw;
        for (int64_t i = 0; i < s.hw; i += 16)
            for (int j = 0; j < 8; j++) pl[i + 8 + j] = -pl[i + j];
        pl[3] = pl[11] = 0.0f;
    }
    for (int64_t c = 0; c < 3; c++) b[c] = 0.0f;
    for (int threads = 1; threads <= 2; threads++) {
        gbtd_set_threads(threads);
        float *y[2], *mean[2], *rstd[2], *rm[2], *rv[2], *dx[2][2], *dg[2], *db[2];
        float *sc = fzeros(C), *sh = fzeros(C);
        for (int v = 0; v < 2; v++) {
            y[v] = fzeros(len), mean[v] = fzeros(C), rstd[v] = fzeros(C);
            rm[v] = fzeros(C), rv[v] = fzeros(C), dg[v] = fzeros(C), db[v] = fzeros(C);
            dx[v][0] = fzeros(len);
            dx[v][1] = fvec(len, -1, 1);
        }
        memcpy(dx[1][1], dx[0][1], sizeof(float) * (size_t)len);
        CHECK_OK(gbtd_bn_relu_forward_train(&s, x, g, b, 1e-5f, 0.1f, rm[0], rv[0], mean[0],
                                            rstd[0], y[0]),
                 "relu map: forward runs");
        CHECK_OK(nn_bn_relu_forward_train_map(&s, x, g, b, 1e-5f, 0.1f, rm[1], rv[1], mean[1],
                                              rstd[1], y[1], sc, sh),
                 "relu map: forward with the map runs");
        for (int set = 1; set >= 0; set--) {
            CHECK_OK(nn_bn_backward_set(&s, x, g, mean[0], rstd[0], y[0], dy, dx[0][set], dg[0],
                                        db[0], set),
                     "relu map: backward (mask y > 0) runs");
            CHECK_OK(nn_bn_relu_backward_map(&s, x, g, mean[1], rstd[1], sc, sh, dy, dx[1][set],
                                             dg[1], db[1], set),
                     "relu map: backward (mask from x) runs");
        }
        int64_t bad = 0, kink = 0, mapped = 0;
        for (int64_t i = 0; i < len; i++) {
            bad += !(y[0][i] == y[1][i]) + !(dx[0][0][i] == dx[1][0][i]) +
                   !(dx[0][1][i] == dx[1][1][i]);
            const int64_t c = (i / s.hw) % C;
            const float v = x[i] * sc[c] + sh[c];
            mapped += !((v > 0.0f ? v : 0.0f) == y[1][i]);
            kink += v == 0.0f;
        }
        for (int64_t c = 0; c < C; c++)
            bad += !(mean[0][c] == mean[1][c]) + !(rstd[0][c] == rstd[1][c]) +
                   !(rm[0][c] == rm[1][c]) + !(rv[0][c] == rv[1][c]) + !(dg[0][c] == dg[1][c]) +
                   !(db[0][c] == db[1][c]);
        char name[160];
        snprintf(name, sizeof name, "relu map, %d thread(s): the map is the one applied", threads);
        CHECK(mapped == 0, name);
        snprintf(name, sizeof name, "relu map, %d thread(s): %lld values on the kink", threads,
                 (long long)kink);
        CHECK(kink >= 2 * s.n * 3, name);
        snprintf(name, sizeof name, "relu map, %d thread(s): forward, statistics, dx (stored and "
                 "added), dgamma, dbeta equal the y-masked ones bit for bit", threads);
        CHECK(bad == 0, name);
        for (int v = 0; v < 2; v++) {
            free(y[v]); free(mean[v]); free(rstd[v]); free(rm[v]); free(rv[v]); free(dg[v]);
            free(db[v]); free(dx[v][0]); free(dx[v][1]);
        }
        free(sc); free(sh);
    }
    free(x); free(g); free(b); free(dy);
}

/* ---- non-temporal stores ------------------------------------------------------------------
 * Batch norm and the residual add write large outputs with streaming stores (nn_stream_bytes).
 * With the threshold at 0 every output streams: the values must equal the plain stores' bit for
 * bit, on planes and buffers that start off a 32-byte boundary. */
static void streaming_stores(void)
{
    const int64_t saved = nn_stream_bytes;
    gbtd_set_threads(2);
    for (int relu = 0; relu <= 1; relu++) {
        gbtd_bn_shape s = {5, 7, 37};
        const int64_t len = s.n * s.c * s.hw;
        float *x = fvec(len, -2, 2), *g = fvec(s.c, 0.5, 1.5), *b = fvec(s.c, -0.5, 0.5);
        float *dy = fvec(len, -1, 1), *rm = fvec(s.c, -1, 1), *rv = fvec(s.c, 0.5, 2);
        float *y[2], *ye[2], *dx[2], *dg[2], *db[2], *mean[2], *rstd[2];
        for (int k = 0; k < 2; k++) {
            nn_stream_bytes = k ? 0 : saved;
            y[k] = fzeros(len + 1);
            ye[k] = fzeros(len + 1);
            dx[k] = fzeros(len + 1);
            dg[k] = fzeros(s.c), db[k] = fzeros(s.c), mean[k] = fzeros(s.c), rstd[k] = fzeros(s.c);
            /* outputs one float past an aligned start */
            CHECK_OK(relu ? gbtd_bn_relu_forward_train(&s, x, g, b, 1e-5f, 0.1f, NULL, NULL, mean[k],
                                                       rstd[k], y[k] + 1)
                          : gbtd_bn_forward_train(&s, x, g, b, 1e-5f, 0.1f, NULL, NULL, mean[k],
                                                  rstd[k], y[k] + 1),
                     "streaming bn: forward runs");
            CHECK_OK(relu ? gbtd_bn_relu_forward_eval(&s, x, g, b, 1e-5f, rm, rv, ye[k] + 1)
                          : gbtd_bn_forward_eval(&s, x, g, b, 1e-5f, rm, rv, ye[k] + 1),
                     "streaming bn: evaluation forward runs");
            CHECK_OK(nn_bn_backward_set(&s, x, g, mean[k], rstd[k], relu ? y[k] + 1 : NULL, dy,
                                        dx[k] + 1, dg[k], db[k], 1),
                     "streaming bn: backward (stored dx) runs");
        }
        int64_t bad = 0;
        for (int64_t i = 0; i <= len; i++)
            bad += !(y[0][i] == y[1][i]) + !(ye[0][i] == ye[1][i]) + !(dx[0][i] == dx[1][i]);
        for (int64_t c = 0; c < s.c; c++) bad += !(dg[0][c] == dg[1][c]) + !(db[0][c] == db[1][c]);
        CHECK(bad == 0, relu ? "streaming bn+relu: forward, evaluation and backward exact"
                             : "streaming bn: forward, evaluation and backward exact");
        free(x); free(g); free(b); free(dy); free(rm); free(rv);
        for (int k = 0; k < 2; k++) {
            free(y[k]); free(ye[k]); free(dx[k]); free(dg[k]); free(db[k]); free(mean[k]);
            free(rstd[k]);
        }
    }
    {
        const int64_t L = 70001;
        float *a = fvec(L + 3, -1, 1), *b = fvec(L + 3, -1, 1), *dy = fvec(L + 3, -1, 1);
        float *y[2], *ga[2], *gb[2];
        int bad = 0;
        for (int relu = 0; relu <= 1; relu++)
            for (int off = 0; off < 3; off++) {
                for (int k = 0; k < 2; k++) {
                    nn_stream_bytes = k ? 0 : saved;
                    y[k] = fzeros(L + 3), ga[k] = fzeros(L + 3), gb[k] = fzeros(L + 3);
                    if (relu)
                        gbtd_add_relu_forward(L, a + off, b, y[k] + off);
                    else
                        gbtd_add_forward(L, a, b + off, y[k] + off);
                    /* both stored (da and db in different 32-byte phases when off > 0), one only */
                    nn_add_backward_store(L, relu, y[k] + off, dy, ga[k] + off, 1, gb[k], 1);
                    nn_add_backward_store(L - 1, relu, y[k] + off, dy + off, NULL, 0, gb[k] + 2, 1);
                }
                for (int64_t i = 0; i < L + 3; i++)
                    bad += !(y[0][i] == y[1][i]) + !(ga[0][i] == ga[1][i]) + !(gb[0][i] == gb[1][i]);
                for (int k = 0; k < 2; k++) {
                    free(y[k]); free(ga[k]); free(gb[k]);
                }
            }
        CHECK(bad == 0, "streaming add: forward (+ReLU) and stored backward exact, any alignment");
        free(a); free(b); free(dy);
    }
    nn_stream_bytes = saved;
}

int main(void)
{
    gbtd_rng_alloc(20240601, &rng);
    /* 1. finite differences in double */
    fd_conv("dense 3x3 pad 1", gbtd_conv2d_shape_make(2, 3, 5, 4, 2, 3, 1, 1, 1));
    fd_conv("stride 2 pad 1 odd", gbtd_conv2d_shape_make(1, 2, 5, 5, 3, 3, 2, 1, 1));
    fd_conv("groups 2", gbtd_conv2d_shape_make(1, 4, 4, 3, 6, 3, 1, 1, 2));
    fd_conv("depthwise stride 2", gbtd_conv2d_shape_make(2, 3, 5, 4, 3, 3, 2, 1, 3));
    fd_conv("1x1", gbtd_conv2d_shape_make(2, 3, 3, 2, 4, 1, 1, 0, 1));
    fd_bn();
    fd_simple();
    /* 2. fast vs reference */
    for (int t = 1; t <= 2; t++) {
        gbtd_set_threads(t);
        printf("# threads %d\n", t);
        conv_fast_cases();
        conv_wino_cases();
        conv_dw_cases();
        conv_grp_cases();
    }
    /* more threads than groups: threads split the images with private weight gradients */
    gbtd_set_threads(4);
    printf("# threads 4\n");
    conv_vs_ref(gbtd_conv2d_shape_make(5, 8, 7, 6, 8, 3, 1, 1, 2), 1);
    conv_vs_ref(gbtd_conv2d_shape_make(3, 6, 9, 9, 8, 3, 2, 1, 1), 0);
    conv_vs_ref(gbtd_conv2d_shape_make(13, 96, 7, 7, 160, 1, 1, 0, 1), 1); /* batched chunks */
    conv_vs_ref(gbtd_conv2d_shape_make(3, 80, 7, 7, 32, 3, 1, 1, 1), 0);   /* fewer images than threads */
    gbtd_set_threads(2);
    gbtd_bn_shape bss[] = {{4, 3, 49}, {2, 5, 1}, {16, 2, 50}, {3, 4, 196}, {4, 32, 256}, {4, 16, 16}};
    for (size_t i = 0; i < sizeof bss / sizeof bss[0]; i++) {
        bn_vs_ref(bss[i], 0);
        bn_vs_ref(bss[i], 1);
    }
    bn_offset_stats();
    simple_vs_refd();
    sharing();
    store_mode();
    streaming_stores();
    gemm_stream_cases();
    gemm_stream_bwd_cases();
    bn_channel_blocks();
    bn_relu_map();
    errors();
    gbtd_rng_free(rng);
    return check_finish();
}
