/* Response refit of a CRU-Net's own output 1x1s: each member's conv_d re-solved by least squares
 * so that, on real images, it reproduces the source convolution's response (cru/build.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/status.h"
#include "cru/build.h"
#include "cru/internal.h"
#include "decomp/common.h"
#include "nn/data.h"

gbtd_cru_refit_opts gbtd_cru_refit_opts_default(void)
{
    gbtd_cru_refit_opts o;
    memset(&o, 0, sizeof o);
    o.images = 1024;
    o.batch = 128;
    o.ridge = 1e-3;
    return o;
}

typedef struct member_ {
    int layer;  /* the member's cru_d layer in the CRU-Net */
    int target; /* the source value it stands for: the replaced convolution's output */
} member_;

static bool ends_with_(const char *s, const char *tail)
{
    const size_t n = strlen(s), t = strlen(tail);
    return n >= t && !strcmp(s + n - t, tail);
}

static int layer_named_(const gbtd_net *net, const char *name)
{
    for (int i = 0; i < net->nlayers; i++)
        if (net->layers[i].kind == GBTD_LAYER_CONV && !strcmp(net->layers[i].name, name)) return i;
    return -1;
}

/* Every "<member>.cru_d" of the CRU-Net, in network order, with the source value it replaces:
 * the output of the source convolution "<member>" (a basic-block member) or "<member>.conv3"
 * (a bottleneck unit), which must have the shape of the cru_d output. */
static int find_members_(const gbtd_net *cru, const gbtd_net *src, member_ **out, int *count)
{
    *out = NULL;
    *count = 0;
    member_ *m = gbtd_malloc((size_t)cru->nlayers * sizeof *m + 1);
    if (!m) return gbtd_error(GBTD_ENOMEM, "cru refit: out of memory");
    int n = 0;
    for (int i = 0; i < cru->nlayers; i++) {
        const gbtd_layer *L = &cru->layers[i];
        if (L->kind != GBTD_LAYER_CONV || !ends_with_(L->name, ".cru_d")) continue;
        char base[GBTD_NET_NAME_LEN], alt[GBTD_NET_NAME_LEN + 8];
        snprintf(base, sizeof base, "%.*s", (int)(strlen(L->name) - strlen(".cru_d")), L->name);
        snprintf(alt, sizeof alt, "%s.conv3", base);
        int s = layer_named_(src, base);
        if (s < 0) s = layer_named_(src, alt);
        const gbtd_value *a = &cru->values[L->out];
        const gbtd_value *b = s >= 0 ? &src->values[src->layers[s].out] : NULL;
        if (!b || a->c != b->c || a->h != b->h || a->w != b->w) {
            gbtd_free(m);
            return gbtd_error(GBTD_EINVAL, "cru refit: %s has no source convolution %s or %s of "
                              "output shape %dx%dx%d", L->name, base, alt, a->c, a->h, a->w);
        }
        if (L->k != 1 || L->groups != 1) {
            gbtd_free(m);
            return gbtd_error(GBTD_EINVAL, "cru refit: %s is not a 1x1 convolution without groups",
                              L->name);
        }
        m[n].layer = i;
        m[n].target = src->layers[s].out;
        n++;
    }
    if (n == 0) {
        gbtd_free(m);
        return gbtd_error(GBTD_ENOTFOUND, "cru refit: the network has no CRU member layer "
                          "(*.cru_d): nothing to refit");
    }
    *out = m;
    *count = n;
    return GBTD_OK;
}

/* The batch norm reading conv layer i's output and nothing else reading it, or -1. */
static int bn_after_(const gbtd_net *net, int i)
{
    const int v = net->layers[i].out;
    int bn = -1, readers = 0;
    for (int j = 0; j < net->nlayers; j++) {
        const gbtd_layer *L = &net->layers[j];
        if (L->in != v && L->in2 != v) continue;
        readers++;
        if (L->kind == GBTD_LAYER_BN && L->in == v) bn = j;
    }
    return readers == 1 ? bn : -1;
}

