/* Layer kernels (lib/nn/ops.h) against PyTorch: forward and backward of every layer on inputs
 * and outputs written by tests/nn/torch_ops.py (float32, fixed seed) into the build directory.
 * usage: test_ops_torch FILE   (exit 77 = skipped when the file holds no tensors: no torch)
 * Tolerances: a float sum of L terms is off by at most L u sum|terms| (u = 2^-24) in PyTorch and
 * in gbtd alike, so |gbtd - torch| <= 2 (L + 2) u sum|terms| + 4 u |torch|; sum|terms| is computed
 * exactly with the reference kernel on absolute values. Non-linear layers state their bound. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "nn/ops.h"

static const double U32 = 5.9604644775390625e-8;

typedef struct tens {
    char name[64];
    int ndim;
    int64_t shape[8], numel;
    float *data;
} tens;

static tens *T;
static int NT;

static int load(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char magic[8];
    uint32_t count;
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "GBTDT1\0\0", 8) || fread(&count, 4, 1, f) != 1) {
        fclose(f);
        return -1;
    }
    T = calloc(count ? count : 1, sizeof(tens));
    for (uint32_t i = 0; i < count; i++) {
        uint32_t len, nd;
        if (fread(&len, 4, 1, f) != 1 || len >= 64 || fread(T[i].name, 1, len, f) != len ||
            fread(&nd, 4, 1, f) != 1 || nd > 8 || fread(T[i].shape, 8, nd, f) != nd) {
            fclose(f);
            return -1;
        }
        T[i].ndim = (int)nd;
        T[i].numel = 1;
        for (uint32_t d = 0; d < nd; d++) T[i].numel *= T[i].shape[d];
        T[i].data = malloc(sizeof(float) * (size_t)(T[i].numel ? T[i].numel : 1));
        if (fread(T[i].data, 4, (size_t)T[i].numel, f) != (size_t)T[i].numel) {
            fclose(f);
            return -1;
        }
        NT++;
    }
    fclose(f);
    return (int)count;
}

static tens *get(const char *fmt, int i, const char *leaf)
{
    char name[64], full[80];
    snprintf(name, sizeof name, fmt, i);
    snprintf(full, sizeof full, "%s%s", name, leaf);
    for (int k = 0; k < NT; k++)
        if (!strcmp(T[k].name, full)) return &T[k];
    fprintf(stderr, "missing tensor %s\n", full);
    exit(1);
}

static float *zeros(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(float)); }
static float *absdup(const float *v, int64_t n)
{
    float *a = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) a[i] = fabsf(v[i]);
    return a;
}

/* max over i of |got - ref| / tol_i must be <= 1; tol_i = 2 (L + 2) u scale_i + 4 u |ref_i| + tiny */
static void check_vs(const char *name, const float *got, const float *ref, const float *scale,
                     double L, int64_t n)
{
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        const double tol = 2.0 * (L + 2.0) * U32 * (scale ? scale[i] : 0.0) + 4.0 * U32 * fabs(ref[i]) + 1e-30;
        const double v = fabs((double)got[i] - (double)ref[i]) / tol;
        if (!(v <= worst)) worst = v;
    }
    CHECK_LE(worst, 1.0, name);
}

