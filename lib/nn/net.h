/* gbtd nn: a network as a list of layers over named activation values, with every trainable
 * parameter in one float32 slab (and its gradient in a second slab of the same layout), and the
 * batch-norm running statistics in a third ("state") slab.
 *
 * A network is built layer by layer (gbtd_net_add_* below, or from a spec string by
 * gbtd_net_from_spec in nn/arch.h), then finalised (slabs allocated). Values are numbered:
 * value 0 is the input image (C x H x W per image); every layer produces one new value.
 * Activations are NCHW float32.
 *
 * Weight sharing: a convolution may reuse the weight of an earlier convolution (same shape,
 * any stride); both layers then read the same slab range and both add their gradient into the
 * same gradient range, so the gradient of a shared weight is the sum over its uses.
 *
 * One training step is separable into its parts, so that data-parallel training can all-reduce
 * net->grads between backward and update:
 *     gbtd_net_forward(net, x, n, true);        // caches what backward needs
 *     gbtd_net_loss(net, labels, &loss, ...);   // softmax cross-entropy, seeds dlogits
 *     gbtd_net_add_value_grad(net, v, g, 1);    // optional: extra loss terms on values
 *     gbtd_net_zero_grad(net);
 *     gbtd_net_backward(net);                   // accumulates into net->grads
 *     (all-reduce net->grads here)
 *     gbtd_sgd_step(...);                       // nn/optim.h, one loop over the slab
 */
#ifndef GBTD_NN_NET_H
#define GBTD_NN_NET_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gbtd_layer_kind {
    GBTD_LAYER_CONV = 1,    /* convolution without bias, any groups, square kernel */
    GBTD_LAYER_BN,          /* batch norm, optionally with a fused ReLU after it */
    GBTD_LAYER_RELU,        /* ReLU */
    GBTD_LAYER_MAXPOOL,     /* max pool k x k, stride, padding */
    GBTD_LAYER_GAP,         /* global average pool: C x H x W -> C x 1 x 1 */
    GBTD_LAYER_LINEAR,      /* fully connected with bias: C -> classes */
    GBTD_LAYER_ADD,         /* out = a + b (optionally followed by ReLU) */
    GBTD_LAYER_SHORTCUT_A   /* option-A shortcut: x[:, :, ::s, ::s] zero-padded in channels */
} gbtd_layer_kind;

/* Kind of a named slab entry (decides weight decay and initialisation). */
typedef enum gbtd_entry_kind {
    GBTD_ENTRY_WEIGHT = 1, /* conv / linear weight (decayed) */
    GBTD_ENTRY_BIAS,       /* linear bias */
    GBTD_ENTRY_BN_WEIGHT,  /* batch-norm gamma */
    GBTD_ENTRY_BN_BIAS,    /* batch-norm beta */
    GBTD_ENTRY_BN_MEAN,    /* running mean (state slab) */
    GBTD_ENTRY_BN_VAR      /* running variance (state slab) */
} gbtd_entry_kind;

#define GBTD_NET_NAME_LEN 80

/* One named tensor in the parameter slab (kinds WEIGHT..BN_BIAS) or the state slab (BN_MEAN,
 * BN_VAR). Names follow PyTorch state_dict conventions ("layer1.0.conv1.weight"). */
typedef struct gbtd_net_entry {
    char name[GBTD_NET_NAME_LEN];
    gbtd_entry_kind kind;
    int64_t offset; /* in floats, into params (or state) */
    int ndim;
    int64_t shape[4];
    int64_t numel;
} gbtd_net_entry;

typedef struct gbtd_layer {
    gbtd_layer_kind kind;
    char name[GBTD_NET_NAME_LEN]; /* the module name ("layer1.0.conv1"); "" for parameter-free */
    int in, in2, out;             /* value ids (in2 only for ADD, else -1) */
    int c_in, c_out;              /* channels in / out */
    int k, stride, pad, groups;   /* CONV and MAXPOOL geometry */
    bool relu;                    /* BN and ADD: ReLU fused after it */
    float eps, momentum;          /* BN: y = (x - mean) / sqrt(var + eps); running <- (1-m) r + m b */
    int64_t w, b;                 /* slab offsets: CONV/LINEAR weight and bias, BN gamma and beta; -1 */
    int64_t mean, var;            /* BN: offsets of the running statistics in the state slab */
    int shared_with;              /* CONV: index of the layer that owns the weight, or -1 */
    int64_t params;               /* parameters this layer adds (0 when it reuses a weight) */
    int64_t state;                /* running statistics it adds (BN: 2 C) */
    int64_t macs;                 /* multiply-adds per image (forward) */
} gbtd_layer;

