/* Fine-tuning a CRU-Net: SGD with a cosine schedule, new layers first, distillation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "cru/build.h"
#include "cru/internal.h"
#include "nn/optim.h"
#include "nn/train.h"

gbtd_cru_finetune_opts gbtd_cru_finetune_opts_default(void)
{
    gbtd_cru_finetune_opts o;
    memset(&o, 0, sizeof o);
    o.epochs = 2;
    o.batch = 128;
    o.lr = 0.01;
    o.new_lr_scale = 0.1;
    o.weight_decay = 5e-4;
    o.momentum = 0.9;
    o.kd_temp = 4.0;
    o.kd_alpha = 0.5;
    return o;
}

/* softmax(z / T) of one row into p */
static void softmax_t_(const float *z, int k, double t, double *p)
{
    double mx = z[0];
    for (int j = 1; j < k; j++)
        if (z[j] > mx) mx = z[j];
    double s = 0;
    for (int j = 0; j < k; j++) s += p[j] = exp((z[j] - mx) / t);
    for (int j = 0; j < k; j++) p[j] /= s;
}

/* d loss / d logits of (1 - a) CE(y) + a T^2 KL(teacher_T || student_T), batch mean. */
static void kd_grad_(const float *s, const float *t, const int32_t *y, int n, int k, double temp,
                     double alpha, double *ps, double *pt, float *d)
{
    for (int i = 0; i < n; i++) {
        softmax_t_(s + (int64_t)i * k, k, 1.0, ps);
        for (int j = 0; j < k; j++)
            d[(int64_t)i * k + j] = (float)((1 - alpha) * (ps[j] - (j == y[i])) / n);
        softmax_t_(s + (int64_t)i * k, k, temp, ps);
        softmax_t_(t + (int64_t)i * k, k, temp, pt);
        for (int j = 0; j < k; j++) d[(int64_t)i * k + j] += (float)(alpha * temp * (ps[j] - pt[j]) / n);
    }
}

/* Feature matching: per matched stage its output value in the student and in the teacher, and
 * (with beta > 0) a buffer for F_s - F_s^T that the backward reads. */
enum { FEAT_MAX = 31 };
typedef struct feat_ {
    int n;
    int sv[FEAT_MAX], tv[FEAT_MAX]; /* stage output values in the student and the teacher */
    int64_t numel[FEAT_MAX]; /* per image */
    float *diff[FEAT_MAX];
} feat_;

static void feat_free_(feat_ *f)
{
    for (int k = 0; k < f->n; k++) free(f->diff[k]);
    memset(f, 0, sizeof *f);
}

/* The matched stages (see gbtd_cru_finetune_opts.feat_stages); none without a teacher. */
static int feat_setup_(const gbtd_net *net, const gbtd_net *T, unsigned sel, double beta,
                       int batch, feat_ *f)
{
    memset(f, 0, sizeof *f);
    if (!T) return GBTD_OK;
    const int ns = gbtd_cru_net_stages(net), nt = gbtd_cru_net_stages(T);
    if (sel & 1u) return gbtd_error(GBTD_EINVAL, "finetune: feature stage 0 does not exist "
                                    "(stages are numbered from 1)");
    for (int s = 1; s <= FEAT_MAX; s++) {
        const bool asked = (sel & GBTD_CRU_STAGE_BIT(s)) != 0;
        if (sel ? !asked : (s > ns || s > nt)) continue;
        int sv = -1, tv = -1;
        if (gbtd_cru_stage_output(net, s, &sv) || gbtd_cru_stage_output(T, s, &tv)) {
            if (asked)
                return gbtd_error(GBTD_EINVAL, "finetune: feature stage %d does not exist in the "
                                  "%s (its stages: 1 to %d)", s, sv < 0 ? "network" : "teacher",
                                  sv < 0 ? ns : nt);
            gbtd_clear_error();
            continue;
        }
        const gbtd_value *a = &net->values[sv], *b = &T->values[tv];
        if (a->c != b->c || a->h != b->h || a->w != b->w) {
            if (asked)
                return gbtd_error(GBTD_EINVAL, "finetune: stage %d outputs %dx%dx%d in the network, "
                                  "%dx%dx%d in the teacher", s, a->c, a->h, a->w, b->c, b->h, b->w);
            continue;
        }
        f->sv[f->n] = sv;
        f->tv[f->n] = tv;
        f->numel[f->n] = (int64_t)a->c * a->h * a->w;
        f->n++;
    }
    if (beta > 0 && f->n == 0)
        return gbtd_error(GBTD_EINVAL, "finetune: feature matching found no stage (layers named "
                          "layerS.*) in both the network and the teacher");
    for (int k = 0; k < f->n && beta > 0; k++) {
        f->diff[k] = malloc((size_t)batch * (size_t)f->numel[k] * sizeof(float));
        if (!f->diff[k]) {
            feat_free_(f);
            return gbtd_error(GBTD_ENOMEM, "finetune: out of memory for feature matching");
        }
    }
    return GBTD_OK;
}