static void convs(void)
{
    for (int i = 0; i < 8; i++) {
        const float *p = get("conv%d/", i, "p")->data;
        gbtd_conv2d_shape s = gbtd_conv2d_shape_make(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]);
        const int bias = p[9] != 0;
        char name[160];
        gbtd_conv2d_shape_init(&s);
        const int64_t nx = s.n * s.c_in * s.h * s.w, ny = s.n * s.c_out * s.h_out * s.w_out;
        const int64_t nw = gbtd_conv2d_weight_count(&s);
        const float *x = get("conv%d/", i, "x")->data, *w = get("conv%d/", i, "w")->data;
        const float *gy = get("conv%d/", i, "gy")->data, *b = bias ? get("conv%d/", i, "b")->data : NULL;
        const size_t wl = gbtd_conv2d_workspace_size(&s, 0);
        float *ws = malloc(sizeof(float) * (wl ? wl : 1));
        float *y = zeros(ny), *gx = zeros(nx), *gw = zeros(nw), *gb = zeros(s.c_out);
        float *ax = absdup(x, nx), *aw = absdup(w, nw), *agy = absdup(gy, ny), *ab = bias ? absdup(b, s.c_out) : NULL;
        float *sy = zeros(ny), *sgx = zeros(nx), *sgw = zeros(nw), *sgb = zeros(s.c_out);
        gbtd_conv2d_forward_ref(&s, ax, aw, ab, sy);
        gbtd_conv2d_backward_ref(&s, ax, aw, agy, sgx, sgw, sgb);
        snprintf(name, sizeof name, "torch conv%d (n%lld c%lld>%lld k%lld s%lld g%lld): forward runs", i,
                 (long long)s.n, (long long)s.c_in, (long long)s.c_out, (long long)s.kh, (long long)s.stride,
                 (long long)s.groups);
        CHECK_OK(gbtd_conv2d_forward(&s, x, w, b, y, ws, wl), name);
        CHECK_OK(gbtd_conv2d_backward(&s, x, w, gy, gx, gw, bias ? gb : NULL, ws, wl), "torch conv: backward runs");
        const double cig = (double)(s.c_in / s.groups), cog = (double)(s.c_out / s.groups);
        const double taps = (double)(s.kh * s.kw), npix = (double)(s.n * s.h_out * s.w_out);
        snprintf(name, sizeof name, "torch conv%d: y = F.conv2d (L = cig k k)", i);
        check_vs(name, y, get("conv%d/", i, "y")->data, sy, cig * taps + 1, ny);
        snprintf(name, sizeof name, "torch conv%d: dx = x.grad (L = cog k k)", i);
        check_vs(name, gx, get("conv%d/", i, "gx")->data, sgx, cog * taps, nx);
        snprintf(name, sizeof name, "torch conv%d: dw = weight.grad (L = n ho wo + threads)", i);
        check_vs(name, gw, get("conv%d/", i, "gw")->data, sgw, npix + gbtd_get_threads(), nw);
        if (bias) {
            snprintf(name, sizeof name, "torch conv%d: db = bias.grad (L = n ho wo)", i);
            check_vs(name, gb, get("conv%d/", i, "gb")->data, sgb, npix, s.c_out);
        }
        free(ws); free(y); free(gx); free(gw); free(gb); free(ax); free(aw); free(agy); free(ab);
        free(sy); free(sgx); free(sgw); free(sgb);
    }
}

/* BN: PyTorch's float reductions over m = n h w values have error <= m u sum|terms|; so do ours
 * (shorter). Scales: y ~ |gamma| (|xh| + 1) + |beta|; dx ~ |gamma| rstd (|dy| + mean|dy| +
 * |xh| mean|dy xh|); dgamma ~ sum|dy xh|; dbeta ~ sum|dy|; running stats ~ |stat| + mean|x - mu|. */
