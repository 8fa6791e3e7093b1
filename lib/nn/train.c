/* gbtd nn: training step and loop, evaluation. */
#include "nn/train.h"

#include <math.h>
#include <string.h>
#include <time.h>

#include "core/status.h"

static double now_(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void gbtd_eval_result_free(gbtd_eval_result *r)
{
    if (!r) return;
    gbtd_free(r->confusion);
    gbtd_free(r->pred);
    memset(r, 0, sizeof *r);
}

/* Normalisation constants: given, else the data set's named ones, else its statistics. */
static int norm_(const gbtd_dataset *d, const float *mean, const float *std, float *m, float *s)
{
    if (mean && std) {
        memcpy(m, mean, (size_t)d->c * sizeof(float));
        memcpy(s, std, (size_t)d->c * sizeof(float));
        return GBTD_OK;
    }
    if (gbtd_dataset_norm(d->name, m, s)) return GBTD_OK;
    return gbtd_dataset_stats(d, m, s);
}

int gbtd_evaluate(gbtd_net *net, const gbtd_dataset *d, const float *mean, const float *std,
                  int batch, gbtd_eval_result *out)
{
    if (!out) return gbtd_error(GBTD_EINVAL, "evaluate: NULL result");
    memset(out, 0, sizeof *out);
    if (!net || !net->finalized || !d || d->n < 1 || batch < 1)
        return gbtd_error(GBTD_EINVAL, "evaluate: bad network, data set or batch size");
    if (d->c != net->in_c || d->h != net->in_h || d->w != net->in_w)
        return gbtd_error(GBTD_ESHAPE, "evaluate: images are %dx%dx%d, the network takes %dx%dx%d",
                          d->c, d->h, d->w, net->in_c, net->in_h, net->in_w);
    if (d->classes > net->classes)
        return gbtd_error(GBTD_ESHAPE, "evaluate: %d classes in the data, %d network outputs",
                          d->classes, net->classes);
    gbtd_loader_opts lo = gbtd_loader_opts_default();
    lo.batch = batch;
    GBTD_CHECK(norm_(d, mean, std, lo.mean, lo.std));
    const int k = net->classes;
    out->classes = k;
    out->confusion = gbtd_calloc((size_t)k * (size_t)k, sizeof(int64_t));
    out->pred = gbtd_malloc((size_t)d->n * sizeof(int32_t));
    if (!out->confusion || !out->pred) {
        gbtd_eval_result_free(out);
        return GBTD_ENOMEM;
    }
    gbtd_loader *l;
    int rc = gbtd_loader_create(d, &lo, &l);
    if (rc) {
        gbtd_eval_result_free(out);
        return rc;
    }
    rc = gbtd_loader_start_epoch(l, 0);
    double loss_sum = 0;
    int64_t hit1 = 0, hit5 = 0, seen = 0;
    while (!rc) {
        const float *x, *lg;
        const int32_t *y;
        int n;
        rc = gbtd_loader_next(l, &x, &y, &n);
        if (rc || n == 0) break;
        rc = gbtd_net_forward(net, x, n, false, &lg);
        double loss = 0;
        if (!rc) rc = gbtd_net_loss(net, y, 0.0f, &loss, NULL);
        if (rc) break;
        loss_sum += loss * n;
        for (int i = 0; i < n; i++) {
            const float *r = lg + (int64_t)i * k;
            int best = 0, above = 0;
            for (int j = 1; j < k; j++)
                if (r[j] > r[best]) best = j;
            for (int j = 0; j < k; j++)
                if (r[j] > r[y[i]] || (r[j] == r[y[i]] && j < y[i])) above++;
            hit1 += best == y[i];
            hit5 += above < 5;
            out->confusion[(int64_t)y[i] * k + best]++;
            out->pred[seen + i] = best;
        }
        seen += n;
    }
    gbtd_loader_free(l);
    if (rc) {
        gbtd_eval_result_free(out);
        return rc;
    }
    out->n = seen;
    out->loss = loss_sum / (double)seen;
    out->top1 = (double)hit1 / (double)seen;
    out->top5 = (double)hit5 / (double)seen;
    return GBTD_OK;
}

gbtd_train_opts gbtd_train_opts_default(void)
{
    gbtd_train_opts o;
    memset(&o, 0, sizeof o);
    o.epochs = 10;
    o.batch = 128;
    o.lr = 0.1;
    o.schedule = GBTD_LR_COSINE;
    o.gamma = 0.1;
    o.sgd = gbtd_sgd_opts_default();
    o.prefetch = true;
    return o;
}

int gbtd_train_step(gbtd_net *net, gbtd_sgd *opt, const float *x, const int32_t *y, int n,
                    double lr, float label_smoothing, double *loss, int *correct)
{
    GBTD_CHECK(gbtd_net_forward(net, x, n, true, NULL));
    GBTD_CHECK(gbtd_net_loss(net, y, label_smoothing, loss, correct));
    gbtd_net_zero_grad(net);
    GBTD_CHECK(gbtd_net_backward(net));
    /* a data-parallel driver all-reduces net->grads here */
    return gbtd_sgd_step(opt, net->params, net->grads, lr);
}

int gbtd_train_run(gbtd_net *net, gbtd_sgd *opt, gbtd_train_state *st, const gbtd_dataset *train,
                   const gbtd_dataset *test, const gbtd_train_opts *opts)
{
    gbtd_train_opts o = opts ? *opts : gbtd_train_opts_default();
    if (!net || !net->finalized || !opt || !opt->velocity || !st || !train)
        return gbtd_error(GBTD_EINVAL, "train_run: NULL or unprepared argument");
    if (o.epochs < 1 || o.batch < 2 || !(o.lr >= 0) || o.warmup_epochs < 0)
        return gbtd_error(GBTD_EINVAL, "train_run: epochs %d, batch %d (>= 2), lr %g out of range",
                          o.epochs, o.batch, o.lr);
    if (train->c != net->in_c || train->h != net->in_h || train->w != net->in_w)
        return gbtd_error(GBTD_ESHAPE, "train_run: images are %dx%dx%d, the network takes "
                          "%dx%dx%d", train->c, train->h, train->w, net->in_c, net->in_h,
                          net->in_w);
    if (train->classes > net->classes)
        return gbtd_error(GBTD_ESHAPE, "train_run: %d classes in the data, %d network outputs",
                          train->classes, net->classes);
    gbtd_loader_opts lo = gbtd_loader_opts_default();
    lo.batch = o.batch;
    lo.shuffle = true;
    lo.drop_last = train->n >= o.batch; /* every step sees a full batch (BN statistics) */
    lo.crop_pad = o.crop_pad;
    lo.flip = o.flip;
    lo.seed = o.seed;
    lo.prefetch = o.prefetch;
    float mean[4], sd[4];
    GBTD_CHECK(norm_(train, o.mean, o.std, mean, sd));
    memcpy(lo.mean, mean, sizeof mean);
    memcpy(lo.std, sd, sizeof sd);
    gbtd_loader *l;
    GBTD_CHECK(gbtd_loader_create(train, &lo, &l));
    const int64_t per = gbtd_loader_batches(l);
    gbtd_lr_schedule sch;
    memset(&sch, 0, sizeof sch);
    sch.kind = o.schedule;
    sch.base = o.lr;
    sch.total_steps = per * o.epochs;
    if (o.max_steps > 0 && o.max_steps < sch.total_steps) sch.total_steps = o.max_steps;
    sch.warmup_steps = (int64_t)(o.warmup_epochs * (double)per);
    sch.gamma = o.gamma;
    sch.nmilestones = o.nmilestones < GBTD_LR_MAX_MILESTONES ? o.nmilestones
                                                             : GBTD_LR_MAX_MILESTONES;
    for (int i = 0; i < sch.nmilestones; i++) sch.milestones[i] = (int64_t)o.milestones[i] * per;
    int rc = GBTD_OK;
    const double t0 = now_();
    int64_t steps_run = 0;
    for (int64_t e = st->epoch; e < o.epochs && !rc; e++) {
        if (o.max_steps > 0 && st->step >= o.max_steps) break;
        const double te = now_();
        rc = gbtd_loader_start_epoch(l, (int)e);
        double loss_sum = 0, lr = 0;
        int64_t hits = 0, seen = 0, estep = 0;
        while (!rc) {
            if (o.max_steps > 0 && st->step >= o.max_steps) break;
            const float *x;
            const int32_t *y;
            int n, correct = 0;
            rc = gbtd_loader_next(l, &x, &y, &n);
            if (rc || n == 0) break;
            lr = gbtd_lr_at(&sch, st->step);
            double loss = 0;
            rc = gbtd_train_step(net, opt, x, y, n, lr, o.label_smoothing, &loss, &correct);
            if (!rc && !isfinite(loss))
                rc = gbtd_error(GBTD_ENONFINITE, "train: loss became %g at step %lld (learning "
                                "rate %g too high?)", loss, (long long)st->step, lr);
            loss_sum += loss * n;
            hits += correct;
            seen += n;
            st->step++;
            steps_run++;
            estep++;
            if (!rc && o.on_step) {
                const double t = now_();
                gbtd_step_info si;
                si.epoch = (int)(e + 1);
                si.epochs = o.epochs;
                si.step = st->step;
                si.steps = sch.total_steps;
                si.epoch_step = estep;
                si.epoch_steps = per;
                si.loss = loss_sum / (double)seen;
                si.top1 = (double)hits / (double)seen;
                si.lr = lr;
                si.images_per_s = t > te ? (double)seen / (t - te) : 0;
                si.eta_s = (t - t0) / (double)steps_run * (double)(sch.total_steps - st->step);
                if (o.on_step(&si, o.ctx))
                    rc = gbtd_error(GBTD_ECANCELLED, "train: stopped by the step callback");
            }
        }
        if (rc) break;
        st->epoch = e + 1;
        gbtd_epoch_info info;
        memset(&info, 0, sizeof info);
        info.epoch = (int)(e + 1);
        info.epochs = o.epochs;
        info.step = st->step;
        info.steps = sch.total_steps;
        info.loss = seen ? loss_sum / (double)seen : 0;
        info.top1 = seen ? (double)hits / (double)seen : 0;
        info.lr = lr;
        double t1 = now_();
        info.seconds = t1 - te;
        info.images_per_s = info.seconds > 0 ? (double)seen / info.seconds : 0;
        double per_step = steps_run ? (t1 - t0) / (double)steps_run : 0;
        info.eta_s = per_step * (double)(sch.total_steps - st->step);
        info.test_loss = info.test_top1 = -1;
        if (test) {
            gbtd_eval_result r;
            rc = gbtd_evaluate(net, test, mean, sd, o.batch, &r);
            if (rc) break;
            info.test_loss = r.loss;
            info.test_top1 = r.top1;
            gbtd_eval_result_free(&r);
        }
        if (o.on_epoch && o.on_epoch(&info, o.ctx))
            rc = gbtd_error(GBTD_ECANCELLED, "train: stopped by the epoch callback");
    }
    gbtd_loader_free(l);
    return rc;
}