/* After the forwards of a batch of n: *dist = sum_s |F_s - F_s^T|^2 / |F_s^T|^2 and, with
 * beta > 0, its gradient beta 2 (F_s - F_s^T) / |F_s^T|^2 recorded for the student's backward. */
static int feat_step_(feat_ *f, gbtd_net *net, const gbtd_net *T, int n, double beta,
                      double *dist)
{
    double total = 0;
    for (int k = 0; k < f->n; k++) {
        const float *a = gbtd_net_value(net, f->sv[k]), *b = gbtd_net_value(T, f->tv[k]);
        const int64_t len = (int64_t)n * f->numel[k];
        float *d = f->diff[k];
        double e = 0, et = 0;
        for (int64_t i = 0; i < len; i++) {
            const double t = (double)a[i] - (double)b[i];
            e += t * t;
            et += (double)b[i] * b[i];
            if (d) d[i] = (float)t;
        }
        const double den = et > 0 ? et : 1.0;
        total += e / den;
        if (beta > 0) GBTD_CHECK(gbtd_net_add_value_grad(net, f->sv[k], d, (float)(2 * beta / den)));
    }
    *dist = total;
    return GBTD_OK;
}

int gbtd_cru_finetune(gbtd_net *net, const gbtd_dataset *train, const gbtd_dataset *test,
                      const gbtd_cru_finetune_opts *opts, gbtd_cru_epoch_info *info)
{
    if (!net || !train || !net->finalized) return gbtd_error(GBTD_EINVAL, "finetune: bad argument");
    gbtd_cru_finetune_opts o = opts ? *opts : gbtd_cru_finetune_opts_default();
    if (o.epochs < 1 || o.batch < 1 || o.new_first < 0 || !(o.lr > 0) || !(o.new_lr_scale > 0) ||
        o.kd_temp <= 0 ||
        o.kd_alpha < 0 || o.kd_alpha > 1)
        return gbtd_error(GBTD_EINVAL, "finetune: bad options");
    if (!(o.feat_beta >= 0) || !isfinite(o.feat_beta))
        return gbtd_error(GBTD_EINVAL, "finetune: feat_beta must be finite and >= 0 (got %g)",
                          o.feat_beta);
    if ((o.feat_beta > 0 || o.feat_stages) && !o.teacher)
        return gbtd_error(GBTD_EINVAL, "finetune: feature matching (feat_beta, feat_stages) needs "
                          "a teacher");
    if (train->c != net->in_c || train->h != net->in_h || train->w != net->in_w ||
        (test && (test->c != net->in_c || test->h != net->in_h || test->w != net->in_w)))
        return gbtd_error(GBTD_EINVAL, "finetune: data images are %dx%dx%d, the network takes "
                          "%dx%dx%d", train->c, train->h, train->w, net->in_c, net->in_h,
                          net->in_w);
    if (train->classes > net->classes)
        return gbtd_error(GBTD_EINVAL, "finetune: %d classes in the data, %d in the network",
                          train->classes, net->classes);
    gbtd_net *T = o.teacher;
    if (T && (T->in_c != net->in_c || T->in_h != net->in_h || T->in_w != net->in_w ||
              T->classes != net->classes))
        return gbtd_error(GBTD_EINVAL, "finetune: the teacher's input or classes differ");
    feat_ feat;
    GBTD_CHECK(feat_setup_(net, T, o.feat_stages, o.feat_beta, o.batch, &feat));
    gbtd_loader_opts lo = gbtd_loader_opts_default();
    lo.batch = o.batch;
    lo.shuffle = true;
    lo.drop_last = true;
    lo.crop_pad = o.crop_pad;
    lo.flip = o.flip;
    lo.seed = o.seed;
    float mean[4] = {0}, sd[4] = {0};
    if (o.mean && o.std) {
        memcpy(mean, o.mean, (size_t)train->c * sizeof *mean);
        memcpy(sd, o.std, (size_t)train->c * sizeof *sd);
    } else if (!gbtd_dataset_norm(train->name, mean, sd)) {
        const int src = gbtd_dataset_stats(train, mean, sd);
        if (src) {
            feat_free_(&feat);
            return src;
        }
    }
    memcpy(lo.mean, mean, sizeof mean);
    memcpy(lo.std, sd, sizeof sd);
    gbtd_loader *ld = NULL;
    int lrc = gbtd_loader_create(train, &lo, &ld);
    if (lrc) {
        feat_free_(&feat);
        return lrc;
    }
    gbtd_sgd sgd;
    memset(&sgd, 0, sizeof sgd);
    gbtd_sgd_opts so = gbtd_sgd_opts_default();
    so.momentum = o.momentum;
    so.weight_decay = o.weight_decay;
    const int k = net->classes;
    double *ps = malloc((size_t)k * sizeof *ps), *pt = malloc((size_t)k * sizeof *pt);
    float *d = malloc((size_t)o.batch * (size_t)k * sizeof *d);
    float *frozen = o.new_first > 0 ? malloc((size_t)net->nparams * sizeof *frozen) : NULL;
    if (frozen) memcpy(frozen, net->params, (size_t)net->nparams * sizeof *frozen);
    int rc = ps && pt && d && (frozen || o.new_first == 0) ? GBTD_OK : gbtd_error(GBTD_ENOMEM, "finetune: out of memory");
    if (!rc) rc = gbtd_sgd_init(&sgd, net, &so);
    int64_t per = gbtd_loader_batches(ld);
    if (o.max_steps > 0 && o.max_steps < per) per = o.max_steps;
    gbtd_lr_schedule sch;
    memset(&sch, 0, sizeof sch);
    sch.kind = GBTD_LR_COSINE;
    sch.base = o.lr;
    sch.total_steps = per * o.epochs;
    int64_t step = 0;
    gbtd_cru_epoch_info ei;
    memset(&ei, 0, sizeof ei);
    for (int e = 0; e < o.epochs && !rc; e++) {
        const bool new_only = e < o.new_first;
        double t0 = gbtd_wall_time(), lsum = 0, fsum = 0;
        int64_t hits = 0, seen = 0;
        rc = gbtd_loader_start_epoch(ld, e);
        for (int64_t b = 0; b < per && !rc; b++) {
            const float *x;
            const int32_t *y;
            int n;
            rc = gbtd_loader_next(ld, &x, &y, &n);
            if (rc || n == 0) break;
            const float *tl = NULL;
            if (T) rc = gbtd_net_forward(T, x, n, false, &tl);
            const float *sl = NULL;
            if (!rc) rc = gbtd_net_forward(net, x, n, true, &sl);
            double loss = 0;
            int corr = 0;
            if (!rc) rc = gbtd_net_loss(net, y, 0.0f, &loss, &corr);
            if (!rc && T) {
                kd_grad_(sl, tl, y, n, k, o.kd_temp, o.kd_alpha, ps, pt, d);
                rc = gbtd_net_set_dlogits(net, d);
            }
            double fd = 0;
            if (!rc && feat.n) rc = feat_step_(&feat, net, T, n, o.feat_beta, &fd);
            if (rc) break;
            gbtd_net_zero_grad(net);
            rc = gbtd_net_backward(net);
            if (rc) break;
            if (o.new_lr_scale != 1.0)
                for (int i = 0; i < net->nentries; i++) {
                    const gbtd_net_entry *E = &net->entries[i];
                    if (!gbtd_cru_entry_is_new(E) || E->kind == GBTD_ENTRY_BN_MEAN ||
                        E->kind == GBTD_ENTRY_BN_VAR)
                        continue;
                    float *g = net->grads + E->offset;
                    for (int64_t j = 0; j < E->numel; j++) g[j] *= (float)o.new_lr_scale;
                }
            rc = gbtd_sgd_step(&sgd, net->params, net->grads, gbtd_lr_at(&sch, step));
            /* frozen layers: undo the update (weight decay and momentum included) */
            if (new_only)
                for (int i = 0; i < net->nentries; i++) {
                    const gbtd_net_entry *E = &net->entries[i];
                    if (E->kind == GBTD_ENTRY_BN_MEAN || E->kind == GBTD_ENTRY_BN_VAR) continue;
                    if (gbtd_cru_entry_is_new(E)) continue;
                    memcpy(net->params + E->offset, frozen + E->offset,
                           (size_t)E->numel * sizeof(float));
                    memset(sgd.velocity + E->offset, 0, (size_t)E->numel * sizeof(float));
                }
            step++;
            lsum += loss * n;
            fsum += fd * n;
            hits += corr;
            seen += n;
            if (!rc && o.on_step && o.on_step(step, per * o.epochs, loss, o.ctx))
                rc = gbtd_error(GBTD_ECANCELLED, "finetune: stopped by the callback");
        }
        if (rc) break;
        ei.epoch = e + 1;
        ei.epochs = o.epochs;
        ei.new_only = new_only;
        ei.seconds = gbtd_wall_time() - t0;
        ei.loss = seen ? lsum / (double)seen : 0;
        ei.top1 = seen ? (double)hits / (double)seen : 0;
        ei.test_top1 = -1;
        ei.feat_dist = feat.n && seen ? fsum / (double)seen : -1;
        if (test) {
            gbtd_dataset sub = *test;
            if (o.test_limit > 0 && o.test_limit < sub.n) sub.n = o.test_limit;
            gbtd_eval_result r;
            memset(&r, 0, sizeof r);
            rc = gbtd_evaluate(net, &sub, mean, sd, 250, &r);
            if (!rc) ei.test_top1 = r.top1;
            gbtd_eval_result_free(&r);
        }
        if (!rc && o.on_epoch && o.on_epoch(&ei, o.ctx))
            rc = gbtd_error(GBTD_ECANCELLED, "finetune: stopped by the callback");
    }
    if (info) *info = ei;
    gbtd_sgd_free(&sgd);
    gbtd_loader_free(ld);
    feat_free_(&feat);
    free(ps);
    free(pt);
    free(d);
    free(frozen);
    return rc;
}