static void bns(void)
{
    for (int relu = 0; relu < 2; relu++) {
        tens *tx = get("bn%d/", relu, "x");
        gbtd_bn_shape s = {tx->shape[0], tx->shape[1], tx->shape[2] * tx->shape[3]};
        const int64_t nx = tx->numel, C = s.c, m = s.n * s.hw;
        const float *x = tx->data, *g = get("bn%d/", relu, "gamma")->data, *b = get("bn%d/", relu, "beta")->data;
        const float *gy = get("bn%d/", relu, "gy")->data;
        float *rm = zeros(C), *rv = zeros(C), *mean = zeros(C), *rstd = zeros(C), *y = zeros(nx);
        float *gx = zeros(nx), *gg = zeros(C), *gbt = zeros(C), *ye = zeros(nx);
        memcpy(rm, get("bn%d/", relu, "rm0")->data, sizeof(float) * (size_t)C);
        memcpy(rv, get("bn%d/", relu, "rv0")->data, sizeof(float) * (size_t)C);
        if (relu) {
            CHECK_OK(gbtd_bn_relu_forward_train(&s, x, g, b, 1e-5f, 0.1f, rm, rv, mean, rstd, y), "torch bn+relu: forward");
            CHECK_OK(gbtd_bn_relu_backward(&s, x, g, mean, rstd, y, gy, gx, gg, gbt), "torch bn+relu: backward");
            CHECK_OK(gbtd_bn_relu_forward_eval(&s, x, g, b, 1e-5f, rm, rv, ye), "torch bn+relu: eval");
        } else {
            CHECK_OK(gbtd_bn_forward_train(&s, x, g, b, 1e-5f, 0.1f, rm, rv, mean, rstd, y), "torch bn: forward");
            CHECK_OK(gbtd_bn_backward(&s, x, g, mean, rstd, gy, gx, gg, gbt), "torch bn: backward");
            CHECK_OK(gbtd_bn_forward_eval(&s, x, g, b, 1e-5f, rm, rv, ye), "torch bn: eval");
        }
        float *sy = zeros(nx), *sgx = zeros(nx), *sgg = zeros(C), *sgb = zeros(C), *srm = zeros(C), *srv = zeros(C);
        float *sye = zeros(nx);
        const float *ty = get("bn%d/", relu, "y")->data;
        for (int64_t c = 0; c < C; c++) {
            double ady = 0, adyxh = 0, adev = 0;
            for (int64_t n = 0; n < s.n; n++)
                for (int64_t t = 0; t < s.hw; t++) {
                    const int64_t k = (n * C + c) * s.hw + t;
                    const double d = (!relu || ty[k] > 0) ? gy[k] : 0.0;
                    const double xh = (x[k] - mean[c]) * rstd[c];
                    ady += fabs(d);
                    adyxh += fabs(d * xh);
                    adev += fabs(x[k] - mean[c]);
                }
            sgg[c] = (float)adyxh;
            sgb[c] = (float)ady;
            srm[c] = (float)(fabs(mean[c]) + adev / m);
            srv[c] = (float)(2 * rv[c]);
            for (int64_t n = 0; n < s.n; n++)
                for (int64_t t = 0; t < s.hw; t++) {
                    const int64_t k = (n * C + c) * s.hw + t;
                    const double xh = fabs((x[k] - mean[c]) * rstd[c]);
                    sy[k] = (float)(fabs(g[c]) * (xh + 1) + fabs(b[c]));
                    sgx[k] = (float)(fabs(g[c]) * rstd[c] * (fabs(gy[k]) + ady / m + xh * adyxh / m));
                    sye[k] = (float)(fabs(g[c]) * (fabs(x[k]) + fabs(rm[c])) / sqrt(rv[c] + 1e-5) + fabs(b[c]));
                }
        }
        const char *tag = relu ? "torch bn+relu" : "torch bn";
        char name[128];
        snprintf(name, sizeof name, "%s: y = F.batch_norm (L = n h w)", tag);
        check_vs(name, y, ty, sy, (double)m, nx);
        snprintf(name, sizeof name, "%s: running mean updated as PyTorch (momentum 0.1)", tag);
        check_vs(name, rm, get("bn%d/", relu, "rm1")->data, srm, (double)m, C);
        snprintf(name, sizeof name, "%s: running var updated as PyTorch (unbiased)", tag);
        check_vs(name, rv, get("bn%d/", relu, "rv1")->data, srv, (double)m, C);
        snprintf(name, sizeof name, "%s: dx = x.grad", tag);
        check_vs(name, gx, get("bn%d/", relu, "gx")->data, sgx, (double)m, nx);
        snprintf(name, sizeof name, "%s: dgamma = weight.grad", tag);
        check_vs(name, gg, get("bn%d/", relu, "ggamma")->data, sgg, (double)m, C);
        snprintf(name, sizeof name, "%s: dbeta = bias.grad", tag);
        check_vs(name, gbt, get("bn%d/", relu, "gbeta")->data, sgb, (double)m, C);
        snprintf(name, sizeof name, "%s: eval y = F.batch_norm(training=False) (few roundings)", tag);
        check_vs(name, ye, get("bn%d/", relu, "yeval")->data, sye, 4, nx);
        free(rm); free(rv); free(mean); free(rstd); free(y); free(gx); free(gg); free(gbt); free(ye);
        free(sy); free(sgx); free(sgg); free(sgb); free(srm); free(srv); free(sye);
    }
}