typedef struct gbtd_value {
    int c, h, w;  /* per-image shape */
    int producer; /* layer index, -1 for the input */
} gbtd_value;

typedef struct gbtd_net_runtime gbtd_net_runtime;

typedef struct gbtd_net {
    char spec[128];        /* spec string it was built from ("" when built by hand) */
    int in_c, in_h, in_w;  /* input image shape */
    int classes;           /* width of the last value (logits) */
    gbtd_layer *layers;
    int nlayers, cap_layers;
    gbtd_value *values;
    int nvalues, cap_values;
    gbtd_net_entry *entries;
    int nentries, cap_entries;
    int64_t nparams, nstate;
    float *params, *grads, *state; /* slabs, allocated by gbtd_net_finalize */
    bool finalized;
    gbtd_net_runtime *rt; /* activations and workspace for the current batch size */
} gbtd_net;

/* ---- building ---------------------------------------------------------------------------
 * Each add_* appends one layer reading value `in` and stores the new value id in *out.
 * `name` is the module name used for the parameter names (name + ".weight" etc.). Errors:
 * GBTD_EINVAL (bad geometry, value id out of range, groups not dividing the channels, net
 * already finalised), GBTD_ENOMEM. */

/* An empty network whose value 0 is an image of c x h x w. */
int gbtd_net_init(gbtd_net *net, int c, int h, int w);
/* Convolution k x k (no bias), weight (c_out, c_in / groups, k, k). share_with >= 0 reuses the
 * weight of that earlier CONV layer (which must have the same weight shape). */
int gbtd_net_add_conv(gbtd_net *net, const char *name, int in, int c_out, int k, int stride,
                      int pad, int groups, int share_with, int *out);
/* Batch norm over channels, gamma = 1 and beta = 0 at initialisation; relu fuses a ReLU. */
int gbtd_net_add_bn(gbtd_net *net, const char *name, int in, bool relu, float eps,
                    float momentum, int *out);
int gbtd_net_add_relu(gbtd_net *net, int in, int *out);
int gbtd_net_add_maxpool(gbtd_net *net, int in, int k, int stride, int pad, int *out);
int gbtd_net_add_gap(gbtd_net *net, int in, int *out);
/* Fully connected with bias over the C x H x W features of `in`, weight (c_out, C*H*W). */
int gbtd_net_add_linear(gbtd_net *net, const char *name, int in, int c_out, int *out);
/* Element-wise sum of two values of the same shape, optionally followed by ReLU. */
int gbtd_net_add_add(gbtd_net *net, int a, int b, bool relu, int *out);
/* Option-A shortcut to c_out channels at `stride`: x[:, :, ::s, ::s] with (c_out - c_in) / 2
 * zero channels before and after (c_out - c_in must be even and >= 0). */
int gbtd_net_add_shortcut_a(gbtd_net *net, int in, int c_out, int stride, int *out);
/* Allocate the three slabs (parameters initialised by gbtd_net_init_params with seed 0,
 * gradients zero, running mean 0 and variance 1). The last value must be C x 1 x 1 (logits). */
int gbtd_net_finalize(gbtd_net *net);
/* As gbtd_net_finalize; with init == false the parameter and state slabs are left unwritten
 * for a caller that fills every entry (loading weights from a file), which saves generating a
 * random number per parameter; net->grads then stays NULL until the first gbtd_net_zero_grad
 * or gbtd_net_backward allocates it (zeroed), so evaluation never pays for it. */
int gbtd_net_finalize_ex(gbtd_net *net, bool init);
void gbtd_net_free(gbtd_net *net);

/* He-normal initialisation of conv weights (std sqrt(2 / fan_out)), linear weights and
 * biases uniform in +-1/sqrt(fan_in), BN gamma 1, beta 0, running mean 0 and variance 1.
 * Deterministic for a given seed. */
