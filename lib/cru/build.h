/* gbtd cru: from factors to a network (the CRU-Net), source networks, fine-tuning.
 *
 * The CRU-Net of a source network and its factored stages (cru/stage.h) is the source graph
 * with each member replaced by, in group g of its stage (R terms of rank (r_in, r_out)):
 *     a = conv 1x1  C_in -> R r_in                       shared by the group ("layerS.cruG.conv_a")
 *     b = conv kxk  R r_in -> R r_out, R groups, stride   shared by the group ("layerS.cruG.conv_b")
 *     [BN-ReLU]                                           own, with act ("<member>.cru_bn_b")
 *     [c = conv 1x1 R r_out -> R r_out]                   own, with extra ("<member>.cru_c"), identity
 *     [BN-ReLU]                                           own, with extra and act ("<member>.cru_bn_c")
 *     d = conv 1x1 R r_out -> C_out                       own ("<member>.cru_d")
 * A basic-block member is one convolution, replaced in place (the batch norm after it is kept);
 * a bottleneck member is conv1-bn1-conv2-bn2-conv3, replaced by the chain (its bn3 is kept).
 * Weights: W_a[r r_in + a, i] = A_r[i, a], W_b[r r_out + b, a, h, w] = G_r[h, w, a, b],
 * W_d[o, r r_out + b] = B_r^(l)[o, b] / s_o (s: the folded output scale of the batch norm that
 * follows, which the network still applies). Everything else is copied from the source by name.
 * Without act, the chain computes exactly the convolution by the factored kernel.
 *
 * A CRU-Net records how to rebuild its graph in net->spec:
 *     "<source spec>|S,R,r_in,r_out,groups_of,extra,act|..."  (one "|..." per factored stage)
 * so that gbtd_cru_net_from_spec (and checkpoints, which store the spec) can rebuild it. */
#ifndef GBTD_CRU_BUILD_H
#define GBTD_CRU_BUILD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cru/stage.h"
#include "nn/data.h"
#include "nn/net.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Build the CRU-Net of src (finalised, weights loaded) with the given factored stages (their
 * layout set; models may be NULL, then the new layers keep their He initialisation) into *out
 * (finalised). Errors: GBTD_EINVAL (stages not of src, two stages with the same number),
 * GBTD_ENOMEM, layer-building errors. */
int gbtd_cru_build(const gbtd_net *src, const gbtd_cru_stage *stages, int nstages, gbtd_net *out);

/* The spec of a CRU-Net as described above, into buf. GBTD_ERANGE when it does not fit. */
int gbtd_cru_spec(const char *src_spec, const gbtd_cru_stage *stages, int nstages, char *buf,
                  size_t len);
/* Rebuild a CRU-Net's graph from its spec (weights: the source's He initialisation; load a
 * checkpoint into it). A spec without '|' builds the plain network. Errors: GBTD_EINVAL (bad
 * spec), and those of gbtd_net_from_spec / gbtd_cru_stage_find / gbtd_cru_build. */
int gbtd_cru_net_from_spec(const char *spec, gbtd_net *out);
/* True when the entry belongs to a layer the CRU-Net added (its name contains ".cru"). */
bool gbtd_cru_entry_is_new(const gbtd_net_entry *e);

/* A network from a weights file: a gbtd checkpoint (.h5, its spec, CRU-Nets included), or a
 * safetensors file of a CIFAR ResNet with PyTorch names (conv1, layerS.U.conv1/2, linear;
 * the depth from the number of units). in_c/in_h/in_w: the image shape for a safetensors file
 * (0: 3 x 32 x 32). Errors: GBTD_EFORMAT (unrecognised weights, naming the file), GBTD_EIO,
 * loading errors. */
int gbtd_cru_load_net(const char *path, int in_c, int in_h, int in_w, gbtd_net *out);

/* ---- stage outputs ---------------------------------------------------------------------- */

/* The value holding the output F_s of stage s (1-based, the layers named "layerS.*"): the output
 * of the first residual add after the last layer of the stage (the add, with its ReLU, that
 * ends the stage's last unit and feeds stage s + 1 or the head). The same value in a source
 * network (nn/arch.h names, a CIFAR ResNet from safetensors) and in its CRU-Net (whose new
 * layers are "layerS.cruG.*" and "layerS.U.*.cru_*", the adds copied), so that the two can be
 * compared stage by stage. Errors: GBTD_ENOTFOUND (no layer named "layerS.*", naming the
 * stages there are; or no add ends the stage), GBTD_EINVAL (NULL argument). */
