/* gbtd nn: SGD with momentum (PyTorch semantics) over the parameter slab, and learning-rate
 * schedules.
 *
 * One step, for every parameter p with gradient g (lambda = weight decay where it applies):
 *     d = g + lambda p;   v = mu v + d;   d = nesterov ? d + mu v : v;   p = p - lr d
 * (torch.optim.SGD with dampening 0). Weight decay applies to conv and linear weights always,
 * and to batch-norm parameters and biases only when decay_bn_bias is set. The update is one
 * loop over the slab, so the gradients may be all-reduced across processes before it. */
#ifndef GBTD_NN_OPTIM_H
#define GBTD_NN_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "nn/net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gbtd_sgd_opts {
    double momentum;     /* mu, 0.9 */
    double weight_decay; /* lambda, 5e-4 */
    bool nesterov;       /* false */
    bool decay_bn_bias;  /* false: no decay on batch-norm parameters and biases */
} gbtd_sgd_opts;

gbtd_sgd_opts gbtd_sgd_opts_default(void);

typedef struct gbtd_sgd {
    gbtd_sgd_opts o;
    int64_t n;
    float *velocity;  /* n values, the momentum buffer (saved in checkpoints) */
    int nseg;         /* parameter ranges and whether they are decayed */
    int64_t *seg_off, *seg_len;
    bool *seg_decay;
} gbtd_sgd;

/* For a finalised network. Errors: GBTD_EINVAL, GBTD_ENOMEM. */
int gbtd_sgd_init(gbtd_sgd *s, const gbtd_net *net, const gbtd_sgd_opts *opts);
void gbtd_sgd_free(gbtd_sgd *s);
/* One update of params (n values) from grads with learning rate lr. */
int gbtd_sgd_step(gbtd_sgd *s, float *params, const float *grads, double lr);

typedef enum gbtd_lr_kind {
    GBTD_LR_CONSTANT = 0,
    GBTD_LR_STEP,   /* base * gamma^(number of milestones passed) */
    GBTD_LR_COSINE  /* base * (1 + cos(pi t / T)) / 2 after the warm-up */
} gbtd_lr_kind;

#define GBTD_LR_MAX_MILESTONES 8

typedef struct gbtd_lr_schedule {
    gbtd_lr_kind kind;
    double base;            /* peak learning rate */
    int64_t total_steps;    /* T (cosine) */
    int64_t warmup_steps;   /* linear warm-up from base / warmup_steps to base */
    int nmilestones;        /* STEP: steps at which lr is multiplied by gamma */
    int64_t milestones[GBTD_LR_MAX_MILESTONES];
    double gamma;
} gbtd_lr_schedule;

/* Learning rate of step `step` (0-based). */
double gbtd_lr_at(const gbtd_lr_schedule *s, int64_t step);

#ifdef __cplusplus
}
#endif
#endif
