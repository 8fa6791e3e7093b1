/* BTD solvers: ALS with batched least-squares updates and LM Gauss-Newton with matrix-free
 * J^T J. See btd.h for the model and the algorithms.
 *
 * Working representation. For factored mode k, the factors of all terms sit side by side in one
 * matrix Ucat_k = [U_{0,k} ... U_{R-1,k}] (I_{m_k} x sumL_k, row-major), so that projecting X on
 * mode m_k for every term is one GEMM. The cores sit one after another in one buffer. All of
 * these live in one "state vector" (factors first, then cores) so that the Gauss-Newton step is a
 * plain vector. Gramians Gram_k = Ucat_k^T Ucat_k hold every cross-term product U_{r,k}^T U_{s,k}
 * as a block. */
#include <complex.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "core/rng.h"
#include "core/status.h"
#include "decomp/btd.h"
#include "decomp/btd_internal.h"
#include "linalg/linalg.h"

#undef I /* <complex.h>, pulled in by LAPACKE, defines I; here it is a size */

/* ---- raw kernels --------------------------------------------------------------------------- */

int gbtd_btd_blas_fits_(int64_t n)
{
    blasint b;
    lapack_int l;
    GBTD_CHECK(gbtd_blas_int(n, &b));
    return gbtd_lapack_int(n, &l);
}

static void prod_around(const int64_t *sh, int nd, int mode, int64_t *P, int64_t *Q)
{
    int64_t p = 1, q = 1;
    for (int k = 0; k < mode; k++) p *= sh[k];
    for (int k = mode + 1; k < nd; k++) q *= sh[k];
    *P = p;
    *Q = q;
}

void gbtd_btd_ttm_(const double *x, int nd, const int64_t *sh, int mode, const double *u,
                   int64_t ldu, int64_t J, int trans, double beta, double *y)
{
    int64_t P, Q;
    prod_around(sh, nd, mode, &P, &Q);
    const int64_t I = sh[mode];
    if (P * Q * I * J <= 2048) { /* tiny: plain loops beat the BLAS call overhead */
        /* Sums kept in a register (a load-add-store chain on y would stall when Q is 1). */
        const int64_t su = trans ? ldu : 1, sj = trans ? 1 : ldu;
        for (int64_t p = 0; p < P; p++)
            for (int64_t j = 0; j < J; j++)
                for (int64_t q = 0; q < Q; q++) {
                    const double *xc = x + p * I * Q + q, *uc = u + j * sj;
                    double acc = 0.0;
                    for (int64_t i = 0; i < I; i++) acc += uc[i * su] * xc[i * Q];
                    double *yv = y + (p * J + j) * Q + q;
                    *yv = beta == 0.0 ? acc : beta * *yv + acc;
                }
        return;
    }
    if (Q == 1) {
        /* Y (P x J) = X (P x I) op(U)^T. */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, trans ? CblasNoTrans : CblasTrans, (blasint)P,
                    (blasint)J, (blasint)I, 1.0, x, (blasint)I, u, (blasint)ldu, beta, y,
                    (blasint)J);
        return;
    }
    for (int64_t p = 0; p < P; p++)
        cblas_dgemm(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, CblasNoTrans, (blasint)J,
                    (blasint)Q, (blasint)I, 1.0, u, (blasint)ldu, x + p * I * Q, (blasint)Q, beta,
                    y + p * J * Q, (blasint)Q);
}

void gbtd_btd_contract_(const double *a, const double *b, int64_t P, int64_t Ia, int64_t Ib,
                        int64_t Q, double beta, double *out, int64_t ldo)
{
    if (P * Q * Ia * Ib <= 2048) {
        for (int64_t i = 0; i < Ia; i++)
            for (int64_t j = 0; j < Ib; j++) {
                double s = 0.0;
                for (int64_t p = 0; p < P; p++) {
                    const double *ar = a + (p * Ia + i) * Q, *br = b + (p * Ib + j) * Q;
                    for (int64_t q = 0; q < Q; q++) s += ar[q] * br[q];
                }
                out[i * ldo + j] = (beta == 0.0 ? 0.0 : beta * out[i * ldo + j]) + s;
            }
        return;
    }
    if (Q == 1) {
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)Ia, (blasint)Ib, (blasint)P,
                    1.0, a, (blasint)Ia, b, (blasint)Ib, beta, out, (blasint)ldo);
        return;
    }
    for (int64_t p = 0; p < P; p++)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)Ia, (blasint)Ib, (blasint)Q,
                    1.0, a + p * Ia * Q, (blasint)Q, b + p * Ib * Q, (blasint)Q,
                    p == 0 ? beta : 1.0, out, (blasint)ldo);
}

/* dst (P x len x Q) <- src[:, start:start+len, :] of src (P x full x Q). */
static void slice_get(const double *src, int64_t P, int64_t full, int64_t Q, int64_t start,
                      int64_t len, double *dst)
{
    for (int64_t p = 0; p < P; p++)
        memcpy(dst + p * len * Q, src + (p * full + start) * Q, (size_t)(len * Q) * sizeof(double));
}

static void slice_put(const double *src, int64_t P, int64_t full, int64_t Q, int64_t start,
                      int64_t len, double *dst)
{
    for (int64_t p = 0; p < P; p++)
        memcpy(dst + (p * full + start) * Q, src + p * len * Q, (size_t)(len * Q) * sizeof(double));
}

static double dot(const double *a, const double *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ---- workspace ----------------------------------------------------------------------------- */

typedef struct ws {
    int N, K, R;
    int64_t shape[GBTD_MAX_MODES];
    int modes[GBTD_MAX_MODES];
    int kof[GBTD_MAX_MODES];       /* mode -> k, -1 for full modes */
    int k1[GBTD_MAX_MODES];        /* first (batched) projection mode for each k */
    int64_t numel, F, Pc, Gsize, nz, csize;
    int64_t *L;                    /* R x K */
    int64_t *off;                  /* K x (R + 1) column offsets in Ucat_k */
    int64_t sumL[GBTD_MAX_MODES], maxL;
    int64_t *cshape;               /* R x N core shapes */
    int64_t *coff;                 /* R + 1 offsets in the core buffer */
    int64_t *pcoff;                /* R + 1 offsets of the chosen-index blocks (size Pc) */
    int64_t *poff;                 /* R + 1 offsets in Pb */
    int64_t uoff[GBTD_MAX_MODES + 1];
    const double *x;
    double xn2;
    double *z, *z2;                /* state vectors (current, trial) */
    double *U[GBTD_MAX_MODES], *G; /* views into the current state */
    double *Gram[GBTD_MAX_MODES], *H[GBTD_MAX_MODES], *M[GBTD_MAX_MODES];
    double *B, *Y, *Pb, *t1, *t2, *rec;
    double *Hc, *Hf, *Gh, *Bh, *Th; /* dense core system (Pc <= dense limit) */
    double *ct[GBTD_MAX_MODES + 4]; /* core-sized temporaries */
    double *qr, *tau, *qrwork, *rmat, *hsmall;
    int64_t qrlwork;
    /* NLS */
    double *g, *cx, *cr, *cz, *cp, *cq, *D[GBTD_MAX_MODES], *Q1[GBTD_MAX_MODES], *pchol;
    double lambda;
    int nls;
    int dense_core;
    int fast_jtj;                  /* K == 2 and Pc <= BTD_FAST_JTJ_LIMIT: pair sums by GEMMs */
    double *Y0, *Y1, *E, *Vh, *Oh;
    double *bk;                    /* NLS: saved Gramians, H_0, Y0, Gh around a trial point */
    double *qloc;                  /* NLS fast path: two maxL x maxL accumulators */
    int64_t bksize;
} ws;

#define BTD_DENSE_CORE_LIMIT 2048
#define BTD_FAST_JTJ_LIMIT 1024

#define LIDX(w, r, k) ((w)->L[(int64_t)(r) * (w)->K + (k)])
#define OFF(w, k, r) ((w)->off[(int64_t)(k) * ((w)->R + 1) + (r)])

static void ws_free(ws *w)
{
    gbtd_free(w->L);
    gbtd_free(w->off);
    gbtd_free(w->cshape);
    gbtd_free(w->coff);
    gbtd_free(w->pcoff);
    gbtd_free(w->poff);
    gbtd_free(w->z);
    gbtd_free(w->z2);
    for (int k = 0; k < GBTD_MAX_MODES; k++) {
        gbtd_free(w->Gram[k]);
        gbtd_free(w->H[k]);
        gbtd_free(w->M[k]);
        gbtd_free(w->D[k]);
        gbtd_free(w->Q1[k]);
    }
    gbtd_free(w->B);
    gbtd_free(w->Y);
    gbtd_free(w->Pb);
    gbtd_free(w->t1);
    gbtd_free(w->t2);
    gbtd_free(w->rec);
    gbtd_free(w->Hc);
    gbtd_free(w->Hf);
    gbtd_free(w->Gh);
    gbtd_free(w->Bh);
    gbtd_free(w->Th);
    for (int i = 0; i < GBTD_MAX_MODES + 4; i++) gbtd_free(w->ct[i]);
    gbtd_free(w->qr);
    gbtd_free(w->tau);
    gbtd_free(w->qrwork);
    gbtd_free(w->rmat);
    gbtd_free(w->hsmall);
    gbtd_free(w->g);
    gbtd_free(w->cx);
    gbtd_free(w->cr);
    gbtd_free(w->cz);
    gbtd_free(w->cp);
    gbtd_free(w->cq);
    gbtd_free(w->pchol);
    gbtd_free(w->Y0);
    gbtd_free(w->Y1);
    gbtd_free(w->E);
    gbtd_free(w->Vh);
    gbtd_free(w->Oh);
    gbtd_free(w->bk);
    gbtd_free(w->qloc);
    memset(w, 0, sizeof *w);
}

static void set_state(ws *w, double *v)
{
    for (int k = 0; k < w->K; k++) w->U[k] = v + w->uoff[k];
    w->G = v + w->uoff[w->K];
}

static int alloc_d(double **p, int64_t n, int *ok)
{
    *p = gbtd_malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (*p == NULL) *ok = 0;
    return 0;
}

/* Layout from the model (sorted modes, ranks in the order of the sorted modes). x is borrowed
 * (contiguous, shape = model shape) and may be set later. */
static int ws_init(ws *w, const gbtd_btd *m, int nls)
{
    memset(w, 0, sizeof *w);
    const int N = m->ndim, K = m->nmodes, R = m->nterms;
    w->N = N;
    w->K = K;
    w->R = R;
    w->nls = nls;
    for (int n = 0; n < N; n++) {
        w->shape[n] = m->shape[n];
        w->kof[n] = -1;
    }
    for (int k = 0; k < K; k++) {
        w->modes[k] = m->modes[k];
        w->kof[m->modes[k]] = k;
    }
    GBTD_CHECK(gbtd_prod_i64(w->shape, N, &w->numel));
    GBTD_CHECK(gbtd_btd_blas_fits_(w->numel));
    int ok = 1;
    w->L = gbtd_malloc((size_t)R * (size_t)K * sizeof(int64_t));
    w->off = gbtd_malloc((size_t)K * (size_t)(R + 1) * sizeof(int64_t));
    w->cshape = gbtd_malloc((size_t)R * (size_t)N * sizeof(int64_t));
    w->coff = gbtd_malloc((size_t)(R + 1) * sizeof(int64_t));
    w->pcoff = gbtd_malloc((size_t)(R + 1) * sizeof(int64_t));
    w->poff = gbtd_malloc((size_t)(R + 1) * sizeof(int64_t));
    if (!w->L || !w->off || !w->cshape || !w->coff || !w->pcoff || !w->poff) return GBTD_ENOMEM;
    memcpy(w->L, m->ranks, (size_t)R * (size_t)K * sizeof(int64_t));
    w->F = 1;
    for (int n = 0; n < N; n++)
        if (w->kof[n] < 0) w->F *= w->shape[n];
    w->maxL = 1;
    for (int k = 0; k < K; k++) {
        int64_t s = 0;
        for (int r = 0; r < R; r++) {
            OFF(w, k, r) = s;
            s += LIDX(w, r, k);
            if (LIDX(w, r, k) > w->maxL) w->maxL = LIDX(w, r, k);
        }
        OFF(w, k, R) = s;
        w->sumL[k] = s;
    }
    int64_t cmax[GBTD_MAX_MODES];
    for (int n = 0; n < N; n++) cmax[n] = w->shape[n];
    for (int k = 0; k < K; k++) {
        cmax[w->modes[k]] = 1;
        for (int r = 0; r < R; r++)
            if (LIDX(w, r, k) > cmax[w->modes[k]]) cmax[w->modes[k]] = LIDX(w, r, k);
    }
    GBTD_CHECK(gbtd_prod_i64(cmax, N, &w->csize));
    w->coff[0] = 0;
    w->pcoff[0] = 0;
    for (int r = 0; r < R; r++) {
        int64_t c = 1, pc = 1;
        for (int n = 0; n < N; n++) {
            const int k = w->kof[n];
            w->cshape[r * N + n] = k >= 0 ? LIDX(w, r, k) : w->shape[n];
            c *= w->cshape[r * N + n];
            if (k >= 0) pc *= LIDX(w, r, k);
        }
        w->coff[r + 1] = w->coff[r] + c;
        w->pcoff[r + 1] = w->pcoff[r] + pc;
    }
    w->Gsize = w->coff[R];
    w->Pc = w->pcoff[R];
    w->uoff[0] = 0;
    for (int k = 0; k < K; k++) w->uoff[k + 1] = w->uoff[k] + w->shape[w->modes[k]] * w->sumL[k];
    w->nz = w->uoff[K] + w->Gsize;
    /* First projection mode for each k: the other factored mode that shrinks X the most. */
    for (int j = 0; j < K; j++) {
        int best = -1;
        for (int k = 0; k < K; k++) {
            if (k == j) continue;
            if (best < 0 || (double)w->sumL[k] / (double)w->shape[w->modes[k]] <
                                (double)w->sumL[best] / (double)w->shape[w->modes[best]])
                best = k;
        }
        w->k1[j] = best;
    }
    /* Buffer sizes. */
    int64_t ysize = 1, tsize = w->csize, psize = 1;
    for (int k = 0; k < K; k++) {
        const int64_t I = w->shape[w->modes[k]];
        const int64_t y = w->numel / I * w->sumL[k];
        if (y > ysize) ysize = y;
        const int64_t t = w->numel / I * w->maxL;
        if (t > tsize) tsize = t;
    }
    for (int j = 0; j < K && K > 1; j++) {
        int64_t s = 0;
        for (int r = 0; r < R; r++) {
            int64_t c = w->numel;
            for (int k = 0; k < K; k++)
                if (k != j) c = c / w->shape[w->modes[k]] * LIDX(w, r, k);
            s += c;
        }
        if (s > psize) psize = s;
    }
    GBTD_CHECK(gbtd_btd_blas_fits_(ysize));
    GBTD_CHECK(gbtd_btd_blas_fits_(psize));
    alloc_d(&w->z, w->nz, &ok);
    alloc_d(&w->z2, w->nz, &ok);
    for (int k = 0; k < K; k++) {
        const int64_t I = w->shape[w->modes[k]], S = w->sumL[k];
        alloc_d(&w->Gram[k], S * S, &ok);
        alloc_d(&w->H[k], S * S, &ok);
        alloc_d(&w->M[k], I * S, &ok);
        if (nls) {
            alloc_d(&w->D[k], S * S, &ok);
            alloc_d(&w->Q1[k], S * S, &ok);
        }
    }
    alloc_d(&w->B, w->Gsize, &ok);
    alloc_d(&w->Y, ysize, &ok);
    alloc_d(&w->Pb, psize, &ok);
    alloc_d(&w->t1, tsize, &ok);
    alloc_d(&w->t2, tsize, &ok);
    alloc_d(&w->rec, w->numel, &ok);
    for (int i = 0; i < K + 4; i++) alloc_d(&w->ct[i], w->csize, &ok);
    w->dense_core = w->Pc <= BTD_DENSE_CORE_LIMIT;
    w->fast_jtj = K == 2 && w->dense_core && w->Pc <= BTD_FAST_JTJ_LIMIT;
    if (w->fast_jtj) alloc_d(&w->Y0, w->Pc * w->Pc, &ok);
    if (w->dense_core) {
        alloc_d(&w->Hc, w->Pc * w->Pc, &ok);
        alloc_d(&w->Hf, w->Pc * w->Pc, &ok);
        alloc_d(&w->Gh, w->Gsize, &ok);
        alloc_d(&w->Bh, w->Gsize, &ok);
        alloc_d(&w->Th, w->Gsize, &ok);
    }
    int64_t maxI = 1, maxS = 1;
    for (int k = 0; k < K; k++) {
        if (w->shape[w->modes[k]] > maxI) maxI = w->shape[w->modes[k]];
        if (w->sumL[k] > maxS) maxS = w->sumL[k];
    }
    w->qrlwork = 64 * w->maxL;
    alloc_d(&w->qr, maxI * w->maxL, &ok);
    alloc_d(&w->tau, w->maxL, &ok);
    alloc_d(&w->qrwork, w->qrlwork, &ok);
    alloc_d(&w->rmat, w->maxL * w->maxL, &ok);
    alloc_d(&w->hsmall, maxS * maxS, &ok);
    /* The core-RHS buffer for K == 1 and the solution vectors of the core CG. */
    if (!w->dense_core || nls) {
        alloc_d(&w->cx, w->nz, &ok);
        alloc_d(&w->cr, w->nz, &ok);
        alloc_d(&w->cz, w->nz, &ok);
        alloc_d(&w->cp, w->nz, &ok);
        alloc_d(&w->cq, w->nz, &ok);
    }
    if (nls) {
        alloc_d(&w->g, w->nz, &ok);
        alloc_d(&w->pchol, (int64_t)K * R * w->maxL * w->maxL, &ok);
        w->bksize = w->sumL[0] * w->sumL[0];
        for (int k = 0; k < K; k++) w->bksize += w->sumL[k] * w->sumL[k];
        if (w->fast_jtj) w->bksize += w->Pc * w->Pc + w->Gsize;
        alloc_d(&w->bk, w->bksize, &ok);
        if (w->fast_jtj) {
            alloc_d(&w->qloc, 2 * w->maxL * w->maxL, &ok);
            alloc_d(&w->Y1, w->Pc * w->Pc, &ok);
            alloc_d(&w->E, w->Pc * w->Pc, &ok);
            alloc_d(&w->Vh, w->Gsize, &ok);
            alloc_d(&w->Oh, w->Gsize, &ok);
        }
    }
    if (!ok) return gbtd_error(GBTD_ENOMEM, "btd: out of memory for the workspace");
    memset(w->z, 0, (size_t)w->nz * sizeof(double));
    memset(w->z2, 0, (size_t)w->nz * sizeof(double));
    set_state(w, w->z);
    return GBTD_OK;
}

/* ---- state <-> model ----------------------------------------------------------------------- */

static void load_model(ws *w, const gbtd_btd *m)
{
    for (int r = 0; r < w->R; r++) {
        memcpy(w->G + w->coff[r], m->cores[r].data,
               (size_t)(w->coff[r + 1] - w->coff[r]) * sizeof(double));
        for (int k = 0; k < w->K; k++) {
            const int64_t I = w->shape[w->modes[k]], Lr = LIDX(w, r, k), S = w->sumL[k];
            const double *u = m->factors[r * w->K + k].data;
            for (int64_t i = 0; i < I; i++)
                memcpy(w->U[k] + i * S + OFF(w, k, r), u + i * Lr, (size_t)Lr * sizeof(double));
        }
    }
}

static void store_model(const ws *w, gbtd_btd *m)
{
    for (int r = 0; r < w->R; r++) {
        memcpy(m->cores[r].data, w->G + w->coff[r],
               (size_t)(w->coff[r + 1] - w->coff[r]) * sizeof(double));
        for (int k = 0; k < w->K; k++) {
            const int64_t I = w->shape[w->modes[k]], Lr = LIDX(w, r, k), S = w->sumL[k];
            double *u = m->factors[r * w->K + k].data;
            for (int64_t i = 0; i < I; i++)
                memcpy(u + i * Lr, w->U[k] + i * S + OFF(w, k, r), (size_t)Lr * sizeof(double));
        }
    }
}

/* ---- building blocks ----------------------------------------------------------------------- */

/* Gram_k = Ucat_k^T Ucat_k (dsyrk, then the lower triangle mirrored). */
static void compute_gram(ws *w, int k)
{
    const int64_t I = w->shape[w->modes[k]], S = w->sumL[k];
    double *g = w->Gram[k];
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)S, (blasint)I, 1.0, w->U[k],
                (blasint)S, 0.0, g, (blasint)S);
    for (int64_t a = 0; a < S; a++)
        for (int64_t b = 0; b < a; b++) g[a * S + b] = g[b * S + a];
}