int gbtd_cru_stage_output(const gbtd_net *net, int stage, int *value);
/* The largest S with a layer named "layerS.*" (0 when none). */
int gbtd_cru_net_stages(const gbtd_net *net);

/* ---- batch-norm re-estimation ---------------------------------------------------------- */

/* Recompute the running mean and variance of every batch norm of net from `images` training
 * images of d (0: all), in batches of `batch` (0: 128), shuffled with `seed`, normalised with
 * mean/std (NULL: the data set's constants, else its statistics): the running statistics
 * become the average over the batches of the batch statistics (each layer's momentum is set
 * to 1/k for the k-th batch and restored afterwards). Parameters are not changed. After
 * replacing convolutions by factored ones, the batch norms that follow see other statistics
 * than the source's; this puts them back in line (cheap, one forward pass per batch).
 * Errors: GBTD_EINVAL (data shape not the network's, bad sizes), GBTD_ENOMEM, network errors. */
int gbtd_cru_bn_reestimate(gbtd_net *net, const gbtd_dataset *d, int64_t images, int batch,
                           const float *mean, const float *std, uint64_t seed);

/* With act, the BN-ReLU layers the CRU-Net adds (".cru_bn_b", ".cru_bn_c") start as BN with
 * gamma 1, beta 0: the unit is then far from the factored function. This sets each of them,
 * from its running statistics (re-estimate them first), to gamma = sqrt(var + eps) and
 * beta = mean + shift sqrt(var + eps): the layer then adds shift standard deviations to its
 * input, the ReLU passes all but the values more than `shift` deviations below the mean, and the
 * constant it adds is removed by the (re-estimated) batch norm after the member. Returns the
 * number of layers set in *count (may be NULL). Errors: GBTD_EINVAL. */
int gbtd_cru_act_passthrough(gbtd_net *net, double shift, int *count);

/* Sets up the new BN-ReLU layers of an act CRU-Net from data: re-estimates the statistics of
 * every batch norm on `images` images of d (batch, mean, std, seed as in gbtd_cru_bn_reestimate,
 * seed + 1 the second time) and sets the new layers to pass their input on (shift 3), twice
 * (each new layer's input changes when those before it are set). keep_others: afterwards every
 * other batch norm gets back the statistics it had (they belong to the source, whose responses
 * gbtd_cru_refit reproduces); else they keep the re-estimated ones (then re-estimate once more:
 * the last pass-through moved their inputs). Errors: GBTD_EINVAL, GBTD_ENOMEM, network errors. */
int gbtd_cru_act_init(gbtd_net *net, const gbtd_dataset *d, int64_t images, int batch,
                      const float *mean, const float *std, uint64_t seed, bool keep_others);

/* ---- response refit --------------------------------------------------------------------- */

typedef struct gbtd_cru_refit_opts {
    int64_t images;          /* training images used (1024; at most the data set's) */
    int batch;               /* 128 */
    double ridge;            /* 1e-3: lambda = ridge tr(G) / K, pulling towards the current weights */
    bool intercept;          /* false: also fit a constant per output channel, folded into the
                              * running mean of the batch norm after cru_d (members without one
                              * are fitted without) */
    const float *mean, *std; /* normalisation (NULL: the data set's constants, else its statistics) */
    uint64_t seed;           /* which images (a seeded random order) */
    /* after each member (1-based i of n), its relative response error before and after;
     * non-zero stops (GBTD_ECANCELLED) */
    int (*on_member)(const char *layer, int i, int n, double before, double after, void *ctx);
    void *ctx;
} gbtd_cru_refit_opts;

gbtd_cru_refit_opts gbtd_cru_refit_opts_default(void);

typedef struct gbtd_cru_refit_info {
    int members;                     /* own 1x1s refitted */
    int64_t images;
    double error_before, error_after; /* mean over members of |W Z - Y|^2 / |Y|^2 */
    double seconds;
} gbtd_cru_refit_info;

/* Response refit: the kernel fit of a stage minimises the error of the kernels, not of what the
 * network computes from real inputs. For every member of the CRU-Net cru (in network order),
 * this re-solves its own output 1x1 "<member>.cru_d" (weights W, C_out x K) by ridge least
 * squares on real images:
 *     W = argmin sum |W Z - Y|^2 + lambda |W - W_old|^2,
 * Z the input of cru_d in the CRU-Net (its shared layers' response, over all pixels of the
 * images) and Y the response of the convolution it replaces in the source network src
 * ("<member>" or, for a bottleneck unit, "<member>.conv3", before its batch norm) on the same
 * images, both networks in evaluation mode. Y is the source's own response to its own input,
 * so each member also corrects the drift the members before it leave (they are refitted
 * first). The batch norm after the member is the source's, so run this before re-estimating
 * batch-norm statistics. Only cru_d changes. Errors: GBTD_EINVAL (bad options, data of another
 * shape, a cru_d without its source convolution), GBTD_ENOTFOUND (no CRU member), GBTD_ENONFINITE,
 * GBTD_ENUMERIC, GBTD_ECANCELLED, GBTD_ENOMEM, network errors. */