/* The refit images: `count` images of d in a seeded random order, normalised, no augmentation. */
static int collect_images_(const gbtd_dataset *d, const gbtd_cru_refit_opts *o, int64_t count,
                           float **out)
{
    gbtd_loader_opts lo = gbtd_loader_opts_default();
    lo.batch = o->batch;
    lo.shuffle = true;
    lo.seed = o->seed;
    lo.prefetch = false;
    GBTD_CHECK(gbtd_cru_norm_(d, o->mean, o->std, lo.mean, lo.std));
    const int64_t img = (int64_t)d->c * d->h * d->w;
    float *x = gbtd_malloc((size_t)(count * img) * sizeof *x);
    if (!x) return gbtd_error(GBTD_ENOMEM, "cru refit: out of memory for %lld images",
                              (long long)count);
    gbtd_loader *ld = NULL;
    int rc = gbtd_loader_create(d, &lo, &ld);
    if (!rc) rc = gbtd_loader_start_epoch(ld, 0);
    int64_t have = 0;
    while (!rc && have < count) {
        const float *b;
        const int32_t *y;
        int n;
        rc = gbtd_loader_next(ld, &b, &y, &n);
        if (rc || n == 0) break;
        const int64_t take = n < count - have ? n : count - have;
        memcpy(x + have * img, b, (size_t)(take * img) * sizeof *x);
        have += take;
    }
    gbtd_loader_free(ld);
    if (rc) {
        gbtd_free(x);
        return rc;
    }
    *out = x;
    return GBTD_OK;
}

/* out[c * stride] += the sum of channel c of the n images X (n x ch x P), float within an
 * image, double across images. */
static void channel_sums_(const float *X, int n, int64_t ch, int64_t P, double *out, int64_t stride)
{
    for (int64_t c = 0; c < ch; c++) {
        double s = 0;
        for (int i = 0; i < n; i++) {
            const float *r = X + ((int64_t)i * ch + c) * P;
            float part = 0;
            for (int64_t p = 0; p < P; p++) part += r[p];
            s += part;
        }
        out[c * stride] += s;
    }
}

/* Over all refit images: G = sum Z Z^T (Ka x Ka), C = sum Y Z^T (C_out x Ka), yy = sum |Y|^2, with
 * Z the input of the member's cru_d in the CRU-Net and Y the source's response, both networks
 * run in evaluation mode on the same images. With an intercept (Ka = K + 1) Z carries a last
 * row of ones: G's last row and column are the channel sums of Z and the pixel count, C's last
 * column the channel sums of Y. */
static int accumulate_(gbtd_net *cru, gbtd_net *src, const member_ *m, const float *x,
                       int64_t count, int batch, bool intercept, double *G, double *C, double *yy)
{
    const gbtd_layer *L = &cru->layers[m->layer];
    const gbtd_value *zv = &cru->values[L->in];
    const int64_t K = zv->c, O = L->c_out, P = (int64_t)zv->h * zv->w, Ka = K + (intercept ? 1 : 0);
    const int64_t img = (int64_t)cru->in_c * cru->in_h * cru->in_w;
    blasint bk = 0, bo = 0, bp = 0;
    GBTD_CHECK(gbtd_blas_int(K, &bk));
    GBTD_CHECK(gbtd_blas_int(O, &bo));
    GBTD_CHECK(gbtd_blas_int(P, &bp));
    float *gf = gbtd_malloc((size_t)(K * K + O * K) * sizeof *gf);
    if (!gf) return gbtd_error(GBTD_ENOMEM, "cru refit: out of memory");
    float *cf = gf + K * K;
    memset(G, 0, (size_t)(Ka * Ka) * sizeof *G);
    memset(C, 0, (size_t)(O * Ka) * sizeof *C);
    *yy = 0;
    int rc = GBTD_OK;
    for (int64_t b0 = 0; b0 < count && !rc; b0 += batch) {
        const int n = (int)(count - b0 < batch ? count - b0 : batch);
        /* only as far as the two values: the member's input and the source's response */
        rc = gbtd_net_forward_until(src, x + b0 * img, n, src->values[m->target].producer);
        if (!rc) rc = gbtd_net_forward_until(cru, x + b0 * img, n, m->layer - 1);
        if (rc) break;
        const float *Y = gbtd_net_value(src, m->target), *Z = gbtd_net_value(cru, L->in);
        /* float sums within a batch (n P terms), double across batches */
        for (int i = 0; i < n; i++) {
            const float *zi = Z + (int64_t)i * K * P, *yi = Y + (int64_t)i * O * P;
            const float beta = i ? 1.0f : 0.0f;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bk, bk, bp, 1.0f, zi, bp, zi, bp,
                        beta, gf, bk);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bo, bk, bp, 1.0f, yi, bp, zi, bp,
                        beta, cf, bk);
        }
        for (int64_t a = 0; a < K; a++)
            for (int64_t c = 0; c < K; c++) G[a * Ka + c] += gf[a * K + c];
        for (int64_t o = 0; o < O; o++)
            for (int64_t a = 0; a < K; a++) C[o * Ka + a] += cf[o * K + a];
        if (intercept) {
            /* G's last column and row: channel sums of Z; C's last column: those of Y */
            channel_sums_(Z, n, K, P, G + K, Ka);
            channel_sums_(Z, n, K, P, G + K * Ka, 1);
            G[K * Ka + K] += (double)n * P;
            channel_sums_(Y, n, O, P, C + K, Ka);
        }
        double s = 0;
        for (int64_t j = 0; j < (int64_t)n * O * P; j++) s += (double)Y[j] * Y[j];
        *yy += s;
    }
    gbtd_free(gf);
    if (rc) return rc;
    bool finite = isfinite(*yy);
    for (int64_t j = 0; j < Ka * Ka && finite; j++) finite = isfinite(G[j]);
    for (int64_t j = 0; j < O * Ka && finite; j++) finite = isfinite(C[j]);
    if (!finite)
        return gbtd_error(GBTD_ENONFINITE, "cru refit: %s: non-finite activations (NaN or Inf in the "
                          "networks' weights or the data)", L->name);
    return GBTD_OK;
}