static void compute_grams(ws *w)
{
    for (int k = 0; k < w->K; k++) compute_gram(w, k);
}

/* P_r = X x_{k != j} U_{r,k}^T for every term r, into Pb (offsets poff). The first product is
 * one GEMM over all terms (Ucat_{k1}); the rest are per term on the reduced tensor. */
static void project_except(ws *w, int j)
{
    if (w->K == 1) return;
    const int N = w->N, k1 = w->k1[j], m1 = w->modes[k1];
    gbtd_btd_ttm_(w->x, N, w->shape, m1, w->U[k1], w->sumL[k1], w->sumL[k1], 1, 0.0, w->Y);
    int64_t sh[GBTD_MAX_MODES];
    memcpy(sh, w->shape, sizeof sh);
    sh[m1] = w->sumL[k1];
    int64_t P1, Q1;
    prod_around(sh, N, m1, &P1, &Q1);
    w->poff[0] = 0;
    for (int r = 0; r < w->R; r++) {
        int64_t shr[GBTD_MAX_MODES];
        memcpy(shr, w->shape, sizeof shr);
        shr[m1] = LIDX(w, r, k1);
        int64_t size = w->numel / w->shape[m1] * LIDX(w, r, k1);
        for (int k = 0; k < w->K; k++)
            if (k != j && k != k1) size = size / w->shape[w->modes[k]] * LIDX(w, r, k);
        w->poff[r + 1] = w->poff[r] + size;
        double *dst = w->Pb + w->poff[r];
        int left = w->K - 2; /* products after the slice */
        if (left == 0) {
            slice_get(w->Y, P1, w->sumL[k1], Q1, OFF(w, k1, r), LIDX(w, r, k1), dst);
            continue;
        }
        slice_get(w->Y, P1, w->sumL[k1], Q1, OFF(w, k1, r), LIDX(w, r, k1), w->t1);
        const double *src = w->t1;
        for (int k = 0; k < w->K; k++) {
            if (k == j || k == k1) continue;
            left--;
            double *out = left == 0 ? dst : (src == w->t1 ? w->t2 : w->t1);
            gbtd_btd_ttm_(src, N, shr, w->modes[k], w->U[k] + OFF(w, k, r), w->sumL[k],
                          LIDX(w, r, k), 1, 0.0, out);
            shr[w->modes[k]] = LIDX(w, r, k);
            src = out;
        }
    }
}

static const double *proj_term(const ws *w, int r) { return w->K == 1 ? w->x : w->Pb + w->poff[r]; }

/* Shape of P_r (projection of X on all factored modes but j). */
static void proj_shape(const ws *w, int r, int j, int64_t *sh)
{
    for (int n = 0; n < w->N; n++) sh[n] = w->shape[n];
    for (int k = 0; k < w->K; k++)
        if (k != j) sh[w->modes[k]] = LIDX(w, r, k);
}

/* dst = src x_{k in mask} Gram_k[r, s] (src has the s-ranks on those modes, any ranks
 * elsewhere given by sh; sh is updated to the result's shape). mask bit k. Uses tmp. */
static void apply_grams(const ws *w, const double *src, int64_t *sh, int r, int s, unsigned mask,
                        double *dst, double *tmp)
{
    int count = 0;
    for (int k = 0; k < w->K; k++) count += (mask >> k) & 1u;
    if (count == 0) {
        int64_t n = 1;
        for (int i = 0; i < w->N; i++) n *= sh[i];
        memcpy(dst, src, (size_t)n * sizeof(double));
        return;
    }
    /* Alternate so that the last product lands in dst. */
    double *bufs[2] = {(count % 2) ? dst : tmp, (count % 2) ? tmp : dst};
    int which = 0;
    const double *cur = src;
    for (int k = 0; k < w->K; k++) {
        if (!((mask >> k) & 1u)) continue;
        const int64_t S = w->sumL[k];
        double *out = bufs[which];
        gbtd_btd_ttm_(cur, w->N, sh, w->modes[k], w->Gram[k] + OFF(w, k, r) * S + OFF(w, k, s), S,
                      LIDX(w, r, k), 0, 0.0, out);
        sh[w->modes[k]] = LIDX(w, r, k);
        cur = out;
        which ^= 1;
    }
}

static void core_shape(const ws *w, int r, int64_t *sh)
{
    for (int n = 0; n < w->N; n++) sh[n] = w->cshape[r * w->N + n];
}

static void core_to_hat(const ws *w, const double *core, double *hat, int inverse);

/* H_j for two factored modes, all term pairs at once: with Y0 = Gh^T Gh (hat layout),
 * H_0[(r,a), (s,a')] = sum_{b,b'} Gram_1[(r,b), (s,b')] Y0[(r,a,b), (s,a',b')], and H_1 with
 * the roles of the modes exchanged. */
static void form_H_fast(ws *w, int j)
{
    const int64_t Pc = w->Pc, S0 = w->sumL[0], S1 = w->sumL[1];
    core_to_hat(w, w->G, w->Gh, 0);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)Pc, (blasint)Pc, (blasint)w->F,
                1.0, w->Gh, (blasint)Pc, w->Gh, (blasint)Pc, 0.0, w->Y0, (blasint)Pc);
    double *h = w->H[j];
    memset(h, 0, (size_t)(w->sumL[j] * w->sumL[j]) * sizeof(double));
    for (int r = 0; r < w->R; r++) {
        const int64_t ra = LIDX(w, r, 0), rb = LIDX(w, r, 1), o0r = OFF(w, 0, r), o1r = OFF(w, 1, r);
        for (int s = 0; s < w->R; s++) {
            const int64_t sa = LIDX(w, s, 0), sb = LIDX(w, s, 1), o0s = OFF(w, 0, s),
                          o1s = OFF(w, 1, s);
            for (int64_t a = 0; a < ra; a++)
                for (int64_t b = 0; b < rb; b++) {
                    const double *y0 = w->Y0 + (w->pcoff[r] + a * rb + b) * Pc + w->pcoff[s];
                    if (j == 0) {
                        const double *g1 = w->Gram[1] + (o1r + b) * S1 + o1s;
                        for (int64_t ap = 0; ap < sa; ap++) {
                            double acc = 0.0;
                            for (int64_t bp = 0; bp < sb; bp++) acc += g1[bp] * y0[ap * sb + bp];
                            h[(o0r + a) * S0 + o0s + ap] += acc;
                        }
                    } else {
                        const double *g0 = w->Gram[0] + (o0r + a) * S0 + o0s;
                        for (int64_t ap = 0; ap < sa; ap++)
                            for (int64_t bp = 0; bp < sb; bp++)
                                h[(o1r + b) * S1 + o1s + bp] += g0[ap] * y0[ap * sb + bp];
                    }
                }
        }
    }
}