int gbtd_cru_refit(gbtd_net *cru, gbtd_net *src, const gbtd_dataset *d,
                   const gbtd_cru_refit_opts *opts, gbtd_cru_refit_info *info);

/* ---- fine-tuning ------------------------------------------------------------------------ */

#define GBTD_CRU_STAGE_BIT(s) (1u << (unsigned)(s))

typedef struct gbtd_cru_epoch_info {
    int epoch, epochs;        /* 1-based */
    bool new_only;            /* this epoch trained only the CRU layers */
    double loss, top1;        /* training mean loss and top-1 */
    double test_top1;         /* -1 without a test set */
    double feat_dist;         /* training mean over the epoch's batches of the feature distance
                                 sum_s |F_s - F_s^T|^2 / |F_s^T|^2 over the matched stages (see
                                 feat_beta; computed with a teacher even when feat_beta = 0);
                                 -1 when no stage is matched */
    double seconds;           /* of this epoch's training */
} gbtd_cru_epoch_info;

typedef struct gbtd_cru_finetune_opts {
    int epochs;               /* 2 (including new_first) */
    int new_first;            /* first epochs that train only the new layers (0) */
    int64_t max_steps;        /* 0: all; else steps per epoch at most */
    int batch;                /* 128 */
    double lr;                /* 0.01, cosine to 0 over all steps */
    double new_lr_scale;      /* 0.1: the gradients of the layers the CRU-Net added are scaled by
                                 this (their learning rate relative to the others'). A factored
                                 chain followed by batch norm has ~10x the relative gradient
                                 |g| / |w| of the convolution it replaces (ResNet-20: ~1 against
                                 ~0.1), and at the source's rate it leaves its start at once */
    double weight_decay;      /* 5e-4 */
    double momentum;          /* 0.9 */
    gbtd_net *teacher;        /* NULL, or the source network for distillation */
    double kd_temp;           /* 4 */
    double kd_alpha;          /* 0.5: loss = (1 - a) CE + a T^2 KL(teacher || student) */
    double feat_beta;         /* 0 (off): feature matching with the teacher, loss +=
                                 beta sum_s |F_s - F_s^T|^2 / |F_s^T|^2, F_s the student's
                                 stage-s output (training forward), F_s^T the teacher's (its
                                 forward with running statistics), squared norms over the batch;
                                 normalised per stage so that stages of different width and
                                 magnitude weigh alike and beta is scale-free */
    unsigned feat_stages;     /* stages matched: 0 = every stage found in both networks with
                                 equal output shapes; else bit GBTD_CRU_STAGE_BIT(s) selects
                                 stage s (1 to 31), each must exist in both with equal shapes */
    uint64_t seed;            /* 0 */
    int crop_pad;             /* 0 */
    bool flip;                /* false */
    const float *mean, *std;  /* normalisation (NULL: the data set's constants) */
    int64_t test_limit;       /* 0: the whole test set each epoch */
    int (*on_epoch)(const gbtd_cru_epoch_info *info, void *ctx); /* non-zero stops */
    int (*on_step)(int64_t step, int64_t steps, double loss, void *ctx);
    void *ctx;
} gbtd_cru_finetune_opts;

gbtd_cru_finetune_opts gbtd_cru_finetune_opts_default(void);

/* Fine-tune net on train (test may be NULL) with SGD, cross-entropy and optionally
 * distillation from opts->teacher (same input shape and classes; evaluated with its running
 * statistics): softened logits (kd_alpha) and/or stage outputs (feat_beta). info (may be NULL)
 * receives the last epoch. Errors: GBTD_EINVAL (shapes of the data or teacher not matching the
 * network, bad options: feat_beta < 0 or without a teacher, a feature stage missing from either
 * network or of other shape in the teacher, none found in both), GBTD_ECANCELLED (a callback
 * stopped it), GBTD_ENOMEM, network errors. */
int gbtd_cru_finetune(gbtd_net *net, const gbtd_dataset *train, const gbtd_dataset *test,
                      const gbtd_cru_finetune_opts *opts, gbtd_cru_epoch_info *info);

#ifdef __cplusplus
}
#endif
#endif