static void others(void)
{
    /* ReLU: exact */
    tens *x = get("relu/", 0, "x");
    float *y = zeros(x->numel), *gx = zeros(x->numel);
    gbtd_relu_forward(x->numel, x->data, y);
    gbtd_relu_backward(x->numel, y, get("relu/", 0, "gy")->data, gx);
    check_vs("torch relu: y = F.relu (exact)", y, get("relu/", 0, "y")->data, NULL, 0, x->numel);
    check_vs("torch relu: dx = x.grad (exact)", gx, get("relu/", 0, "gx")->data, NULL, 0, x->numel);
    free(y); free(gx);

    /* pools: max 3x3/2/1 (values distinct: exact forward; each input in <= 4 windows) */
    x = get("maxpool/", 0, "x");
    gbtd_pool2d_shape ps = gbtd_pool2d_shape_make(x->shape[0], x->shape[1], x->shape[2], x->shape[3], 3, 2, 1);
    gbtd_pool2d_shape_init(&ps);
    int64_t ny = ps.n * ps.c * ps.h_out * ps.w_out;
    y = zeros(ny);
    gx = zeros(x->numel);
    int32_t *am = calloc((size_t)ny, 4);
    const float *gy = get("maxpool/", 0, "gy")->data;
    float gmax = 0;
    for (int64_t i = 0; i < ny; i++) gmax = fmaxf(gmax, fabsf(gy[i]));
    float *sc = zeros(x->numel);
    for (int64_t i = 0; i < x->numel; i++) sc[i] = 4 * gmax;
    CHECK_OK(gbtd_maxpool2d_forward(&ps, x->data, y, am), "torch maxpool: forward runs");
    gbtd_maxpool2d_backward(&ps, am, gy, gx);
    check_vs("torch maxpool 3/2/1: y = F.max_pool2d (exact)", y, get("maxpool/", 0, "y")->data, NULL, 0, ny);
    check_vs("torch maxpool 3/2/1: dx = x.grad (<= 4 terms)", gx, get("maxpool/", 0, "gx")->data, sc, 4, x->numel);
    free(y); free(gx); free(am); free(sc);
    for (int a = 0; a < 2; a++) {
        x = get("avgpool%d/", a, "x");
        const int64_t k = a ? 2 : 3, st = 2, pd = a ? 0 : 1;
        ps = gbtd_pool2d_shape_make(x->shape[0], x->shape[1], x->shape[2], x->shape[3], k, st, pd);
        gbtd_pool2d_shape_init(&ps);
        ny = ps.n * ps.c * ps.h_out * ps.w_out;
        y = zeros(ny);
        gx = zeros(x->numel);
        gy = get("avgpool%d/", a, "gy")->data;
        float *ax = absdup(x->data, x->numel), *agy = absdup(gy, ny), *sy = zeros(ny), *sgx = zeros(x->numel);
        gbtd_avgpool2d_forward(&ps, ax, sy);
        gbtd_avgpool2d_backward(&ps, agy, sgx);
        CHECK_OK(gbtd_avgpool2d_forward(&ps, x->data, y), "torch avgpool: forward runs");
        gbtd_avgpool2d_backward(&ps, gy, gx);
        check_vs(a ? "torch avgpool 2/2/0: y = F.avg_pool2d (L = k k)" : "torch avgpool 3/2/1: y = F.avg_pool2d (L = k k)",
                 y, get("avgpool%d/", a, "y")->data, sy, (double)(k * k + 1), ny);
        check_vs(a ? "torch avgpool 2/2/0: dx = x.grad" : "torch avgpool 3/2/1: dx = x.grad", gx,
                 get("avgpool%d/", a, "gx")->data, sgx, 5, x->numel);
        free(y); free(gx); free(ax); free(agy); free(sy); free(sgx);
    }
    x = get("gap/", 0, "x");
    const int64_t n = x->shape[0], c = x->shape[1], hw = x->shape[2] * x->shape[3];
    y = zeros(n * c);
    gx = zeros(x->numel);
    float *ax = absdup(x->data, x->numel), *sy = zeros(n * c);
    gbtd_global_avgpool_forward(n, c, hw, ax, sy);
    CHECK_OK(gbtd_global_avgpool_forward(n, c, hw, x->data, y), "torch global avgpool: forward runs");
    gbtd_global_avgpool_backward(n, c, hw, get("gap/", 0, "gy")->data, gx);
    check_vs("torch global avgpool: y = adaptive_avg_pool2d (L = h w)", y, get("gap/", 0, "y")->data, sy, (double)hw, n * c);
    check_vs("torch global avgpool: dx = x.grad (one division)", gx, get("gap/", 0, "gx")->data, NULL, 0, x->numel);
    free(y); free(gx); free(ax); free(sy);

    /* linear */
    x = get("linear/", 0, "x");
    tens *w = get("linear/", 0, "w");
    const int64_t ln = x->shape[0], in = x->shape[1], out = w->shape[0];
    const float *b = get("linear/", 0, "b")->data;
    gy = get("linear/", 0, "gy")->data;
    y = zeros(ln * out);
    gx = zeros(ln * in);
    float *gw = zeros(out * in), *gb = zeros(out);
    CHECK_OK(gbtd_linear_forward(ln, in, out, x->data, w->data, b, y), "torch linear: forward runs");
    CHECK_OK(gbtd_linear_backward(ln, in, out, x->data, w->data, gy, gx, gw, gb), "torch linear: backward runs");
    float *axl = absdup(x->data, x->numel), *awl = absdup(w->data, w->numel), *abl = absdup(b, out), *agy = absdup(gy, ln * out);
    float *sy2 = zeros(ln * out), *sgx = zeros(ln * in), *sgw = zeros(out * in), *sgb = zeros(out);
    gbtd_linear_forward_ref(ln, in, out, axl, awl, abl, sy2);
    gbtd_linear_backward_ref(ln, in, out, axl, awl, agy, sgx, sgw, sgb);
    check_vs("torch linear: y = F.linear (L = in)", y, get("linear/", 0, "y")->data, sy2, (double)in + 1, ln * out);
    check_vs("torch linear: dx = x.grad (L = out)", gx, get("linear/", 0, "gx")->data, sgx, (double)out, ln * in);
    check_vs("torch linear: dw = weight.grad (L = n)", gw, get("linear/", 0, "gw")->data, sgw, (double)ln, out * in);
    check_vs("torch linear: db = bias.grad (L = n)", gb, get("linear/", 0, "gb")->data, sgb, (double)ln, out);
    free(y); free(gx); free(gw); free(gb); free(axl); free(awl); free(abl); free(agy); free(sy2); free(sgx); free(sgw); free(sgb);

    /* cross-entropy: exp / log in float (a few ulps each) over k = 10 classes: 64 u |terms| */
    for (int i = 0; i < 2; i++) {
        tens *z = get("xent%d/", i, "z");
        const int64_t rn = z->shape[0], k = z->shape[1];
        const float *lf = get("xent%d/", i, "labels")->data, sm = get("xent%d/", i, "smoothing")->data[0];
        int32_t lab[64];
        for (int64_t r = 0; r < rn; r++) lab[r] = (int32_t)lf[r];
        float *probs = zeros(rn * k), *gz = zeros(rn * k), loss;
        CHECK_OK(gbtd_xent_forward(rn, k, z->data, lab, sm, probs, NULL, &loss), "torch xent: forward runs");
        gbtd_xent_backward(rn, k, probs, lab, sm, 1.0f, gz);
        float zmax = 0;
        for (int64_t t = 0; t < rn * k; t++) zmax = fmaxf(zmax, fabsf(z->data[t]));
        float sl = 2 * zmax + 4, *sg = zeros(rn * k);
        for (int64_t t = 0; t < rn * k; t++) sg[t] = 2.0f / (float)rn;
        check_vs(i ? "torch xent smoothing 0.1: loss = F.cross_entropy (64 u (2 max|z| + 4))"
                   : "torch xent: loss = F.cross_entropy (64 u (2 max|z| + 4))",
                 &loss, get("xent%d/", i, "loss")->data, &sl, 30, 1);
        check_vs(i ? "torch xent smoothing 0.1: dlogits = grad" : "torch xent: dlogits = grad", gz,
                 get("xent%d/", i, "gz")->data, sg, 30, rn * k);
        free(probs); free(gz); free(sg);
    }

    /* option-A shortcut: exact */
    x = get("shortcut/", 0, "x");
    tens *ty = get("shortcut/", 0, "y");
    y = zeros(ty->numel);
    gx = zeros(x->numel);
    CHECK_OK(gbtd_shortcut_a_forward(x->shape[0], x->shape[1], x->shape[2], x->shape[3], 8, x->data, y), "torch shortcut A: forward runs");
    gbtd_shortcut_a_backward(x->shape[0], x->shape[1], x->shape[2], x->shape[3], 8, get("shortcut/", 0, "gy")->data, gx);
    check_vs("torch shortcut A: y = F.pad(x[:, :, ::2, ::2]) (exact)", y, ty->data, NULL, 0, ty->numel);
    check_vs("torch shortcut A: dx = x.grad (exact)", gx, get("shortcut/", 0, "gx")->data, NULL, 0, x->numel);
    free(y); free(gx);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_ops_torch FILE\n");
        return 2;
    }
    const int count = load(argv[1]);
    if (count < 0) {
        fprintf(stderr, "test_ops_torch: %s: missing, truncated or not a GBTDT1 tensor file\n", argv[1]);
        return 1;
    }
    if (count == 0) {
        printf("skipped: PyTorch not available to %s\n", argv[1]);
        return 77;
    }
    for (int t = 1; t <= 2; t++) {
        gbtd_set_threads(t);
        printf("# threads %d\n", t);
        convs();
    }
    bns();
    others();
    for (int i = 0; i < NT; i++) free(T[i].data);
    free(T);
    return check_finish();
}