/* M_j = X_(m_j) W and H_j = W^T W for factored mode j (from P_r of project_except(j)). */
static void form_MH(ws *w, int j)
{
    const int mj = w->modes[j];
    const int64_t S = w->sumL[j], I = w->shape[mj];
    for (int r = 0; r < w->R; r++) {
        int64_t sh[GBTD_MAX_MODES], P, Q;
        proj_shape(w, r, j, sh);
        prod_around(sh, w->N, mj, &P, &Q);
        gbtd_btd_contract_(proj_term(w, r), w->G + w->coff[r], P, I, LIDX(w, r, j), Q, 0.0,
                           w->M[j] + OFF(w, j, r), S);
    }
    if (w->fast_jtj) {
        form_H_fast(w, j);
        return;
    }
    const unsigned mask = ((1u << w->K) - 1u) & ~(1u << j);
    for (int r = 0; r < w->R; r++)
        for (int s = r; s < w->R; s++) {
            int64_t sh[GBTD_MAX_MODES], P, Q;
            core_shape(w, s, sh);
            apply_grams(w, w->G + w->coff[s], sh, r, s, mask, w->ct[0], w->ct[1]);
            prod_around(sh, w->N, mj, &P, &Q);
            double *blk = w->H[j] + OFF(w, j, r) * S + OFF(w, j, s);
            gbtd_btd_contract_(w->G + w->coff[r], w->ct[0], P, LIDX(w, r, j), LIDX(w, s, j), Q,
                               0.0, blk, S);
            if (s != r)
                for (int64_t a = 0; a < LIDX(w, r, j); a++)
                    for (int64_t b = 0; b < LIDX(w, s, j); b++)
                        w->H[j][(OFF(w, j, s) + b) * S + OFF(w, j, r) + a] = blk[a * S + b];
        }
}

/* Cholesky of an n x n SPD matrix a (copied from src), adding a growing ridge if needed. */
static int chol_ridge(const double *src, int64_t n, double *a)
{
    double maxd = 0.0;
    for (int64_t i = 0; i < n; i++) maxd = src[i * n + i] > maxd ? src[i * n + i] : maxd;
    if (!(maxd > 0.0)) maxd = 1.0;
    double ridge = 0.0;
    for (int attempt = 0; attempt < 8; attempt++) {
        memcpy(a, src, (size_t)(n * n) * sizeof(double));
        for (int64_t i = 0; i < n; i++) a[i * n + i] += ridge;
        if (LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', (lapack_int)n, a, (lapack_int)n) == 0)
            return GBTD_OK;
        ridge = ridge == 0.0 ? 1e-14 * maxd : ridge * 100.0;
    }
    return gbtd_error(GBTD_ENUMERIC, "btd: normal equations not positive definite");
}

/* ALS factor update: Ucat_j = M_j H_j^{-1}. */
static int solve_factor(ws *w, int j)
{
    const int64_t S = w->sumL[j], I = w->shape[w->modes[j]];
    GBTD_CHECK(chol_ridge(w->H[j], S, w->hsmall));
    /* M_j row-major (I x S) is M_j^T column-major: solve H X^T = M^T in place. */
    LAPACKE_dpotrs_work(LAPACK_COL_MAJOR, 'L', (lapack_int)S, (lapack_int)I, w->hsmall,
                        (lapack_int)S, w->M[j], (lapack_int)S);
    memcpy(w->U[j], w->M[j], (size_t)(I * S) * sizeof(double));
    return GBTD_OK;
}

/* B_r = X x_k U_{r,k}^T over all factored modes (needs project_except(K - 1) done). */
static void core_rhs(ws *w)
{
    const int j = w->K - 1, mj = w->modes[j];
    if (w->K == 1) {
        gbtd_btd_ttm_(w->x, w->N, w->shape, mj, w->U[0], w->sumL[0], w->sumL[0], 1, 0.0, w->Y);
        int64_t sh[GBTD_MAX_MODES], P, Q;
        memcpy(sh, w->shape, sizeof sh);
        prod_around(sh, w->N, mj, &P, &Q);
        for (int r = 0; r < w->R; r++)
            slice_get(w->Y, P, w->sumL[0], Q, OFF(w, 0, r), LIDX(w, r, 0), w->B + w->coff[r]);
        return;
    }
    for (int r = 0; r < w->R; r++) {
        int64_t sh[GBTD_MAX_MODES];
        proj_shape(w, r, j, sh);
        gbtd_btd_ttm_(proj_term(w, r), w->N, sh, mj, w->U[j] + OFF(w, j, r), w->sumL[j],
                      LIDX(w, r, j), 1, 0.0, w->B + w->coff[r]);
    }
}

/* out_r = sum_s in_s x_k Gram_k[r, s] (the core block of the normal equations), core layout. */
static void core_gram_apply(ws *w, const double *in, double *out)
{
    const unsigned all = (1u << w->K) - 1u;
    for (int r = 0; r < w->R; r++) {
        const int64_t n = w->coff[r + 1] - w->coff[r];
        double *o = out + w->coff[r];
        memset(o, 0, (size_t)n * sizeof(double));
        for (int s = 0; s < w->R; s++) {
            int64_t sh[GBTD_MAX_MODES];
            core_shape(w, s, sh);
            apply_grams(w, in + w->coff[s], sh, r, s, all, w->ct[0], w->ct[1]);
            for (int64_t i = 0; i < n; i++) o[i] += w->ct[0][i];
        }
    }
}

/* Core <-> "hat" layout: hat[f * Pc + pcoff[r] + a], a = factored multi-index, f = full one. */
static void core_to_hat(const ws *w, const double *core, double *hat, int inverse)
{
    for (int r = 0; r < w->R; r++) {
        int64_t sa[GBTD_MAX_MODES], sf[GBTD_MAX_MODES], idx[GBTD_MAX_MODES] = {0};
        int64_t sh[GBTD_MAX_MODES];
        core_shape(w, r, sh);
        int64_t a = 1, f = 1;
        for (int n = w->N - 1; n >= 0; n--) {
            if (w->kof[n] >= 0) {
                sa[n] = a;
                sf[n] = 0;
                a *= sh[n];
            } else {
                sf[n] = f;
                sa[n] = 0;
                f *= sh[n];
            }
        }
        const int64_t cnt = w->coff[r + 1] - w->coff[r];
        const double *c = core + w->coff[r];
        double *cw = (double *)(core + w->coff[r]);
        int64_t ia = 0, iff = 0;
        for (int64_t e = 0; e < cnt; e++) {
            const int64_t h = iff * w->Pc + w->pcoff[r] + ia;
            if (inverse)
                cw[e] = hat[h];
            else
                hat[h] = c[e];
            for (int n = w->N - 1; n >= 0; n--) {
                idx[n]++;
                ia += sa[n];
                iff += sf[n];
                if (idx[n] < sh[n]) break;
                ia -= sa[n] * sh[n];
                iff -= sf[n] * sh[n];
                idx[n] = 0;
            }
        }
    }
}

static void build_core_system(ws *w)
{
    const int K = w->K;
    const int64_t Pc = w->Pc;
    for (int r = 0; r < w->R; r++)
        for (int s = 0; s < w->R; s++) {
            const int64_t nr = w->pcoff[r + 1] - w->pcoff[r], ns = w->pcoff[s + 1] - w->pcoff[s];
            for (int64_t a = 0; a < nr; a++) {
                int64_t ai[GBTD_MAX_MODES], t = a;
                for (int k = K - 1; k >= 0; k--) {
                    ai[k] = t % LIDX(w, r, k);
                    t /= LIDX(w, r, k);
                }
                for (int64_t b = 0; b < ns; b++) {
                    int64_t u = b;
                    double v = 1.0;
                    for (int k = K - 1; k >= 0; k--) {
                        const int64_t bk = u % LIDX(w, s, k);
                        u /= LIDX(w, s, k);
                        v *= w->Gram[k][(OFF(w, k, r) + ai[k]) * w->sumL[k] + OFF(w, k, s) + bk];
                    }
                    w->Hc[(w->pcoff[r] + a) * Pc + w->pcoff[s] + b] = v;
                }
            }
        }
}

/* Plain CG on the core normal equations (matrix-free), starting from the current cores. */
static void core_cg(ws *w, int maxit, double tol)
{
    const int64_t n = w->Gsize;
    double *x = w->G, *r = w->cr, *p = w->cp, *q = w->cq;
    core_gram_apply(w, x, q);
    for (int64_t i = 0; i < n; i++) r[i] = w->B[i] - q[i];
    memcpy(p, r, (size_t)n * sizeof(double));
    double rr = dot(r, r, n);
    const double bn = sqrt(dot(w->B, w->B, n));
    for (int it = 0; it < maxit && sqrt(rr) > tol * bn; it++) {
        core_gram_apply(w, p, q);
        const double pq = dot(p, q, n);
        if (!(pq > 0.0)) break;
        const double alpha = rr / pq;
        for (int64_t i = 0; i < n; i++) {
            x[i] += alpha * p[i];
            r[i] -= alpha * q[i];
        }
        const double rr2 = dot(r, r, n);
        const double beta = rr2 / rr;
        rr = rr2;
        for (int64_t i = 0; i < n; i++) p[i] = r[i] + beta * p[i];
    }
}

/* All cores by least squares given the factors (Gram up to date, B formed). Returns the squared
 * residual from the identity ||X||^2 - 2 <B, G> + <G, Hc G>. */
static int core_solve(ws *w, double *err2)
{
    if (w->dense_core) {
        build_core_system(w);
        GBTD_CHECK(chol_ridge(w->Hc, w->Pc, w->Hf));
        core_to_hat(w, w->B, w->Bh, 0);
        memcpy(w->Gh, w->Bh, (size_t)w->Gsize * sizeof(double));
        LAPACKE_dpotrs_work(LAPACK_COL_MAJOR, 'L', (lapack_int)w->Pc, (lapack_int)w->F, w->Hf,
                            (lapack_int)w->Pc, w->Gh, (lapack_int)w->Pc);
        core_to_hat(w, w->G, w->Gh, 1);
        /* <G, Hc G> in the hat layout: Th = Gh Hc (Hc symmetric). */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)w->F, (blasint)w->Pc,
                    (blasint)w->Pc, 1.0, w->Gh, (blasint)w->Pc, w->Hc, (blasint)w->Pc, 0.0, w->Th,
                    (blasint)w->Pc);
        const double gb = dot(w->Gh, w->Bh, w->Gsize), ghg = dot(w->Gh, w->Th, w->Gsize);
        *err2 = w->xn2 - 2.0 * gb + ghg;
        return GBTD_OK;
    }
    core_cg(w, 200, 1e-12);
    core_gram_apply(w, w->G, w->Y); /* Y (>= Gsize) is free here */
    const double gb = dot(w->G, w->B, w->Gsize), ghg = dot(w->G, w->Y, w->Gsize);
    *err2 = w->xn2 - 2.0 * gb + ghg;
    return GBTD_OK;
}

/* QR of each term's factors, R absorbed into the core (the model is unchanged). */
static int normalize_mode(ws *w, int k)
{
    for (int r = 0; r < w->R; r++) {
        const int64_t I = w->shape[w->modes[k]], Lr = LIDX(w, r, k), S = w->sumL[k];
        double *u = w->U[k] + OFF(w, k, r);
        for (int64_t i = 0; i < I; i++)
            for (int64_t l = 0; l < Lr; l++) w->qr[i + I * l] = u[i * S + l];
        if (LAPACKE_dgeqrf_work(LAPACK_COL_MAJOR, (lapack_int)I, (lapack_int)Lr, w->qr,
                                (lapack_int)I, w->tau, w->qrwork,
                                (lapack_int)w->qrlwork) != 0)
            return gbtd_error(GBTD_ENUMERIC, "btd: QR failed");
        for (int64_t a = 0; a < Lr; a++)
            for (int64_t b = 0; b < Lr; b++) w->rmat[a * Lr + b] = b >= a ? w->qr[a + I * b] : 0.0;
        if (LAPACKE_dorgqr_work(LAPACK_COL_MAJOR, (lapack_int)I, (lapack_int)Lr, (lapack_int)Lr,
                                w->qr, (lapack_int)I, w->tau, w->qrwork,
                                (lapack_int)w->qrlwork) != 0)
            return gbtd_error(GBTD_ENUMERIC, "btd: QR failed");
        for (int64_t i = 0; i < I; i++)
            for (int64_t l = 0; l < Lr; l++) u[i * S + l] = w->qr[i + I * l];
        int64_t sh[GBTD_MAX_MODES];
        core_shape(w, r, sh);
        const int64_t n = w->coff[r + 1] - w->coff[r];
        gbtd_btd_ttm_(w->G + w->coff[r], w->N, sh, w->modes[k], w->rmat, Lr, Lr, 0, 0.0,
                      w->ct[0]);
        memcpy(w->G + w->coff[r], w->ct[0], (size_t)n * sizeof(double));
    }
    return GBTD_OK;
}

static int normalize(ws *w)
{
    for (int k = 0; k < w->K; k++) GBTD_CHECK(normalize_mode(w, k));
    return GBTD_OK;
}

/* Explicit squared residual ||X - model||^2: terms expanded on all factored modes but the last,
 * stacked along the last one, then one GEMM with Ucat_{K-1}. */
static double explicit_err2(ws *w)
{
    const int N = w->N, kl = w->K - 1, ml = w->modes[kl];
    int64_t zsh[GBTD_MAX_MODES];
    memcpy(zsh, w->shape, sizeof zsh);
    zsh[ml] = w->sumL[kl];
    int64_t P, Q;
    prod_around(zsh, N, ml, &P, &Q);
    for (int r = 0; r < w->R; r++) {
        int64_t sh[GBTD_MAX_MODES];
        core_shape(w, r, sh);
        const double *src = w->G + w->coff[r];
        for (int k = 0; k < kl; k++) {
            double *out = src == w->t1 ? w->t2 : w->t1;
            gbtd_btd_ttm_(src, N, sh, w->modes[k], w->U[k] + OFF(w, k, r), w->sumL[k],
                          w->shape[w->modes[k]], 0, 0.0, out);
            sh[w->modes[k]] = w->shape[w->modes[k]];
            src = out;
        }
        slice_put(src, P, w->sumL[kl], Q, OFF(w, kl, r), LIDX(w, r, kl), w->Y);
    }
    gbtd_btd_ttm_(w->Y, N, zsh, ml, w->U[kl], w->sumL[kl], w->shape[ml], 0, 0.0, w->rec);
    double s = 0.0;
    for (int64_t i = 0; i < w->numel; i++) {
        const double d = w->x[i] - w->rec[i];
        s += d * d;
    }
    return s;
}