int gbtd_net_init_params(gbtd_net *net, uint64_t seed);

/* ---- queries ---------------------------------------------------------------------------- */

/* Entry by name, NULL when absent. */
const gbtd_net_entry *gbtd_net_find(const gbtd_net *net, const char *name);
/* Pointer to the data of an entry (parameter or state slab). */
float *gbtd_net_entry_data(const gbtd_net *net, const gbtd_net_entry *e);
/* Total multiply-adds per image (sum over layers; for a shared weight every use counts). */
int64_t gbtd_net_macs(const gbtd_net *net);
/* Bytes of a float32 file holding parameters and running statistics. */
int64_t gbtd_net_file_bytes(const gbtd_net *net);

/* ---- running ---------------------------------------------------------------------------- */

/* Forward pass on n images x (n x C x H x W, NCHW). training: batch norm uses batch statistics
 * and updates the running ones, and everything backward needs is kept; otherwise running
 * statistics are used. Activation memory is (re)allocated when n grows. On return
 * *logits (may be NULL) points at n x classes scores owned by the net (valid until the next
 * forward). Errors: GBTD_EINVAL, GBTD_ENOMEM. */
int gbtd_net_forward(gbtd_net *net, const float *x, int n, bool training, const float **logits);
/* Evaluation forward (running statistics) of layers 0..last only, for a caller that reads
 * values those layers produce (gbtd_net_value); the values of later layers are stale and a
 * backward is refused until the next training forward. Errors: those of gbtd_net_forward,
 * GBTD_EINVAL (last out of range). */
int gbtd_net_forward_until(gbtd_net *net, const float *x, int n, int last);
/* Mean softmax cross-entropy of the last forward's logits against labels (n values in
 * [0, classes)), with label smoothing eps_ls (0 for none). Also stores d loss / d logits for
 * gbtd_net_backward. correct (may be NULL) receives the number of top-1 hits. */
int gbtd_net_loss(gbtd_net *net, const int32_t *labels, float label_smoothing, double *loss,
                  int *correct);
/* Set every gradient to 0. */
void gbtd_net_zero_grad(gbtd_net *net);
/* Backward pass of the last training forward, from the gradient gbtd_net_loss stored (or one
 * given with gbtd_net_set_dlogits); gradients are added to net->grads. */
int gbtd_net_backward(gbtd_net *net);
/* An extra loss term on an intermediate value: for the next gbtd_net_backward, add
 * scale * grad (n x c x h x w of value `value`, the n of the last training forward) to
 * d loss / d value, after every layer reading the value has added its part and before the
 * backward of the layer producing it, so that the parameter gradients are those of
 * loss + extra. Calls accumulate (several values, or several terms on one). grad is not
 * copied: it must stay valid until the backward. The record is dropped by that backward and by
 * the next forward. Errors: GBTD_EINVAL (no training forward yet, value not a layer output or
 * read by no layer, NULL grad, scale not finite), GBTD_ENOMEM. */
int gbtd_net_add_value_grad(gbtd_net *net, int value, const float *grad, float scale);
/* Set d loss / d logits (n x classes, the n of the last forward) by hand (tests). */
int gbtd_net_set_dlogits(gbtd_net *net, const float *dlogits);
/* Gradient with respect to the input image of the last backward (n x C x H x W), or NULL
 * when the input gradient was not requested with gbtd_net_want_input_grad. */
const float *gbtd_net_input_grad(const gbtd_net *net);
void gbtd_net_want_input_grad(gbtd_net *net, bool want);
/* Activation value v of the last forward (n x c x h x w), NULL when not kept. A batch norm
 * without ReLU whose output only a residual add reads runs inside that add (one pass over the
 * data instead of three; the environment variable GBTD_NN_NO_FUSE=1, read when the net's
 * buffers are allocated, turns this off); its output is computed here, on the first request
 * after the forward, bit for bit what the separate layer would have written. */
const float *gbtd_net_value(const gbtd_net *net, int v);
/* Batch norms the last forward ran inside their residual add (see gbtd_net_value). */
int gbtd_net_fused_bn(const gbtd_net *net);
/* Bytes of activation and workspace memory currently held. */
int64_t gbtd_net_runtime_bytes(const gbtd_net *net);

#ifdef __cplusplus
}
#endif
#endif