/* Loader normalisation: the given constants, the data set's published ones, or its statistics. */
int gbtd_cru_norm_(const gbtd_dataset *d, const float *mean, const float *std, float *m, float *s)
{
    memset(m, 0, 4 * sizeof *m);
    memset(s, 0, 4 * sizeof *s);
    if (mean && std) {
        memcpy(m, mean, (size_t)d->c * sizeof *m);
        memcpy(s, std, (size_t)d->c * sizeof *s);
        return GBTD_OK;
    }
    if (gbtd_dataset_norm(d->name, m, s)) return GBTD_OK;
    return gbtd_dataset_stats(d, m, s);
}

int gbtd_cru_bn_reestimate(gbtd_net *net, const gbtd_dataset *d, int64_t images, int batch,
                           const float *mean, const float *std, uint64_t seed)
{
    if (!net || !d || !net->finalized || images < 0 || batch < 0)
        return gbtd_error(GBTD_EINVAL, "bn re-estimation: bad argument");
    if (d->c != net->in_c || d->h != net->in_h || d->w != net->in_w)
        return gbtd_error(GBTD_EINVAL, "bn re-estimation: data images are %dx%dx%d, the network "
                          "takes %dx%dx%d", d->c, d->h, d->w, net->in_c, net->in_h, net->in_w);
    if (d->c > 4) return gbtd_error(GBTD_EINVAL, "bn re-estimation: more than 4 channels");
    gbtd_loader_opts lo = gbtd_loader_opts_default();
    lo.batch = batch > 0 ? batch : 128;
    if (lo.batch > d->n) lo.batch = (int)d->n;
    lo.shuffle = true;
    lo.drop_last = true;
    lo.seed = seed;
    GBTD_CHECK(gbtd_cru_norm_(d, mean, std, lo.mean, lo.std));
    gbtd_loader *ld = NULL;
    GBTD_CHECK(gbtd_loader_create(d, &lo, &ld));
    float *mom = malloc((size_t)net->nlayers * sizeof *mom + 1);
    int rc = mom ? gbtd_loader_start_epoch(ld, 0)
                 : gbtd_error(GBTD_ENOMEM, "bn re-estimation: out of memory");
    if (mom)
        for (int i = 0; i < net->nlayers; i++) mom[i] = net->layers[i].momentum;
    int64_t nb = gbtd_loader_batches(ld);
    if (images > 0 && (images + lo.batch - 1) / lo.batch < nb) nb = (images + lo.batch - 1) / lo.batch;
    for (int64_t b = 0; b < nb && !rc; b++) {
        const float *x;
        const int32_t *y;
        int n;
        rc = gbtd_loader_next(ld, &x, &y, &n);
        if (rc || n == 0) break;
        /* the k-th batch enters with weight 1/k: the running values are the plain average */
        for (int i = 0; i < net->nlayers; i++)
            if (net->layers[i].kind == GBTD_LAYER_BN) net->layers[i].momentum = 1.0f / (float)(b + 1);
        rc = gbtd_net_forward(net, x, n, true, NULL);
    }
    if (mom)
        for (int i = 0; i < net->nlayers; i++) net->layers[i].momentum = mom[i];
    free(mom);
    gbtd_loader_free(ld);
    return rc;
}