static double rel_from_err2(const ws *w, double err2)
{
    return sqrt((err2 > 0.0 ? err2 : 0.0) / w->xn2);
}

/* Relative error, explicit when the identity is too close to cancellation to be trusted. */
static double current_error(ws *w, double err2_identity)
{
    const double e = rel_from_err2(w, err2_identity);
    if (e < 1e-5) return rel_from_err2(w, explicit_err2(w));
    return e;
}

/* Cores by least squares for the current factors (factors orthonormalised first). */
static int fit_cores(ws *w, double *rel)
{
    GBTD_CHECK(normalize(w));
    compute_grams(w);
    project_except(w, w->K - 1);
    core_rhs(w);
    double e2;
    GBTD_CHECK(core_solve(w, &e2));
    *rel = current_error(w, e2);
    return GBTD_OK;
}

/* ---- Gauss-Newton pieces ------------------------------------------------------------------- */

/* Gradient of 1/2 ||model - X||^2 at the current state, and everything J^T J needs (Gram_k,
 * H_k). g_U_k = Ucat_k H_k - M_k; g_G = (core normal matrix) G - B. */
/* Gradient, H_k, the core system and (fast path) Y0 at the current state. With from1 set,
 * the Gramians, project_except(0) and form_MH(0) are taken as already done for this state
 * (by nls_trial_err2 on the accepted trial point). */
static void nls_evaluate_from(ws *w, int from1)
{
    if (!from1 || w->K == 1) compute_grams(w);
    for (int j = (from1 && w->K > 1) ? 1 : 0; j < w->K; j++) {
        project_except(w, j);
        form_MH(w, j);
    }
    core_rhs(w);
    for (int k = 0; k < w->K; k++) {
        const int64_t I = w->shape[w->modes[k]], S = w->sumL[k];
        double *gk = w->g + w->uoff[k];
        for (int64_t i = 0; i < I * S; i++) gk[i] = -w->M[k][i];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)I, (blasint)S, (blasint)S,
                    1.0, w->U[k], (blasint)S, w->H[k], (blasint)S, 1.0, gk, (blasint)S);
    }
    double *gG = w->g + w->uoff[w->K];
    core_gram_apply(w, w->G, gG);
    for (int64_t i = 0; i < w->Gsize; i++) gG[i] -= w->B[i];
    if (w->fast_jtj) {
        /* Hc (Kronecker blocks of the Gramians) and Y0 = Gh^T Gh for the batched J^T J. */
        const int64_t Pc = w->Pc;
        build_core_system(w);
        core_to_hat(w, w->G, w->Gh, 0);
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)Pc, (blasint)Pc,
                    (blasint)w->F, 1.0, w->Gh, (blasint)Pc, w->Gh, (blasint)Pc, 0.0, w->Y0,
                    (blasint)Pc);
    }
}

static void nls_evaluate(ws *w) { nls_evaluate_from(w, 0); }

/* What a trial-point evaluation overwrites and the CG at the current point still needs: the
 * Gramians, H_0 and (fast path) Y0 and Gh. Saved before a trial, restored on rejection. */
static void nls_backup(ws *w, int restore)
{
    double *b = w->bk;
    for (int k = 0; k <= w->K; k++) {
        double *m = k < w->K ? w->Gram[k] : w->H[0];
        const int64_t n = (k < w->K ? w->sumL[k] : w->sumL[0]) * (k < w->K ? w->sumL[k] : w->sumL[0]);
        memcpy(restore ? m : b, restore ? b : m, (size_t)n * sizeof(double));
        b += n;
    }
    if (w->fast_jtj) {
        const int64_t n = w->Pc * w->Pc;
        memcpy(restore ? w->Y0 : b, restore ? b : w->Y0, (size_t)n * sizeof(double));
        b += n;
        memcpy(restore ? w->Gh : b, restore ? b : w->Gh, (size_t)w->Gsize * sizeof(double));
    }
}

/* Squared residual at the current (normalised) state. From the identity
 *   ||X - T||^2 = ||X||^2 - 2 <Ucat_0, M_0> + <Gram_0, H_0>
 * (T_(m_0) = Ucat_0 W_0^T, M_0 = X_(m_0) W_0, H_0 = W_0^T W_0), which needs the Gramians,
 * project_except(0) and form_MH(0): the first half of nls_evaluate, which an accepted point
 * then skips, so the trial costs no GEMM of its own. The identity is trusted only where its
 * rounding, estimated as 1e3 eps (||X||^2 + 2 |<X, T>| + ||T||^2), moves the relative error
 * by less than 1e-8 of itself and by less than a tenth of the stopping tolerance `tol` (when
 * tol > 0), so that neither the step acceptance nor the stopping test reads rounding noise;
 * otherwise the residual is formed explicitly. */
static double nls_trial_err2(ws *w, double tol)
{
    compute_grams(w);
    if (w->K > 1) project_except(w, 0);
    form_MH(w, 0);
    const int64_t n = w->shape[w->modes[0]] * w->sumL[0], S = w->sumL[0];
    const double xt = dot(w->U[0], w->M[0], n), tt = dot(w->Gram[0], w->H[0], S * S);
    const double err2 = w->xn2 - 2.0 * xt + tt;
    const double noise = 1e3 * DBL_EPSILON * (w->xn2 + 2.0 * fabs(xt) + fabs(tt));
    double limit = 1e-8;
    if (tol > 0.0 && 0.1 * tol < limit) limit = 0.1 * tol;
    /* relative change of e = sqrt(err2 / xn2) caused by noise: noise / (2 err2) */
    if (err2 > 0.0 && noise <= 2.0 * limit * err2) return err2;
    return explicit_err2(w);
}

/* The core and Q1 parts of J^T J v for two factored modes, batched over all term pairs. In the
 * "hat" layout (F x Pc, column (r, a, b)), with Y1 = Gh^T dGh and Y0 = Gh^T Gh:
 *   Q1_0[(s,a'), (r,a)] = sum_{b,b'} Gram_1 Y1 + D_1 Y0,  Q1_1[(s,b'), (r,b)] = sum_{a,a'} Gram_0 Y1
 *   + D_0 Y0 (Gram_k, D_k taken at [(r, .), (s, .')], Y at [(r,a,b), (s,a',b')]),
 *   oGh = dGh Hc^T + Gh E^T, E[(r,a,b), (s,a',b')] = D_0 Gram_1 + Gram_0 D_1.
 * Same result as the pairwise loop in jtj_apply, O(Pc^2 (F + L)) work in a few GEMMs. */
static void jtj_core_fast(ws *w, const double *dG, double *oG)
{
    const int64_t Pc = w->Pc, S0 = w->sumL[0], S1 = w->sumL[1];
    core_to_hat(w, dG, w->Vh, 0);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)Pc, (blasint)Pc, (blasint)w->F,
                1.0, w->Gh, (blasint)Pc, w->Vh, (blasint)Pc, 0.0, w->Y1, (blasint)Pc);
    const double *g0 = w->Gram[0], *g1 = w->Gram[1], *d0 = w->D[0], *d1 = w->D[1];
    double *q0 = w->Q1[0], *q1 = w->Q1[1];
    /* Per term pair, the Q1 blocks are summed in small local arrays (q0l[a][a'], q1l[b][b'])
     * and added to Q1 once: the blocks of Q1_1 are written transposed, which accumulated in
     * place would touch a new cache line for every term of the inner sum. */
    double *q0l = w->qloc, *q1l = w->qloc + w->maxL * w->maxL;
    for (int r = 0; r < w->R; r++) {
        const int64_t ra = LIDX(w, r, 0), rb = LIDX(w, r, 1), o0r = OFF(w, 0, r), o1r = OFF(w, 1, r);
        for (int s = 0; s < w->R; s++) {
            const int64_t sa = LIDX(w, s, 0), sb = LIDX(w, s, 1), o0s = OFF(w, 0, s),
                          o1s = OFF(w, 1, s);
            memset(q0l, 0, (size_t)(ra * sa) * sizeof(double));
            memset(q1l, 0, (size_t)(rb * sb) * sizeof(double));
            for (int64_t a = 0; a < ra; a++)
                for (int64_t b = 0; b < rb; b++) {
                    const int64_t i = w->pcoff[r] + a * rb + b;
                    const double *y1 = w->Y1 + i * Pc + w->pcoff[s], *y0 = w->Y0 + i * Pc + w->pcoff[s];
                    double *e = w->E + i * Pc + w->pcoff[s];
                    const double *g0r = g0 + (o0r + a) * S0 + o0s, *d0r = d0 + (o0r + a) * S0 + o0s;
                    const double *g1r = g1 + (o1r + b) * S1 + o1s, *d1r = d1 + (o1r + b) * S1 + o1s;
                    double *q1b = q1l + b * sb;
                    for (int64_t ap = 0; ap < sa; ap++) {
                        const double g0a = g0r[ap], d0a = d0r[ap];
                        const double *y1a = y1 + ap * sb, *y0a = y0 + ap * sb;
                        double *ea = e + ap * sb;
                        double acc0 = 0.0;
                        for (int64_t bp = 0; bp < sb; bp++) {
                            acc0 += g1r[bp] * y1a[bp] + d1r[bp] * y0a[bp];
                            q1b[bp] += g0a * y1a[bp] + d0a * y0a[bp];
                            ea[bp] = d0a * g1r[bp] + g0a * d1r[bp];
                        }
                        q0l[a * sa + ap] += acc0;
                    }
                }
            for (int64_t a = 0; a < ra; a++)
                for (int64_t ap = 0; ap < sa; ap++) q0[(o0s + ap) * S0 + o0r + a] += q0l[a * sa + ap];
            for (int64_t b = 0; b < rb; b++)
                for (int64_t bp = 0; bp < sb; bp++) q1[(o1s + bp) * S1 + o1r + b] += q1l[b * sb + bp];
        }
    }
    /* oGh = dGh Hc^T + Gh E^T (Hc symmetric). */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)w->F, (blasint)Pc, (blasint)Pc,
                1.0, w->Vh, (blasint)Pc, w->Hc, (blasint)Pc, 0.0, w->Oh, (blasint)Pc);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)w->F, (blasint)Pc, (blasint)Pc,
                1.0, w->Gh, (blasint)Pc, w->E, (blasint)Pc, 1.0, w->Oh, (blasint)Pc);
    core_to_hat(w, oG, w->Oh, 1);
}

/* o = (J^T J + lambda I) v, from factor Gramians and core contractions only. */
static void jtj_apply(ws *w, const double *v, double lambda, double *o)
{
    const int K = w->K, R = w->R, N = w->N;
    const unsigned all = (1u << K) - 1u;
    for (int k = 0; k < K; k++) {
        const int64_t I = w->shape[w->modes[k]], S = w->sumL[k];
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)S, (blasint)S, (blasint)I,
                    1.0, w->U[k], (blasint)S, v + w->uoff[k], (blasint)S, 0.0, w->D[k],
                    (blasint)S);
        memset(w->Q1[k], 0, (size_t)(S * S) * sizeof(double));
    }
    const double *dG = v + w->uoff[K];
    double *oG = o + w->uoff[K];
    memset(oG, 0, (size_t)w->Gsize * sizeof(double));
    double *acc = w->ct[K + 2], *tmp = w->ct[K + 3];
    if (w->fast_jtj) jtj_core_fast(w, dG, oG);
    for (int r = 0; r < R && !w->fast_jtj; r++)
        for (int s = 0; s < R; s++) {
            int64_t shs[GBTD_MAX_MODES], shT[GBTD_MAX_MODES][GBTD_MAX_MODES];
            core_shape(w, s, shs);
            for (int j = 0; j < K; j++) {
                memcpy(shT[j], shs, sizeof shs);
                const int64_t S = w->sumL[j];
                gbtd_btd_ttm_(w->G + w->coff[s], N, shs, w->modes[j],
                              w->D[j] + OFF(w, j, r) * S + OFF(w, j, s), S, LIDX(w, r, j), 0, 0.0,
                              w->ct[2 + j]);
                shT[j][w->modes[j]] = LIDX(w, r, j);
            }
            for (int n = 0; n < K; n++) {
                int64_t sh[GBTD_MAX_MODES];
                memcpy(sh, shs, sizeof sh);
                apply_grams(w, dG + w->coff[s], sh, r, s, all & ~(1u << n), acc, tmp);
                int64_t cnt = 1;
                for (int i = 0; i < N; i++) cnt *= sh[i];
                for (int j = 0; j < K; j++) {
                    if (j == n) continue;
                    int64_t sh2[GBTD_MAX_MODES];
                    memcpy(sh2, shT[j], sizeof sh2);
                    apply_grams(w, w->ct[2 + j], sh2, r, s, all & ~(1u << n) & ~(1u << j),
                                w->ct[0], w->ct[1]);
                    for (int64_t i = 0; i < cnt; i++) acc[i] += w->ct[0][i];
                }
                const int mn = w->modes[n];
                const int64_t S = w->sumL[n];
                int64_t P, Q;
                prod_around(sh, N, mn, &P, &Q);
                gbtd_btd_contract_(acc, w->G + w->coff[r], P, LIDX(w, s, n), LIDX(w, r, n), Q, 1.0,
                                   w->Q1[n] + OFF(w, n, s) * S + OFF(w, n, r), S);
                if (n == 0) {
                    const int64_t nr = w->coff[r + 1] - w->coff[r];
                    gbtd_btd_ttm_(acc, N, sh, mn, w->Gram[0] + OFF(w, 0, r) * S + OFF(w, 0, s), S,
                                  LIDX(w, r, 0), 0, 0.0, tmp);
                    for (int64_t i = 0; i < nr; i++) oG[w->coff[r] + i] += tmp[i];
                    int64_t sh3[GBTD_MAX_MODES];
                    memcpy(sh3, shT[0], sizeof sh3);
                    apply_grams(w, w->ct[2], sh3, r, s, all & ~1u, w->ct[0], w->ct[1]);
                    for (int64_t i = 0; i < nr; i++) oG[w->coff[r] + i] += w->ct[0][i];
                }
            }
        }
    for (int k = 0; k < K; k++) {
        const int64_t I = w->shape[w->modes[k]], S = w->sumL[k];
        double *ok = o + w->uoff[k];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)I, (blasint)S, (blasint)S,
                    1.0, w->U[k], (blasint)S, w->Q1[k], (blasint)S, 0.0, ok, (blasint)S);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)I, (blasint)S, (blasint)S,
                    1.0, v + w->uoff[k], (blasint)S, w->H[k], (blasint)S, 1.0, ok, (blasint)S);
    }
    if (lambda != 0.0)
        for (int64_t i = 0; i < w->nz; i++) o[i] += lambda * v[i];
}

