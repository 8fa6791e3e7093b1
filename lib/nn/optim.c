/* gbtd nn: SGD with momentum and learning-rate schedules. */
#include "nn/optim.h"

#include <math.h>
#include <string.h>

#include "core/status.h"

gbtd_sgd_opts gbtd_sgd_opts_default(void)
{
    gbtd_sgd_opts o = {0.9, 5e-4, false, false};
    return o;
}

void gbtd_sgd_free(gbtd_sgd *s)
{
    if (!s) return;
    gbtd_free(s->velocity);
    gbtd_free(s->seg_off);
    gbtd_free(s->seg_len);
    gbtd_free(s->seg_decay);
    memset(s, 0, sizeof *s);
}

int gbtd_sgd_init(gbtd_sgd *s, const gbtd_net *net, const gbtd_sgd_opts *opts)
{
    if (!s) return gbtd_error(GBTD_EINVAL, "sgd_init: NULL optimiser");
    memset(s, 0, sizeof *s);
    if (!net || !net->finalized) return gbtd_error(GBTD_EINVAL, "sgd_init: network not finalised");
    s->o = opts ? *opts : gbtd_sgd_opts_default();
    if (!(s->o.momentum >= 0 && s->o.momentum < 1) || !(s->o.weight_decay >= 0))
        return gbtd_error(GBTD_EINVAL, "sgd_init: momentum %g must be in [0, 1), weight decay %g "
                          ">= 0", s->o.momentum, s->o.weight_decay);
    s->n = net->nparams;
    s->velocity = gbtd_calloc((size_t)s->n + 1, sizeof(float));
    s->seg_off = gbtd_malloc((size_t)(net->nentries + 1) * sizeof(int64_t));
    s->seg_len = gbtd_malloc((size_t)(net->nentries + 1) * sizeof(int64_t));
    s->seg_decay = gbtd_malloc((size_t)(net->nentries + 1) * sizeof(bool));
    if (!s->velocity || !s->seg_off || !s->seg_len || !s->seg_decay) {
        gbtd_sgd_free(s);
        return GBTD_ENOMEM;
    }
    for (int i = 0; i < net->nentries; i++) {
        const gbtd_net_entry *e = &net->entries[i];
        if (e->kind == GBTD_ENTRY_BN_MEAN || e->kind == GBTD_ENTRY_BN_VAR) continue;
        bool decay = e->kind == GBTD_ENTRY_WEIGHT || s->o.decay_bn_bias;
        /* merge with the previous range when contiguous and of the same kind */
        if (s->nseg > 0 && s->seg_decay[s->nseg - 1] == decay &&
            s->seg_off[s->nseg - 1] + s->seg_len[s->nseg - 1] == e->offset) {
            s->seg_len[s->nseg - 1] += e->numel;
        } else {
            s->seg_off[s->nseg] = e->offset;
            s->seg_len[s->nseg] = e->numel;
            s->seg_decay[s->nseg] = decay;
            s->nseg++;
        }
    }
    return GBTD_OK;
}

int gbtd_sgd_step(gbtd_sgd *s, float *params, const float *grads, double lr)
{
    if (!s || !s->velocity || !params || !grads || !(lr >= 0))
        return gbtd_error(GBTD_EINVAL, "sgd_step: bad argument (lr %g)", lr);
    const float mu = (float)s->o.momentum, a = (float)lr;
    const bool nest = s->o.nesterov;
    for (int k = 0; k < s->nseg; k++) {
        const float wd = s->seg_decay[k] ? (float)s->o.weight_decay : 0.0f;
        float *p = params + s->seg_off[k], *v = s->velocity + s->seg_off[k];
        const float *g = grads + s->seg_off[k];
        const int64_t len = s->seg_len[k];
#pragma omp parallel for schedule(static) if (len > 65536)
        for (int64_t i = 0; i < len; i++) {
            float d = g[i] + wd * p[i];
            float vi = mu * v[i] + d;
            v[i] = vi;
            p[i] -= a * (nest ? d + mu * vi : vi);
        }
    }
    return GBTD_OK;
}

double gbtd_lr_at(const gbtd_lr_schedule *s, int64_t step)
{
    if (!s) return 0;
    if (s->warmup_steps > 0 && step < s->warmup_steps)
        return s->base * (double)(step + 1) / (double)s->warmup_steps;
    switch (s->kind) {
    case GBTD_LR_STEP: {
        double lr = s->base;
        for (int i = 0; i < s->nmilestones; i++)
            if (step >= s->milestones[i]) lr *= s->gamma;
        return lr;
    }
    case GBTD_LR_COSINE: {
        int64_t t = step - s->warmup_steps, T = s->total_steps - s->warmup_steps;
        if (T <= 0) return s->base;
        if (t > T) t = T;
        return s->base * 0.5 * (1.0 + cos(3.14159265358979323846 * (double)t / (double)T));
    }
    default:
        return s->base;
    }
}