/* |W Z - Y|^2 / |Y|^2 from the sums: (tr(W G W^T) - 2 <W, C> + yy) / yy. W (O x K) float. */
static double rel_error_(const float *W, const double *G, const double *C, double yy, int64_t O,
                         int64_t K)
{
    double e = yy;
    for (int64_t o = 0; o < O; o++) {
        const float *w = W + o * K;
        for (int64_t a = 0; a < K; a++) {
            double ga = 0;
            for (int64_t b = 0; b < K; b++) ga += G[a * K + b] * w[b];
            e += (double)w[a] * ga - 2.0 * (double)w[a] * C[o * K + a];
        }
    }
    return yy > 0 ? fmax(e, 0.0) / yy : 0.0;
}

/* W <- argmin |W Z - Y|^2 + lambda |W - W0|^2 = (C + lambda W0) (G + lambda I)^-1, lambda =
 * ridge tr(G) / K, over the first `nreg` of the K columns (the intercept column, if any, is
 * not pulled: its start is 0). */
static int solve_(float *W, const double *G, const double *C, int64_t O, int64_t K, int64_t nreg,
                  double ridge, const char *name)
{
    double *A = gbtd_malloc((size_t)(K * K + K * O) * sizeof *A);
    if (!A) return gbtd_error(GBTD_ENOMEM, "cru refit: out of memory");
    double *B = A + K * K, tr = 0;
    for (int64_t a = 0; a < nreg; a++) tr += G[a * K + a];
    const double lambda = ridge * tr / (double)nreg;
    memcpy(A, G, (size_t)(K * K) * sizeof *A);
    for (int64_t a = 0; a < nreg; a++) A[a * K + a] += lambda;
    for (int64_t a = 0; a < K; a++)
        for (int64_t o = 0; o < O; o++) B[a * O + o] = C[o * K + a] + (a < nreg ? lambda * (double)W[o * K + a] : 0.0);
    lapack_int lk = 0, lo = 0;
    int rc = gbtd_lapack_int(K, &lk);
    if (!rc) rc = gbtd_lapack_int(O, &lo);
    if (!rc) {
        const lapack_int info = LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', lk, lo, A, lk, B, lo);
        if (info != 0)
            rc = gbtd_error(GBTD_ENUMERIC, "cru refit: %s: the response Gram matrix is not positive "
                            "definite (LAPACK info %d; all-zero inputs? raise the ridge)", name,
                            (int)info);
    }
    if (!rc)
        for (int64_t a = 0; a < K; a++)
            for (int64_t o = 0; o < O; o++) W[o * K + a] = (float)B[a * O + o];
    gbtd_free(A);
    return rc;
}