/* Block-Jacobi preconditioner: factor block (r, k) by (H_k[r, r] + lambda I)^{-1}; core blocks
 * by 1 / (1 + lambda) (their diagonal block is I for orthonormal factors). The L x L inverses
 * are formed once per CG solve (Cholesky, then its inverse) and applied to each row of the
 * I x L block as a small matrix-vector product: LAPACK's triangular solves on an L x I
 * right-hand side of stride sum L cost more in call overhead than in arithmetic for L ~ 4. */
static int precond_setup(ws *w, double lambda)
{
    const int64_t L2 = w->maxL * w->maxL;
    for (int k = 0; k < w->K; k++)
        for (int r = 0; r < w->R; r++) {
            const int64_t Lr = LIDX(w, r, k), S = w->sumL[k];
            double *c = w->pchol + ((int64_t)k * w->R + r) * L2;
            for (int64_t a = 0; a < Lr; a++)
                for (int64_t b = 0; b < Lr; b++)
                    c[a * Lr + b] = w->H[k][(OFF(w, k, r) + a) * S + OFF(w, k, r) + b] +
                                    (a == b ? lambda : 0.0);
            int bad = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', (lapack_int)Lr, c,
                                          (lapack_int)Lr) != 0;
            if (!bad)
                bad = LAPACKE_dpotri_work(LAPACK_COL_MAJOR, 'L', (lapack_int)Lr, c,
                                          (lapack_int)Lr) != 0;
            if (bad) {
                /* Not positive definite (a degenerate term): fall back to identity scaling. */
                for (int64_t a = 0; a < Lr * Lr; a++) c[a] = 0.0;
                for (int64_t a = 0; a < Lr; a++) c[a * Lr + a] = 1.0;
            }
            /* dpotri leaves the lower triangle (column-major); mirror it to a full matrix. */
            for (int64_t a = 0; a < Lr; a++)
                for (int64_t b = a + 1; b < Lr; b++) c[b * Lr + a] = c[a * Lr + b];
        }
    return GBTD_OK;
}

static void precond_apply(ws *w, double lambda, const double *in, double *out)
{
    const int64_t L2 = w->maxL * w->maxL;
    for (int k = 0; k < w->K; k++) {
        const int64_t I = w->shape[w->modes[k]], S = w->sumL[k];
        const double *ik = in + w->uoff[k];
        double *ok = out + w->uoff[k];
        for (int r = 0; r < w->R; r++) {
            const int64_t Lr = LIDX(w, r, k), o = OFF(w, k, r);
            const double *c = w->pchol + ((int64_t)k * w->R + r) * L2; /* symmetric */
            for (int64_t i = 0; i < I; i++) {
                const double *x = ik + i * S + o;
                double *y = ok + i * S + o;
                for (int64_t a = 0; a < Lr; a++) {
                    double acc = 0.0;
                    for (int64_t b = 0; b < Lr; b++) acc += c[a * Lr + b] * x[b];
                    y[a] = acc;
                }
            }
        }
    }
    const double *iG = in + w->uoff[w->K];
    double *oG = out + w->uoff[w->K];
    const double sc = 1.0 / (1.0 + lambda);
    for (int64_t i = 0; i < w->Gsize; i++) oG[i] = iG[i] * sc;
}

/* Inexact solve of (J^T J + lambda I) p = -g by PCG; p in w->cx. */
static void nls_cg(ws *w, double lambda, int maxit, double tol)
{
    const int64_t n = w->nz;
    double *x = w->cx, *r = w->cr, *z = w->cz, *p = w->cp, *q = w->cq;
    precond_setup(w, lambda);
    memset(x, 0, (size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) r[i] = -w->g[i];
    const double r0 = sqrt(dot(r, r, n));
    precond_apply(w, lambda, r, z);
    memcpy(p, z, (size_t)n * sizeof(double));
    double rz = dot(r, z, n);
    for (int it = 0; it < maxit; it++) {
        jtj_apply(w, p, lambda, q);
        const double pq = dot(p, q, n);
        if (!(pq > 0.0)) break;
        const double alpha = rz / pq;
        for (int64_t i = 0; i < n; i++) {
            x[i] += alpha * p[i];
            r[i] -= alpha * q[i];
        }
        if (sqrt(dot(r, r, n)) <= tol * r0) break;
        precond_apply(w, lambda, r, z);
        const double rz2 = dot(r, z, n);
        const double beta = rz2 / rz;
        rz = rz2;
        for (int64_t i = 0; i < n; i++) p[i] = z[i] + beta * p[i];
    }
}

/* ---- initialisation ------------------------------------------------------------------------ */

static void random_factors(ws *w, gbtd_rng *rng)
{
    for (int64_t i = 0; i < w->uoff[w->K]; i++) w->z[i] = gbtd_rng_normal(rng);
    set_state(w, w->z);
}

/* Leading `count` left singular vectors of the mode-`mode` unfolding of x (contiguous, shape
 * sh), from the eigenvectors of the Gram matrix (upper triangle by SYRK; only the `count`
 * wanted eigenvectors computed, gbtd_sym_eig_top), into out (I x count, leading dimension
 * ldo). */
static int leading_vectors(const double *x, int N, const int64_t *sh, int mode, int64_t count,
                           double *out, int64_t ldo)
{
    const int64_t I = sh[mode];
    if (count < 1) return GBTD_OK;
    int64_t P, Q;
    prod_around(sh, N, mode, &P, &Q);
    double *gm = gbtd_malloc((size_t)(I * I) * sizeof(double));
    if (gm == NULL) return GBTD_ENOMEM;
    if (Q == 1)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)I, (blasint)P, 1.0, x,
                    (blasint)I, 0.0, gm, (blasint)I);
    else
        for (int64_t p = 0; p < P; p++)
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (blasint)I, (blasint)Q, 1.0,
                        x + p * I * Q, (blasint)Q, p ? 1.0 : 0.0, gm, (blasint)I);
    const int rc = gbtd_sym_eig_top(gm, I, count < I ? count : I, NULL, out, ldo);
    gbtd_free(gm);
    if (rc != GBTD_OK) return gbtd_error(rc, "btd: eigensolver failed in the start");
    return GBTD_OK;
}

/* Leading left singular vectors of the unfoldings, dealt out over the terms in order; columns
 * beyond the size of the mode stay random. */
static int hosvd_factors(ws *w, gbtd_rng *rng)
{
    random_factors(w, rng);
    for (int k = 0; k < w->K; k++) {
        const int64_t S = w->sumL[k], I = w->shape[w->modes[k]];
        GBTD_CHECK(leading_vectors(w->x, w->N, w->shape, w->modes[k], S < I ? S : I, w->U[k], S));
    }
    return GBTD_OK;
}

typedef struct gevd_pair {
    double aff;
    int i, j;
} gevd_pair;

static int cmp_pair(const void *a, const void *b)
{
    const double x = ((const gevd_pair *)a)->aff, y = ((const gevd_pair *)b)->aff;
    return x < y ? 1 : (x > y ? -1 : 0);
}

static int uf_find(int *parent, int i)
{
    while (parent[i] != i) i = parent[i] = parent[parent[i]];
    return i;
}

/* Orthonormal basis (S x L, leading dimension ldo) of the leading L left singular vectors of
 * the S x n row-major matrix m (destroyed). */
static int left_basis(double *m, int64_t S, int64_t n, int64_t L, double *out, int64_t ldo)
{
    const int64_t mn = S < n ? S : n;
    double *sv = gbtd_malloc((size_t)mn * sizeof(double));
    double *u = gbtd_malloc((size_t)(S * mn) * sizeof(double));
    double *sup = gbtd_malloc((size_t)mn * sizeof(double));
    int rc = GBTD_OK;
    if (!sv || !u || !sup) rc = GBTD_ENOMEM;
    else if (LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'S', 'N', (lapack_int)S, (lapack_int)n, m,
                            (lapack_int)n, sv, u, (lapack_int)mn, NULL, 1, sup) != 0)
        rc = gbtd_error(GBTD_ENUMERIC, "btd: SVD failed in the GEVD start");
    else
        for (int64_t i = 0; i < S; i++)
            for (int64_t l = 0; l < L; l++) out[i * ldo + l] = l < mn ? u[i * mn + l] : 0.0;
    gbtd_free(sv);
    gbtd_free(u);
    gbtd_free(sup);
    return rc;
}

/* Block grouping through the commutant, robust to noise. For an exact BTD the matrices
 * N_q = t_q t_1^{-1} are all A diag(D_{q,r}) A^{-1} with irreducible L x L blocks, so the
 * matrices X with X N_q = N_q X are A diag(c_r I_L) A^{-1}: an R-dimensional space. A random
 * element of it has the R block subspaces as eigenspaces with well separated eigenvalues c_r
 * (unlike the pencil, whose eigenvalues from different blocks may nearly coincide). The space
 * is the null space of sum_q T_q^T T_q, T_q(X) = X N_q - N_q X (an S^2 x S^2 matrix, hence
 * only for small S). On return V holds the eigenvectors of X and aff[i * S + j] = -|l_i - l_j|.
 * *ok = 0 if a LAPACK call failed. */
static int commutant_groups(int64_t S, int R, const double *nm, int nq, gbtd_rng *rng,
                            _Complex double *V, double *aff, int *ok)
{
    *ok = 0;
    const int64_t S2 = S * S;
    double *T = gbtd_malloc((size_t)(S2 * S2) * sizeof(double));
    double *G = gbtd_calloc((size_t)(S2 * S2), sizeof(double));
    double *ev = gbtd_malloc((size_t)S2 * sizeof(double));
    double *X = gbtd_calloc((size_t)S2, sizeof(double));
    double *wr = gbtd_malloc((size_t)S * sizeof(double)), *wi = gbtd_malloc((size_t)S * sizeof(double));
    double *vr = gbtd_malloc((size_t)S2 * sizeof(double));
    int rc = GBTD_OK;
    if (!T || !G || !ev || !X || !wr || !wi || !vr) {
        rc = GBTD_ENOMEM;
        goto done;
    }
    for (int q = 0; q < nq; q++) {
        const double *n_ = nm + q * S2;
        /* T[(i, j), (k, l)] = delta_ik N[l, j] - N[i, k] delta_lj, normalised by ||N||. */
        double nn = sqrt(dot(n_, n_, S2));
        if (!(nn > 0.0)) nn = 1.0;
        memset(T, 0, (size_t)(S2 * S2) * sizeof(double));
        for (int64_t i = 0; i < S; i++)
            for (int64_t j = 0; j < S; j++) {
                double *row = T + (i * S + j) * S2;
                for (int64_t l = 0; l < S; l++) row[i * S + l] += n_[l * S + j] / nn;
                for (int64_t k = 0; k < S; k++) row[k * S + j] -= n_[i * S + k] / nn;
            }
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)S2, (blasint)S2, (blasint)S2,
                    1.0, T, (blasint)S2, T, (blasint)S2, 1.0, G, (blasint)S2);
    }
    if (LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)S2, G, (lapack_int)S2, ev) != 0)
        goto done;
    /* Random element of the null space (the R smallest eigenvalues). */
    for (int r = 0; r < R; r++) {
        const double c = gbtd_rng_normal(rng);
        for (int64_t e = 0; e < S2; e++) X[e] += c * G[e * S2 + r];
    }
    if (LAPACKE_dgeev(LAPACK_ROW_MAJOR, 'N', 'V', (lapack_int)S, X, (lapack_int)S, wr, wi, NULL, 1,
                      vr, (lapack_int)S) != 0)
        goto done;
    for (int64_t j = 0; j < S; j++) {
        if (wi[j] != 0.0 && j + 1 < S) {
            for (int64_t i = 0; i < S; i++) {
                const double re = vr[i * S + j], im = vr[i * S + j + 1];
                V[i * S + j] = re + im * _Complex_I;
                V[i * S + j + 1] = re - im * _Complex_I;
            }
            j++;
        } else {
            for (int64_t i = 0; i < S; i++) V[i * S + j] = vr[i * S + j];
        }
    }
    for (int64_t i = 0; i < S; i++)
        for (int64_t j = 0; j < S; j++) aff[i * S + j] = -hypot(wr[i] - wr[j], wi[i] - wi[j]);
    *ok = 1;
done:
    gbtd_free(T);
    gbtd_free(G);
    gbtd_free(ev);
    gbtd_free(X);
    gbtd_free(wr);
    gbtd_free(wi);
    gbtd_free(vr);
    return rc;
}

#define BTD_COMMUTANT_LIMIT 32

/* Algebraic start (see btd.h). *applied = 0 when the layout does not allow it or the eigen-
 * vectors could not be grouped into terms; the factors are then left untouched. */
