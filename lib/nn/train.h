/* gbtd nn: training loop, evaluation, checkpoints.
 *
 * A step is separable: gbtd_train_step = gbtd_net_forward + gbtd_net_loss + gbtd_net_zero_grad
 * + gbtd_net_backward + gbtd_sgd_step; a data-parallel driver calls the parts itself and
 * all-reduces net->grads before the update. The loop is deterministic for a given seed and
 * thread count (the data order and augmentation depend on the seed and epoch only).
 *
 * Checkpoints are HDF5 files (docs/networks.md, "Checkpoints"): root attributes format =
 * "gbtd-checkpoint", version, spec, epoch, step, seed; datasets /params/<name>,
 * /buffers/<name> (batch-norm running statistics) and /optim/velocity. Files with another
 * version are refused with a hint. */
#ifndef GBTD_NN_TRAIN_H
#define GBTD_NN_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nn/data.h"
#include "nn/net.h"
#include "nn/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GBTD_CHECKPOINT_VERSION 1

typedef struct gbtd_eval_result {
    int64_t n;           /* images evaluated */
    int classes;
    double loss;         /* mean cross-entropy */
    double top1, top5;   /* fractions in [0, 1] */
    int64_t *confusion;  /* classes x classes, row = true label, column = prediction */
    int32_t *pred;       /* n top-1 predictions, in data-set order */
} gbtd_eval_result;

void gbtd_eval_result_free(gbtd_eval_result *r);

/* Evaluate (running batch-norm statistics) on every image of d, normalised with mean/std
 * (c values each; NULL: the data set's named constants, else its own statistics), in batches
 * of `batch`. */
int gbtd_evaluate(gbtd_net *net, const gbtd_dataset *d, const float *mean, const float *std,
                  int batch, gbtd_eval_result *out);

typedef struct gbtd_epoch_info {
    int epoch, epochs;        /* 1-based epoch just finished, total */
    int64_t step, steps;      /* steps done, total */
    double loss, top1;        /* training mean loss and top-1 over the epoch */
    double lr;                /* learning rate of the last step */
    double seconds, images_per_s, eta_s;
    double test_loss, test_top1; /* -1 when no test set */
} gbtd_epoch_info;

/* Progress inside an epoch, for gbtd_train_opts.on_step. */
typedef struct gbtd_step_info {
    int epoch, epochs;                /* 1-based epoch in progress, total */
    int64_t step, steps;              /* steps done (all epochs), total */
    int64_t epoch_step, epoch_steps;  /* steps done in this epoch, steps per epoch */
    double loss, top1;                /* mean loss and top-1 of this epoch's steps so far */
    double lr, images_per_s, eta_s;   /* last step's rate; this epoch's speed; time left */
} gbtd_step_info;

typedef struct gbtd_train_opts {
    int epochs;              /* 10 */
    int batch;               /* 128 */
    double lr;               /* 0.1 peak learning rate */
    gbtd_lr_kind schedule;   /* GBTD_LR_COSINE */
    double warmup_epochs;    /* 0 (may be fractional) */
    int nmilestones;         /* STEP: epochs at which lr *= gamma */
    int milestones[GBTD_LR_MAX_MILESTONES];
    double gamma;            /* 0.1 */
    gbtd_sgd_opts sgd;       /* momentum 0.9, weight decay 5e-4, no decay on BN and biases */
    float label_smoothing;   /* 0 */
    uint64_t seed;           /* 0: data order, augmentation and initialisation */
    int crop_pad;            /* 0: no random crop (4 is usual for CIFAR) */
    bool flip;               /* false */
    int64_t max_steps;       /* 0: all; else stop after this many steps in total */
    const float *mean, *std; /* normalisation (NULL: data set constants) */
    bool prefetch;           /* true */
    /* called after every epoch; a non-zero return stops training (GBTD_ECANCELLED) */
    int (*on_epoch)(const gbtd_epoch_info *info, void *ctx);
    void *ctx;
    /* called after every step (NULL: not), with the same ctx; a non-zero return stops training
     * (GBTD_ECANCELLED) */
    int (*on_step)(const gbtd_step_info *info, void *ctx);
} gbtd_train_opts;

gbtd_train_opts gbtd_train_opts_default(void);

/* Position of a run, saved in checkpoints so that a run resumes where it stopped. */
typedef struct gbtd_train_state {
    int64_t epoch; /* epochs completed */
    int64_t step;  /* steps completed */
    uint64_t seed;
} gbtd_train_state;

/* One step on a batch (forward, loss, zero_grad, backward, SGD update at lr). */
int gbtd_train_step(gbtd_net *net, gbtd_sgd *opt, const float *x, const int32_t *y, int n,
                    double lr, float label_smoothing, double *loss, int *correct);

/* Train from st->epoch to opts->epochs on `train`, evaluating on `test` (may be NULL) after
 * every epoch. st is advanced. opt must have been initialised for net. */
int gbtd_train_run(gbtd_net *net, gbtd_sgd *opt, gbtd_train_state *st, const gbtd_dataset *train,
                   const gbtd_dataset *test, const gbtd_train_opts *opts);

/* ---- checkpoints and weights files ----------------------------------------------------- */

/* Write params, running statistics, velocity (opt may be NULL) and state (may be NULL) to an
 * HDF5 file (written to a temporary name and renamed). */
int gbtd_checkpoint_save(const char *path, const gbtd_net *net, const gbtd_sgd *opt,
                         const gbtd_train_state *st);
/* Read the spec string recorded in a checkpoint (to build the network before loading). */
int gbtd_checkpoint_spec(const char *path, char *spec, size_t len);
/* Load into a finalised network of the same spec (every tensor must be present with its
 * shape: GBTD_ENOTFOUND / GBTD_ESHAPE otherwise). opt and st may be NULL. Errors also:
 * GBTD_EFORMAT (not a gbtd checkpoint), GBTD_EUNSUPPORTED (another version). */
int gbtd_checkpoint_load(const char *path, gbtd_net *net, gbtd_sgd *opt, gbtd_train_state *st);
/* Load parameters and running statistics from a safetensors file whose names match the
 * network's (PyTorch state_dict names); tensors the network lacks are an error, as are
 * missing ones. */
int gbtd_net_load_safetensors(gbtd_net *net, const char *path);
/* Write parameters and running statistics as float32 safetensors (PyTorch-loadable). */
int gbtd_net_save_safetensors(const gbtd_net *net, const char *path);

#ifdef __cplusplus
}
#endif
#endif