int gbtd_cru_refit(gbtd_net *cru, gbtd_net *src, const gbtd_dataset *d,
                   const gbtd_cru_refit_opts *opts, gbtd_cru_refit_info *info)
{
    if (info) memset(info, 0, sizeof *info);
    gbtd_cru_refit_opts o = opts ? *opts : gbtd_cru_refit_opts_default();
    if (!cru || !src || !d || !cru->finalized || !src->finalized || o.images < 1 || o.batch < 1 ||
        !(o.ridge >= 0) || !isfinite(o.ridge))
        return gbtd_error(GBTD_EINVAL, "cru refit: bad argument (images >= 1, batch >= 1, "
                          "ridge >= 0 finite)");
    if (d->c != cru->in_c || d->h != cru->in_h || d->w != cru->in_w || d->c != src->in_c ||
        d->h != src->in_h || d->w != src->in_w)
        return gbtd_error(GBTD_EINVAL, "cru refit: data images are %dx%dx%d, the networks take "
                          "%dx%dx%d and %dx%dx%d", d->c, d->h, d->w, cru->in_c, cru->in_h,
                          cru->in_w, src->in_c, src->in_h, src->in_w);
    if (d->c > 4) return gbtd_error(GBTD_EINVAL, "cru refit: more than 4 channels");
    const double t0 = gbtd_wall_time();
    member_ *m = NULL;
    int nm = 0;
    GBTD_CHECK(find_members_(cru, src, &m, &nm));
    const int64_t count = o.images < d->n ? o.images : d->n;
    if (o.batch > count) o.batch = (int)count;
    float *x = NULL;
    int rc = collect_images_(d, &o, count, &x);
    int64_t kmax = 0, omax = 0;
    for (int i = 0; i < nm; i++) {
        const gbtd_layer *L = &cru->layers[m[i].layer];
        if (L->c_in > kmax) kmax = L->c_in;
        if (L->c_out > omax) omax = L->c_out;
    }
    const int64_t ka = kmax + 1;
    double *G = rc ? NULL : gbtd_malloc((size_t)(ka * ka + omax * ka) * sizeof *G);
    float *Wa = rc ? NULL : gbtd_malloc((size_t)(omax * ka) * sizeof *Wa);
    if (!rc && (!G || !Wa)) rc = gbtd_error(GBTD_ENOMEM, "cru refit: out of memory");
    double before = 0, after = 0;
    /* in network order: member i's inputs already see the refitted members before it */
    for (int i = 0; i < nm && !rc; i++) {
        const gbtd_layer *L = &cru->layers[m[i].layer];
        const int bn = o.intercept ? bn_after_(cru, m[i].layer) : -1;
        const int64_t K = L->c_in, O = L->c_out, Ka = K + (bn >= 0 ? 1 : 0);
        double *C = G + Ka * Ka, yy = 0;
        float *W = cru->params + L->w;
        rc = accumulate_(cru, src, &m[i], x, count, o.batch, bn >= 0, G, C, &yy);
        if (rc) break;
        for (int64_t r = 0; r < O; r++) {
            memcpy(Wa + r * Ka, W + r * K, (size_t)K * sizeof *Wa);
            if (Ka > K) Wa[r * Ka + K] = 0.0f;
        }
        const double e0 = rel_error_(Wa, G, C, yy, O, Ka);
        rc = solve_(Wa, G, C, O, Ka, K, o.ridge, L->name);
        if (rc) break;
        const double e1 = rel_error_(Wa, G, C, yy, O, Ka);
        for (int64_t r = 0; r < O; r++) memcpy(W + r * K, Wa + r * Ka, (size_t)K * sizeof *W);
        if (bn >= 0) { /* y = W z + b: the batch norm after it subtracts mean - b from W z */
            float *mean = cru->state + cru->layers[bn].mean;
            for (int64_t r = 0; r < O; r++) mean[r] -= Wa[r * Ka + K];
        }
        before += e0;
        after += e1;
        if (o.on_member) rc = o.on_member(L->name, i + 1, nm, e0, e1, o.ctx);
        if (rc) rc = gbtd_error(GBTD_ECANCELLED, "cru refit: stopped by the caller");
    }
    if (!rc && info) {
        info->members = nm;
        info->error_before = before / nm;
        info->error_after = after / nm;
        info->images = count;
        info->seconds = gbtd_wall_time() - t0;
    }
    gbtd_free(Wa);
    gbtd_free(G);
    gbtd_free(x);
    gbtd_free(m);
    return rc;
}