static int gevd_factors(ws *w, gbtd_rng *rng, int *applied)
{
    *applied = 0;
    int a = -1, b = -1;
    for (int p = 0; p < w->K && a < 0; p++)
        for (int q = p + 1; q < w->K && a < 0; q++) {
            int eq = w->sumL[p] <= w->shape[w->modes[p]] && w->sumL[q] <= w->shape[w->modes[q]];
            for (int r = 0; eq && r < w->R; r++) eq = LIDX(w, r, p) == LIDX(w, r, q);
            const int64_t rest = w->numel / w->shape[w->modes[p]] / w->shape[w->modes[q]];
            if (eq && rest >= 2) {
                a = p;
                b = q;
            }
        }
    if (a < 0) return GBTD_OK;
    const int N = w->N, ma = w->modes[a], mb = w->modes[b], R = w->R;
    const int64_t S = w->sumL[a], Ia = w->shape[ma], Ib = w->shape[mb];
    const int64_t rest = w->numel / Ia / Ib, S2 = S * S;
    const int NC = 4; /* slice combinations: t[0] t[1]^{-1} is the pencil, t[2], t[3] group */
    int rc = GBTD_OK;
    double *ua = NULL, *ub = NULL, *c1 = NULL, *cc = NULL, *t = NULL, *wts = NULL, *lu = NULL;
    double *nm = NULL, *wr = NULL, *wi = NULL, *vr = NULL, *ablk = NULL, *bblk = NULL, *tmp = NULL;
    double *blk = NULL, *vec = NULL;
    lapack_int *ipiv = NULL;
    _Complex double *V = NULL, *NV = NULL, *Vc = NULL;
    double *aff = NULL;
    gevd_pair *pairs = NULL;
    int *parent = NULL, *size = NULL, *cluster_of = NULL, *term_cluster = NULL;
#define GALLOC(p, n) ((p) = gbtd_malloc((size_t)(n) * sizeof(*(p))), (p) == NULL)
    if (GALLOC(ua, Ia * S) || GALLOC(ub, Ib * S) || GALLOC(c1, w->numel / Ia * S) ||
        GALLOC(cc, rest * S2) || GALLOC(t, NC * S2) || GALLOC(wts, NC * rest) || GALLOC(lu, S2) ||
        GALLOC(nm, 3 * S2) || GALLOC(wr, S) || GALLOC(wi, S) || GALLOC(vr, S2) ||
        GALLOC(ablk, S2) || GALLOC(bblk, S2) || GALLOC(tmp, 2 * S2) || GALLOC(ipiv, S) ||
        GALLOC(V, S2) || GALLOC(NV, S2) || GALLOC(Vc, S2) || GALLOC(aff, S2) ||
        GALLOC(pairs, S2) || GALLOC(parent, S) || GALLOC(size, S) || GALLOC(cluster_of, S) ||
        GALLOC(term_cluster, R) || GALLOC(blk, rest * w->maxL * w->maxL) ||
        GALLOC(vec, w->numel / Ia / Ib * w->maxL)) {
        rc = GBTD_ENOMEM;
        goto done;
    }
#undef GALLOC
    /* Compress modes a and b on their leading subspaces. */
    rc = leading_vectors(w->x, N, w->shape, ma, S, ua, S);
    if (rc == GBTD_OK) rc = leading_vectors(w->x, N, w->shape, mb, S, ub, S);
    if (rc != GBTD_OK) goto done;
    int64_t sh[GBTD_MAX_MODES];
    memcpy(sh, w->shape, sizeof sh);
    gbtd_btd_ttm_(w->x, N, sh, ma, ua, S, S, 1, 0.0, c1);
    sh[ma] = S;
    gbtd_btd_ttm_(c1, N, sh, mb, ub, S, S, 1, 0.0, cc);
    sh[mb] = S;
    /* Random combinations of the (a, b) slices. */
    for (int64_t i = 0; i < NC * rest; i++) wts[i] = gbtd_rng_normal(rng);
    memset(t, 0, (size_t)(NC * S2) * sizeof(double));
    {
        int64_t idx[GBTD_MAX_MODES] = {0}, ci = 0, stride[GBTD_MAX_MODES], sr = 1;
        for (int n = N - 1; n >= 0; n--) {
            stride[n] = (n == ma || n == mb) ? 0 : sr;
            if (n != ma && n != mb) sr *= sh[n];
        }
        const int64_t total = rest * S2;
        for (int64_t e = 0; e < total; e++) {
            const double v = cc[e];
            const int64_t pos = idx[ma] * S + idx[mb];
            for (int q = 0; q < NC; q++) t[q * S2 + pos] += wts[q * rest + ci] * v;
            for (int n = N - 1; n >= 0; n--) {
                idx[n]++;
                ci += stride[n];
                if (idx[n] < sh[n]) break;
                ci -= stride[n] * sh[n];
                idx[n] = 0;
            }
        }
    }
    /* nm[q] = t[q + 1 or 0] t[1]^{-1}: solve t1^T X^T = t^T (column-major view). */
    memcpy(lu, t + S2, (size_t)S2 * sizeof(double));
    if (LAPACKE_dgetrf(LAPACK_COL_MAJOR, (lapack_int)S, (lapack_int)S, lu, (lapack_int)S, ipiv) != 0)
        goto done; /* singular pencil: not applicable */
    const int src[3] = {0, 2, 3};
    for (int q = 0; q < 3; q++) {
        memcpy(nm + q * S2, t + src[q] * S2, (size_t)S2 * sizeof(double));
        LAPACKE_dgetrs(LAPACK_COL_MAJOR, 'N', (lapack_int)S, (lapack_int)S, lu, (lapack_int)S, ipiv,
                       nm + q * S2, (lapack_int)S);
    }
    /* Column-major solve of t1^T Y = t^T gives Y = (t t1^{-1})^T column-major, i.e. t t1^{-1}
     * row-major. Eigenvectors of the pencil matrix. */
    memcpy(lu, nm, (size_t)S2 * sizeof(double));
    if (LAPACKE_dgeev(LAPACK_ROW_MAJOR, 'N', 'V', (lapack_int)S, lu, (lapack_int)S, wr, wi, NULL, 1,
                      vr, (lapack_int)S) != 0)
        goto done;
    for (int64_t j = 0; j < S; j++) {
        if (wi[j] != 0.0 && j + 1 < S) {
            for (int64_t i = 0; i < S; i++) {
                const double re = vr[i * S + j], im = vr[i * S + j + 1];
                V[i * S + j] = re + im * _Complex_I;
                V[i * S + j + 1] = re - im * _Complex_I;
            }
            j++;
        } else {
            for (int64_t i = 0; i < S; i++) V[i * S + j] = vr[i * S + j];
        }
    }
    int grouped = 0;
    if (S <= BTD_COMMUTANT_LIMIT) {
        rc = commutant_groups(S, R, nm, 3, rng, V, aff, &grouped);
        if (rc != GBTD_OK) goto done;
    }
    /* Otherwise (large S): affinity of the pencil's eigenvectors i, j: sqrt(|P_ij P_ji|) for
     * P = V^{-1} N V, N the other two combinations; block-diagonal up to a permutation for an
     * exact BTD, but sensitive to noise where eigenvalues of different blocks nearly meet. */
    if (!grouped) memset(aff, 0, (size_t)S2 * sizeof(double));
    for (int q = 1; q < 3 && !grouped; q++) {
        const double *n_ = nm + q * S2;
        for (int64_t i = 0; i < S; i++)
            for (int64_t j = 0; j < S; j++) {
                _Complex double s_ = 0.0;
                for (int64_t l = 0; l < S; l++) s_ += n_[i * S + l] * V[l * S + j];
                NV[i * S + j] = s_;
            }
        memcpy(Vc, V, (size_t)S2 * sizeof(*V));
        if (LAPACKE_zgesv(LAPACK_ROW_MAJOR, (lapack_int)S, (lapack_int)S, Vc, (lapack_int)S, ipiv,
                          NV, (lapack_int)S) != 0)
            goto done;
        for (int64_t i = 0; i < S; i++)
            for (int64_t j = 0; j < S; j++) {
                const double pij = cabs(NV[i * S + j]), pji = cabs(NV[j * S + i]);
                aff[i * S + j] += sqrt(pij * pji);
            }
    }
    /* Greedy grouping: strongest affinities first, groups capped at the largest rank. */
    int64_t np = 0;
    for (int64_t i = 0; i < S; i++) {
        parent[i] = (int)i;
        size[i] = 1;
        for (int64_t j = i + 1; j < S; j++) {
            pairs[np].aff = aff[i * S + j];
            pairs[np].i = (int)i;
            pairs[np].j = (int)j;
            np++;
        }
    }
    qsort(pairs, (size_t)np, sizeof *pairs, cmp_pair);
    for (int64_t p = 0; p < np; p++) {
        const int ri = uf_find(parent, pairs[p].i), rj = uf_find(parent, pairs[p].j);
        if (ri == rj || size[ri] + size[rj] > w->maxL) continue;
        parent[rj] = ri;
        size[ri] += size[rj];
    }
    /* Match groups to terms by size. */
    for (int64_t i = 0; i < S; i++) cluster_of[i] = 0; /* 1 = root already taken */
    for (int r = 0; r < R; r++) {
        term_cluster[r] = -1;
        for (int64_t i = 0; i < S; i++)
            if (uf_find(parent, (int)i) == (int)i && !cluster_of[i] && size[i] == LIDX(w, r, a)) {
                term_cluster[r] = (int)i;
                cluster_of[i] = 1;
                break;
            }
        if (term_cluster[r] < 0) goto done; /* the groups do not fit the ranks */
    }
    /* Real basis of each group's span: real and imaginary parts, leading singular vectors. */
    for (int r = 0; r < R; r++) {
        const int64_t Lr = LIDX(w, r, a);
        int64_t ncol = 0;
        for (int64_t j = 0; j < S; j++)
            if (uf_find(parent, (int)j) == term_cluster[r]) {
                for (int64_t i = 0; i < S; i++) {
                    tmp[i * 2 * Lr + ncol] = creal(V[i * S + j]);
                    tmp[i * 2 * Lr + ncol + 1] = cimag(V[i * S + j]);
                }
                ncol += 2;
            }
        rc = left_basis(tmp, S, 2 * Lr, Lr, ablk + OFF(w, a, r), S);
        if (rc != GBTD_OK) goto done;
    }
    /* Mode b: rows of block r of ablk^{-1} [t0 t1] span B~_r^T. */
    memcpy(lu, ablk, (size_t)S2 * sizeof(double));
    memcpy(tmp, t, (size_t)S2 * sizeof(double));
    memcpy(tmp + S2, t + S2, (size_t)S2 * sizeof(double));
    if (LAPACKE_dgesv(LAPACK_ROW_MAJOR, (lapack_int)S, (lapack_int)S, lu, (lapack_int)S, ipiv, tmp,
                      (lapack_int)S) != 0 ||
        LAPACKE_dgetrs(LAPACK_ROW_MAJOR, 'N', (lapack_int)S, (lapack_int)S, lu, (lapack_int)S, ipiv,
                       tmp + S2, (lapack_int)S) != 0)
        goto done;
    for (int r = 0; r < R; r++) {
        const int64_t Lr = LIDX(w, r, a), o = OFF(w, a, r);
        /* (S x 2L) matrix whose columns are the rows of both blocks. */
        double *m = nm; /* reuse: S x 2L <= 3 S^2 */
        for (int64_t i = 0; i < S; i++)
            for (int64_t l = 0; l < Lr; l++) {
                m[i * 2 * Lr + l] = tmp[(o + l) * S + i];
                m[i * 2 * Lr + Lr + l] = tmp[S2 + (o + l) * S + i];
            }
        rc = left_basis(m, S, 2 * Lr, Lr, bblk + OFF(w, b, r), S);
        if (rc != GBTD_OK) goto done;
    }
    /* Factors of modes a and b in the full space. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)Ia, (blasint)S, (blasint)S, 1.0,
                ua, (blasint)S, ablk, (blasint)S, 0.0, w->U[a], (blasint)S);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)Ib, (blasint)S, (blasint)S, 1.0,
                ub, (blasint)S, bblk, (blasint)S, 0.0, w->U[b], (blasint)S);
    /* Other factored modes: Z = C x_a ablk^{-1} x_b bblk^{-1} is block diagonal in (a, b);
     * term r's diagonal block gives its mode-c subspaces. */
    if (w->K > 2) {
        double *inv[2] = {ablk, bblk};
        for (int q = 0; q < 2; q++) {
            if (LAPACKE_dgetrf(LAPACK_ROW_MAJOR, (lapack_int)S, (lapack_int)S, inv[q], (lapack_int)S,
                               ipiv) != 0 ||
                LAPACKE_dgetri(LAPACK_ROW_MAJOR, (lapack_int)S, inv[q], (lapack_int)S, ipiv) != 0)
                goto done;
        }
        gbtd_btd_ttm_(cc, N, sh, ma, ablk, S, S, 0, 0.0, c1);
        gbtd_btd_ttm_(c1, N, sh, mb, bblk, S, S, 0, 0.0, cc);
        for (int r = 0; r < R; r++) {
            const int64_t Lr = LIDX(w, r, a);
            int64_t P, Q, s1[GBTD_MAX_MODES];
            memcpy(s1, sh, sizeof s1);
            prod_around(s1, N, ma, &P, &Q);
            slice_get(cc, P, S, Q, OFF(w, a, r), Lr, c1);
            s1[ma] = Lr;
            prod_around(s1, N, mb, &P, &Q);
            slice_get(c1, P, S, Q, OFF(w, b, r), Lr, blk);
            s1[mb] = Lr;
            for (int k = 0; k < w->K; k++) {
                if (k == a || k == b) continue;
                double *dst = vec; /* I_c x L_{r,c} */
                const int64_t Ic = w->shape[w->modes[k]], Lc = LIDX(w, r, k), Sk = w->sumL[k];
                rc = leading_vectors(blk, N, s1, w->modes[k], Lc, dst, Lc);
                if (rc != GBTD_OK) goto done;
                for (int64_t i = 0; i < Ic; i++)
                    for (int64_t l = 0; l < Lc; l++) w->U[k][i * Sk + OFF(w, k, r) + l] = dst[i * Lc + l];
            }
        }
    }
    *applied = 1;
done:
    gbtd_free(ua);
    gbtd_free(ub);
    gbtd_free(c1);
    gbtd_free(cc);
    gbtd_free(t);
    gbtd_free(wts);
    gbtd_free(lu);
    gbtd_free(nm);
    gbtd_free(wr);
    gbtd_free(wi);
    gbtd_free(vr);
    gbtd_free(ablk);
    gbtd_free(bblk);
    gbtd_free(tmp);
    gbtd_free(ipiv);
    gbtd_free(V);
    gbtd_free(NV);
    gbtd_free(Vc);
    gbtd_free(aff);
    gbtd_free(pairs);
    gbtd_free(parent);
    gbtd_free(size);
    gbtd_free(cluster_of);
    gbtd_free(term_cluster);
    gbtd_free(blk);
    gbtd_free(vec);
    return rc;
}