int gbtd_cru_act_init(gbtd_net *net, const gbtd_dataset *d, int64_t images, int batch,
                      const float *mean, const float *std, uint64_t seed, bool keep_others)
{
    if (!net || !net->finalized || !d)
        return gbtd_error(GBTD_EINVAL, "cru act init: bad argument");
    float *saved = keep_others ? gbtd_malloc((size_t)(net->nstate + 1) * sizeof *saved) : NULL;
    if (keep_others && !saved) return gbtd_error(GBTD_ENOMEM, "cru act init: out of memory");
    if (saved) memcpy(saved, net->state, (size_t)net->nstate * sizeof *saved);
    int rc = GBTD_OK;
    /* twice: a new layer's input changes when the new layers before it are set */
    for (int k = 0; k < 2 && !rc; k++) {
        rc = gbtd_cru_bn_reestimate(net, d, images, batch, mean, std, seed + (uint64_t)k);
        if (!rc) rc = gbtd_cru_act_passthrough(net, 3.0, NULL);
    }
    for (int i = 0; saved && i < net->nlayers; i++) { /* the others: their statistics as given */
        const gbtd_layer *L = &net->layers[i];
        if (L->kind != GBTD_LAYER_BN || strstr(L->name, ".cru_bn_")) continue;
        memcpy(net->state + L->mean, saved + L->mean, (size_t)L->c_out * sizeof *saved);
        memcpy(net->state + L->var, saved + L->var, (size_t)L->c_out * sizeof *saved);
    }
    gbtd_free(saved);
    return rc;
}

int gbtd_cru_act_passthrough(gbtd_net *net, double shift, int *count)
{
    if (count) *count = 0;
    if (!net || !net->finalized || !(shift >= 0))
        return gbtd_error(GBTD_EINVAL, "cru act passthrough: bad argument");
    int n = 0;
    for (int i = 0; i < net->nlayers; i++) {
        const gbtd_layer *L = &net->layers[i];
        if (L->kind != GBTD_LAYER_BN || !strstr(L->name, ".cru_bn_")) continue;
        float *g = net->params + L->w, *b = net->params + L->b;
        const float *m = net->state + L->mean, *v = net->state + L->var;
        for (int c = 0; c < L->c_out; c++) {
            const double sd = sqrt((double)v[c] + (double)L->eps);
            g[c] = (float)sd;
            b[c] = (float)((double)m[c] + shift * sd);
        }
        n++;
    }
    if (count) *count = n;
    return GBTD_OK;
}