/* ---- one run ------------------------------------------------------------------------------- */

typedef struct run_ctx {
    const gbtd_btd_opts *o;
    double t_start, deadline; /* deadline <= 0: none */
} run_ctx;

/* Record e, call the callback, decide whether to stop. Returns 1 to stop (reason set). */
static int check_stop(const run_ctx *c, gbtd_decomp_info *ri, int it, double e_prev, double e,
                      int decreased_step, int *rc)
{
    *rc = gbtd_decomp_info_push(ri, e);
    if (*rc != GBTD_OK) return 1;
    ri->iterations = it;
    ri->rel_error = e;
    const double now = gbtd_wall_time();
    if (c->o->callback && c->o->callback(it, e, now - c->t_start, c->o->callback_ctx)) {
        ri->stop = GBTD_STOP_CALLBACK;
        return 1;
    }
    if (e <= c->o->error_tol) {
        ri->stop = GBTD_STOP_ERROR_TOL;
        return 1;
    }
    if (decreased_step && e <= e_prev && e_prev > 0.0 && (e_prev - e) / e_prev < c->o->tol) {
        ri->stop = GBTD_STOP_TOL;
        return 1;
    }
    if (it >= c->o->max_iter) {
        ri->stop = GBTD_STOP_MAX_ITER;
        return 1;
    }
    if (c->deadline > 0.0 && now >= c->deadline) {
        ri->stop = GBTD_STOP_TIME;
        return 1;
    }
    return 0;
}

static int run_als(ws *w, const run_ctx *c, double e0, gbtd_decomp_info *ri)
{
    double e_prev = e0;
    int rc = GBTD_OK;
    for (int it = 1;; it++) {
        /* Each factor update is followed by the QR of the new blocks (triangular factors into
         * the cores, the model unchanged), so the cores' update sees orthonormal factors. */
        for (int j = 0; j < w->K; j++) {
            project_except(w, j);
            form_MH(w, j);
            GBTD_CHECK(solve_factor(w, j));
            GBTD_CHECK(normalize_mode(w, j));
            compute_gram(w, j);
        }
        core_rhs(w);
        double e2;
        GBTD_CHECK(core_solve(w, &e2));
        const double e = current_error(w, e2);
        if (check_stop(c, ri, it, e_prev, e, 1, &rc)) return rc;
        e_prev = e;
    }
}

static int run_nls(ws *w, const run_ctx *c, double e0, gbtd_decomp_info *ri)
{
    int rc = GBTD_OK;
    double f = 0.5 * e0 * e0 * w->xn2;
    nls_evaluate(w);
    double dmax = 1.0;
    for (int k = 0; k < w->K; k++)
        for (int64_t i = 0; i < w->sumL[k]; i++)
            dmax = w->H[k][i * w->sumL[k] + i] > dmax ? w->H[k][i * w->sumL[k] + i] : dmax;
    double lambda = 1e-3 * dmax, nu = 2.0;
    double e = e0;
    for (int it = 1;; it++) {
        nls_cg(w, lambda, c->o->cg_max_iter, c->o->cg_tol);
        /* Predicted decrease of the Gauss-Newton model: -g.p - 1/2 p.J^T J p. */
        jtj_apply(w, w->cx, 0.0, w->cq);
        const double pred = -dot(w->g, w->cx, w->nz) - 0.5 * dot(w->cx, w->cq, w->nz);
        for (int64_t i = 0; i < w->nz; i++) w->z2[i] = w->z[i] + w->cx[i];
        nls_backup(w, 0);
        set_state(w, w->z2);
        GBTD_CHECK(normalize(w));
        const double f_new = 0.5 * nls_trial_err2(w, c->o->tol);
        const double rho = pred > 0.0 ? (f - f_new) / pred : -1.0;
        const double e_prev = e;
        int accepted = 0;
        if (rho > 0.0 && f_new < f) {
            double *t = w->z;
            w->z = w->z2;
            w->z2 = t;
            set_state(w, w->z);
            f = f_new;
            e = sqrt(2.0 * f / w->xn2);
            nls_evaluate_from(w, 1);
            const double t3 = 2.0 * rho - 1.0;
            const double shrink = 1.0 - t3 * t3 * t3;
            lambda *= shrink > 1.0 / 3.0 ? shrink : 1.0 / 3.0;
            nu = 2.0;
            accepted = 1;
        } else {
            set_state(w, w->z);
            nls_backup(w, 1);
            lambda *= nu;
            nu *= 2.0;
        }
        if (check_stop(c, ri, it, e_prev, e, accepted, &rc)) return rc;
        if (!accepted && lambda > 1e20 * dmax) {
            ri->stop = GBTD_STOP_TOL; /* no descent left at any damping: a stationary point */
            return GBTD_OK;
        }
    }
}

/* ---- drivers ------------------------------------------------------------------------------- */

gbtd_btd_opts gbtd_btd_opts_default(void)
{
    gbtd_btd_opts o;
    memset(&o, 0, sizeof o);
    o.seed = 42;
    o.solver = GBTD_BTD_NLS;
    o.init = GBTD_BTD_INIT_AUTO;
    o.restarts = 1;
    o.tol = 1e-10;
    o.error_tol = 1e-13;
    o.max_iter = 500;
    o.time_budget = 0.0;
    o.compress = GBTD_BTD_COMPRESS_AUTO;
    o.cg_max_iter = 25;
    o.cg_tol = 1e-6;
    return o;
}

static int check_opts(const gbtd_btd_opts *o)
{
    if (o->solver != GBTD_BTD_NLS && o->solver != GBTD_BTD_ALS)
        return gbtd_error(GBTD_EINVAL, "btd: unknown solver %d", (int)o->solver);
    if (o->init != GBTD_BTD_INIT_RANDOM && o->init != GBTD_BTD_INIT_HOSVD &&
        o->init != GBTD_BTD_INIT_GEVD && o->init != GBTD_BTD_INIT_AUTO)
        return gbtd_error(GBTD_EINVAL, "btd: unknown init %d", (int)o->init);
    if (o->max_iter < 1)
        return gbtd_error(GBTD_EINVAL, "btd: max_iter %d (need >= 1)", o->max_iter);
    if (o->restarts < 1)
        return gbtd_error(GBTD_EINVAL, "btd: restarts %d (need >= 1)", o->restarts);
    if (!(o->tol >= 0.0) || !(o->error_tol >= 0.0) || !(o->time_budget >= 0.0))
        return gbtd_error(GBTD_EINVAL, "btd: tol, error_tol and time_budget must be >= 0");
    if (o->compress != GBTD_BTD_COMPRESS_AUTO && o->compress != GBTD_BTD_COMPRESS_OFF &&
        o->compress != GBTD_BTD_COMPRESS_ON)
        return gbtd_error(GBTD_EINVAL, "btd: unknown compress setting %d", (int)o->compress);
    if (o->cg_max_iter < 1 || !(o->cg_tol > 0.0))
        return gbtd_error(GBTD_EINVAL, "btd: cg_max_iter must be >= 1 and cg_tol > 0");
    return GBTD_OK;
}

/* Contiguous copy of x scaled to unit norm; *norm receives ||x||. */
static int prepare_x(const gbtd_tensor *x, gbtd_tensor *xs, double *norm)
{
    if (x == NULL || x->data == NULL) return gbtd_error(GBTD_EINVAL, "btd: NULL tensor");
    GBTD_CHECK(gbtd_tensor_check_finite(x, "btd input"));
    const double nx = gbtd_tensor_norm(x);
    if (!(nx > 0.0)) return gbtd_error(GBTD_EINVAL, "btd: the tensor is zero, nothing to decompose");
    GBTD_CHECK(gbtd_tensor_clone(xs, x));
    gbtd_tensor_scale(xs, 1.0 / nx);
    *norm = nx;
    return GBTD_OK;
}

static void scale_cores(gbtd_btd *m, double s)
{
    for (int r = 0; r < m->nterms; r++) gbtd_tensor_scale(&m->cores[r], s);
}

static void merge_info(gbtd_decomp_info *info, gbtd_decomp_info *run)
{
    gbtd_free(info->error_history);
    info->error_history = run->error_history;
    info->history_len = run->history_len;
    info->history_cap = run->history_cap;
    info->iterations = run->iterations;
    info->rel_error = run->rel_error;
    info->stop = run->stop;
    run->error_history = NULL;
    run->history_len = run->history_cap = 0;
}

/* Fit from the model's contents (refine) or from fresh starts (decompose). */
static int fit(const gbtd_tensor *x, gbtd_btd *model, gbtd_btd_info *info,
               const gbtd_btd_opts *opts, int from_model)
{
    const double t0 = gbtd_wall_time();
    gbtd_tensor xs = {0};
    ws w;
    memset(&w, 0, sizeof w);
    gbtd_decomp_info run, best;
    gbtd_decomp_info_init(&run);
    gbtd_decomp_info_init(&best);
    double *bestz = NULL, xnorm = 0.0;
    gbtd_rng *rng = NULL;
    double t_init = 0.0, t_iter = 0.0;
    int runs = 0, best_run = 0;
    int rc = prepare_x(x, &xs, &xnorm);
    if (rc != GBTD_OK) goto done;
    rc = ws_init(&w, model, opts->solver == GBTD_BTD_NLS);
    if (rc != GBTD_OK) goto done;
    w.x = xs.data;
    w.xn2 = 1.0;
    bestz = gbtd_malloc((size_t)w.nz * sizeof(double));
    rc = gbtd_rng_alloc(opts->seed, &rng);
    if (rc != GBTD_OK || bestz == NULL) {
        rc = GBTD_ENOMEM;
        goto done;
    }
    run_ctx c = {opts, t0, opts->time_budget > 0.0 ? t0 + opts->time_budget : 0.0};
    double best_e = INFINITY;
    const int nrun = from_model ? 1 : opts->restarts;
    for (int q = 0; q < nrun; q++) {
        const double ti = gbtd_wall_time();
        gbtd_rng_seed(rng, opts->seed + (uint64_t)q);
        set_state(&w, w.z);
        if (from_model) {
            load_model(&w, model);
            for (int64_t i = 0; i < w.Gsize; i++) w.G[i] /= xnorm;
        } else if (opts->init == GBTD_BTD_INIT_HOSVD && q == 0) {
            rc = hosvd_factors(&w, rng);
        } else if (opts->init == GBTD_BTD_INIT_GEVD || opts->init == GBTD_BTD_INIT_AUTO) {
            int applied = 0;
            random_factors(&w, rng);
            rc = gevd_factors(&w, rng, &applied);
            if (rc == GBTD_OK && !applied) rc = hosvd_factors(&w, rng);
        } else {
            random_factors(&w, rng);
        }
        double e0 = 0.0;
        if (rc == GBTD_OK) {
            if (from_model) {
                rc = normalize(&w);
                if (rc == GBTD_OK) {
                    compute_grams(&w);
                    e0 = rel_from_err2(&w, explicit_err2(&w));
                }
            } else {
                rc = fit_cores(&w, &e0);
            }
        }
        const double tm = gbtd_wall_time();
        t_init += tm - ti;
        if (rc != GBTD_OK) goto done;
        gbtd_decomp_info_free(&run);
        gbtd_decomp_info_init(&run);
        rc = opts->solver == GBTD_BTD_ALS ? run_als(&w, &c, e0, &run) : run_nls(&w, &c, e0, &run);
        t_iter += gbtd_wall_time() - tm;
        if (rc != GBTD_OK) goto done;
        runs++;
        if (run.rel_error < best_e || q == 0) {
            best_e = run.rel_error;
            best_run = q;
            memcpy(bestz, w.z, (size_t)w.nz * sizeof(double));
            merge_info(&best, &run);
        }
        if (run.stop == GBTD_STOP_CALLBACK || run.stop == GBTD_STOP_TIME ||
            run.stop == GBTD_STOP_ERROR_TOL)
            break;
    }
    memcpy(w.z, bestz, (size_t)w.nz * sizeof(double));
    set_state(&w, w.z);
    store_model(&w, model);
    scale_cores(model, xnorm);
done:
    if (info) {
        gbtd_decomp_info_free(info);
        gbtd_decomp_info_init(info);
        if (rc == GBTD_OK) {
            merge_info(info, &best);
            info->restarts = runs;
            info->best_restart = best_run;
        }
        info->time_init = t_init;
        info->time_iterate = t_iter;
        info->time_total = gbtd_wall_time() - t0;
    }
    gbtd_decomp_info_free(&run);
    gbtd_decomp_info_free(&best);
    gbtd_rng_free(rng);
    gbtd_free(bestz);
    ws_free(&w);
    gbtd_tensor_free(&xs);
    return rc;
}

static int check_x_layout(const gbtd_tensor *x, const gbtd_btd *m)
{
    if (x == NULL || x->data == NULL) return gbtd_error(GBTD_EINVAL, "btd: NULL tensor");
    int same = x->ndim == m->ndim;
    for (int n = 0; same && n < x->ndim; n++) same = x->shape[n] == m->shape[n];
    if (!same) {
        char a[128], b[128];
        return gbtd_error(GBTD_ESHAPE, "btd: tensor %s does not match the model shape %s",
                          gbtd_shape_str(x->ndim, x->shape, a, sizeof a),
                          gbtd_shape_str(m->ndim, m->shape, b, sizeof b));
    }
    return GBTD_OK;
}

/* Compression: fit on X x_k V_k^T (V_k the leading min(I_k, sum of ranks) left singular
 * vectors of each factored mode), expand the factors by V_k, refine on X. *done = 0 when
 * compression is off, does not pay (AUTO: less than 4x smaller, or X below 2^16 entries) or
 * the compressed layout is not valid; the model is then untouched. */
static int fit_compressed(const gbtd_tensor *x, gbtd_btd *model, gbtd_btd_info *info,
                          const gbtd_btd_opts *opts, int *done)
{
    *done = 0;
    if (opts->compress == GBTD_BTD_COMPRESS_OFF) return GBTD_OK;
    const int K = model->nmodes, N = model->ndim;
    int64_t csh[GBTD_MAX_MODES] = {0}, numel = 1, cnumel = 1, sumL[GBTD_MAX_MODES] = {0};
    for (int k = 0; k < K; k++)
        for (int r = 0; r < model->nterms; r++) sumL[k] += model->ranks[r * K + k];
    for (int n = 0; n < N; n++) csh[n] = model->shape[n];
    int shrinks = 0;
    for (int k = 0; k < K; k++) {
        const int m = model->modes[k];
        if (sumL[k] < csh[m]) {
            csh[m] = sumL[k];
            shrinks = 1;
        }
    }
    for (int n = 0; n < N; n++) {
        numel *= model->shape[n];
        cnumel *= csh[n];
    }
    if (!shrinks) return GBTD_OK;
    if (opts->compress == GBTD_BTD_COMPRESS_AUTO && (cnumel * 4 > numel || numel < 65536))
        return GBTD_OK;
    int sorted[GBTD_MAX_MODES], order[GBTD_MAX_MODES];
    if (gbtd_btd_check_layout_(N, csh, K, model->modes, model->nterms, model->ranks, sorted,
                               order) != GBTD_OK) {
        gbtd_clear_error();
        return GBTD_OK;
    }
    GBTD_CHECK(gbtd_tensor_check_finite(x, "btd input"));
    const double t0 = gbtd_wall_time();
    gbtd_tensor xs = {0}, xc = {0}, tmp = {0};
    gbtd_btd mc;
    memset(&mc, 0, sizeof mc);
    gbtd_btd_info ic;
    gbtd_decomp_info_init(&ic);
    double *v[GBTD_MAX_MODES] = {NULL};
    int rc = gbtd_tensor_clone(&xs, x);
    if (rc != GBTD_OK) goto out;
    if (!(gbtd_tensor_norm(&xs) > 0.0)) {
        rc = gbtd_error(GBTD_EINVAL, "btd: the tensor is zero, nothing to decompose");
        goto out;
    }
    /* Xc = X x_k V_k^T, one factored mode after the other. */
    {
        int64_t sh[GBTD_MAX_MODES];
        memcpy(sh, model->shape, sizeof sh);
        gbtd_tensor cur = xs;
        for (int k = 0; k < K; k++) {
            const int m = model->modes[k];
            v[k] = gbtd_malloc((size_t)(sh[m] * csh[m]) * sizeof(double));
            if (v[k] == NULL) {
                rc = GBTD_ENOMEM;
                goto out;
            }
            rc = leading_vectors(cur.data, N, sh, m, csh[m], v[k], csh[m]);
            if (rc != GBTD_OK) goto out;
            int64_t nsh[GBTD_MAX_MODES];
            memcpy(nsh, sh, sizeof nsh);
            nsh[m] = csh[m];
            gbtd_tensor next;
            rc = gbtd_tensor_alloc(&next, N, nsh);
            if (rc != GBTD_OK) goto out;
            gbtd_btd_ttm_(cur.data, N, sh, m, v[k], csh[m], csh[m], 1, 0.0, next.data);
            gbtd_tensor_free(&tmp);
            tmp = next;
            cur = next;
            memcpy(sh, nsh, sizeof sh);
        }
        xc = tmp;
        memset(&tmp, 0, sizeof tmp);
    }
    rc = gbtd_btd_alloc(&mc, N, csh, K, model->modes, model->nterms, model->ranks);
    if (rc != GBTD_OK) goto out;
    gbtd_btd_opts oc = *opts;
    if (oc.time_budget > 0.0) {
        oc.time_budget -= gbtd_wall_time() - t0;
        if (oc.time_budget <= 0.0) oc.time_budget = 1e-9;
    }
    rc = fit(&xc, &mc, &ic, &oc, 0);
    if (rc != GBTD_OK) goto out;
    /* Expand: U_{r,k} = V_k U^c_{r,k}; cores unchanged. */
    for (int r = 0; r < model->nterms; r++) {
        gbtd_tensor_copy(&model->cores[r], &mc.cores[r]);
        for (int k = 0; k < K; k++) {
            const gbtd_tensor *uc = &mc.factors[r * K + k];
            gbtd_tensor *u = &model->factors[r * K + k];
            const int64_t I = u->shape[0], c = uc->shape[0], L = u->shape[1];
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)I, (blasint)L,
                        (blasint)c, 1.0, v[k], (blasint)c, uc->data, (blasint)L, 0.0, u->data,
                        (blasint)L);
        }
    }
    gbtd_btd_opts of = *opts;
    if (of.time_budget > 0.0) {
        of.time_budget -= gbtd_wall_time() - t0;
        if (of.time_budget <= 0.0) of.time_budget = 1e-9;
    }
    if (ic.stop == GBTD_STOP_CALLBACK) of.max_iter = 1;
    const double t1 = gbtd_wall_time();
    rc = fit(x, model, info, &of, 1);
    if (rc == GBTD_OK && info) {
        /* The compressed phase counts as initialisation. */
        info->time_init += t1 - t0;
        info->time_total = gbtd_wall_time() - t0;
        info->restarts = ic.restarts;
        info->best_restart = ic.best_restart;
        if (ic.stop == GBTD_STOP_CALLBACK) info->stop = GBTD_STOP_CALLBACK;
    }
    if (rc == GBTD_OK) *done = 1;
out:
    for (int k = 0; k < K; k++) gbtd_free(v[k]);
    gbtd_tensor_free(&xs);
    gbtd_tensor_free(&xc);
    gbtd_tensor_free(&tmp);
    gbtd_btd_free(&mc);
    gbtd_decomp_info_free(&ic);
    return rc;
}

int gbtd_btd_decompose(const gbtd_tensor *x, int nmodes, const int *modes, int nterms,
                       const int64_t *ranks, gbtd_btd *model, gbtd_btd_info *info,
                       const gbtd_btd_opts *opts)
{
    if (info) gbtd_decomp_info_init(info);
    if (model == NULL) return gbtd_error(GBTD_EINVAL, "btd_decompose: NULL model");
    memset(model, 0, sizeof *model);
    const gbtd_btd_opts def = gbtd_btd_opts_default();
    if (opts == NULL) opts = &def;
    GBTD_CHECK(check_opts(opts));
    if (x == NULL || x->data == NULL) return gbtd_error(GBTD_EINVAL, "btd_decompose: NULL tensor");
    GBTD_CHECK(gbtd_btd_alloc(model, x->ndim, x->shape, nmodes, modes, nterms, ranks));
    int done = 0;
    int rc = fit_compressed(x, model, info, opts, &done);
    if (rc == GBTD_OK && !done) rc = fit(x, model, info, opts, 0);
    if (rc != GBTD_OK) gbtd_btd_free(model);
    return rc;
}

int gbtd_btd_refine(const gbtd_tensor *x, gbtd_btd *model, gbtd_btd_info *info,
                    const gbtd_btd_opts *opts)
{
    if (info) gbtd_decomp_info_init(info);
    const gbtd_btd_opts def = gbtd_btd_opts_default();
    if (opts == NULL) opts = &def;
    GBTD_CHECK(check_opts(opts));
    if (model == NULL || model->cores == NULL || model->factors == NULL || model->ranks == NULL)
        return gbtd_error(GBTD_EINVAL, "btd_refine: NULL or empty model");
    GBTD_CHECK(check_x_layout(x, model));
    return fit(x, model, info, opts, 1);
}

double gbtd_btd_iteration_flops(const gbtd_btd *m, gbtd_btd_solver solver)
{
    if (m == NULL || m->ranks == NULL) return 0.0;
    const int K = m->nmodes, R = m->nterms;
    double numel = 1.0, sumL[GBTD_MAX_MODES] = {0};
    for (int n = 0; n < m->ndim; n++) numel *= (double)m->shape[n];
    for (int k = 0; k < K; k++)
        for (int r = 0; r < R; r++) sumL[k] += (double)m->ranks[r * K + k];
    double f = 0.0;
    if (K == 1) {
        f = 4.0 * numel * sumL[0]; /* M = X_(n) W and the core right-hand side */
    } else {
        for (int j = 0; j < K; j++) {
            int best = -1;
            for (int k = 0; k < K; k++) {
                if (k == j) continue;
                if (best < 0 || sumL[k] / (double)m->shape[m->modes[k]] <
                                    sumL[best] / (double)m->shape[m->modes[best]])
                    best = k;
            }
            f += 2.0 * numel * sumL[best];
        }
    }
    if (solver == GBTD_BTD_NLS) {
        /* The trial point's error comes from the first projection, which the gradient then
         * reuses (nls_trial_err2); the explicit residual, formed only near an exact fit or a
         * tight tolerance, is not counted. */
    } else {
        /* Factor updates: two triangular solves (2 S^2 I) and the Gramian (S^2 I) per mode. */
        for (int k = 0; k < K; k++) f += 3.0 * sumL[k] * sumL[k] * (double)m->shape[m->modes[k]];
    }
    return f;
}

/* ---- self-check (tests) -------------------------------------------------------------------- */

/* Model value T(z) into w->rec for the state vector v (factors not normalised). */
static void model_at(ws *w, double *v)
{
    set_state(w, v);
    (void)explicit_err2(w);
}

int gbtd_btd_check_derivatives_(const gbtd_tensor *x, const gbtd_btd *m, uint64_t seed,
                                double *grad_rel, double *jtj_rel, double *sym_rel)
{
    ws w;
    gbtd_tensor xs = {0};
    double xnorm = 1.0;
    GBTD_CHECK(check_x_layout(x, m));
    int rc = prepare_x(x, &xs, &xnorm);
    if (rc != GBTD_OK) return rc;
    rc = ws_init(&w, m, 1);
    double *v = NULL, *u = NULL, *zp = NULL, *t1 = NULL, *t2 = NULL;
    gbtd_rng *rng = NULL;
    if (rc != GBTD_OK) goto done;
    w.x = xs.data;
    w.xn2 = 1.0;
    v = gbtd_malloc((size_t)w.nz * sizeof(double));
    u = gbtd_malloc((size_t)w.nz * sizeof(double));
    zp = gbtd_malloc((size_t)w.nz * sizeof(double));
    t1 = gbtd_malloc((size_t)w.numel * sizeof(double));
    t2 = gbtd_malloc((size_t)w.nz * sizeof(double));
    if (!v || !u || !zp || !t1 || !t2 || gbtd_rng_alloc(seed, &rng) != GBTD_OK) {
        rc = GBTD_ENOMEM;
        goto done;
    }
    load_model(&w, m);
    for (int64_t i = 0; i < w.Gsize; i++) w.G[i] /= xnorm;
    for (int64_t i = 0; i < w.nz; i++) {
        v[i] = gbtd_rng_normal(rng);
        u[i] = gbtd_rng_normal(rng);
    }
    nls_evaluate(&w);
    /* Central differences: error O(h^2) of the third derivative, rounding O(eps / h). */
    const double h = 1e-5;
    double *z0 = w.z;
    for (int64_t i = 0; i < w.nz; i++) zp[i] = z0[i] + h * v[i];
    model_at(&w, zp);
    memcpy(t1, w.rec, (size_t)w.numel * sizeof(double));
    double fp = 0.0, fm = 0.0;
    for (int64_t i = 0; i < w.numel; i++) fp += 0.5 * (t1[i] - w.x[i]) * (t1[i] - w.x[i]);
    for (int64_t i = 0; i < w.nz; i++) zp[i] = z0[i] - h * v[i];
    model_at(&w, zp);
    double jv2 = 0.0;
    for (int64_t i = 0; i < w.numel; i++) {
        fm += 0.5 * (w.rec[i] - w.x[i]) * (w.rec[i] - w.x[i]);
        const double jv = (t1[i] - w.rec[i]) / (2.0 * h);
        jv2 += jv * jv;
    }
    set_state(&w, z0);
    const double gv = dot(w.g, v, w.nz), fd = (fp - fm) / (2.0 * h);
    *grad_rel = fabs(gv - fd) / (fabs(fd) > 1e-300 ? fabs(fd) : 1.0);
    jtj_apply(&w, v, 0.0, t2);
    const double vjv = dot(v, t2, w.nz);
    *jtj_rel = fabs(vjv - jv2) / jv2;
    const double ujv = dot(u, t2, w.nz);
    jtj_apply(&w, u, 0.0, t2);
    const double vju = dot(v, t2, w.nz);
    *sym_rel = fabs(ujv - vju) / (fabs(ujv) + fabs(vju));
done:
    gbtd_free(v);
    gbtd_free(u);
    gbtd_free(zp);
    gbtd_free(t1);
    gbtd_free(t2);
    gbtd_rng_free(rng);
    ws_free(&w);
    gbtd_tensor_free(&xs);
    return rc;
}
