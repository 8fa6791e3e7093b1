/* gbtd models: recognising the networks that weights files hold, loading them into gbtd
 * networks, exporting gbtd networks for PyTorch, and folding batch norm into convolutions.
 *
 * Layouts recognised (docs/formats.md, "Model names, recognition and export"):
 *  - TORCHVISION: torchvision / timm ResNet-18..152, ResNeXt (resnext50_32x4d, resnext101_32x8d),
 *    Wide ResNet (wide_resnet50_2): conv1, bn1, layerS.U.convK / bnK, layerS.U.downsample.0/1,
 *    fc; post-activation, projection shortcuts, stride on the 3x3 (v1.5). A "module." prefix
 *    (DataParallel) is accepted.
 *  - CIFAR: the 6n+2 CIFAR ResNets (conv1 3x3, layerS.U.conv1/2, option-A shortcuts, linear).
 *  - KERAS: Keras applications ResNet50/101/152 (v1) saved with save_weights
 *    (convS_blockU_K_conv / _bn, conv1_conv, predictions): stride on the first 1x1 of a unit,
 *    convolutions with biases (folded exactly into the following batch norm's running mean),
 *    BN eps 1.001e-5; HWIO kernels and the (in, out) Dense kernel are transposed on load.
 *  - GBTD: networks gbtd wrote (safetensors with __metadata__ "gbtd.spec", gbtd checkpoints),
 *    and gbtd's own names without metadata (pre-activation nets, CRU-Nets: bn_final, conv_a..d).
 * Stages, units, widths, inner widths and groups are inferred from the tensor shapes; strides
 * follow the layout's convention (1 for the first stage, 2 for the others). A recognition is
 * only accepted when the network it describes has exactly the file's tensors with the file's
 * shapes (BN num_batches_tracked entries are ignored).
 *
 * Every function returns GBTD_OK or a negative gbtd_status with a one-line detail in
 * gbtd_last_error() that names the file and the problem. Nothing is printed. */
#ifndef GBTD_MODELS_MODELS_H
#define GBTD_MODELS_MODELS_H

#include <stdbool.h>
#include <stdint.h>

#include "io/io.h"
#include "nn/arch.h"
#include "nn/net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gbtd_model_layout {
    GBTD_MODEL_UNKNOWN = 0,
    GBTD_MODEL_TORCHVISION,
    GBTD_MODEL_CIFAR,
    GBTD_MODEL_KERAS,
    GBTD_MODEL_GBTD
} gbtd_model_layout;

/* "torchvision", "cifar", "keras", "gbtd", "unknown". */
const char *gbtd_model_layout_name(gbtd_model_layout l);

#define GBTD_MODEL_WHY_LEN 1024

/* What a weights file holds. */
typedef struct gbtd_model_info {
    gbtd_model_layout layout;
    gbtd_file_format format;
    char family[48];     /* "resnet50", "resnext101_32x8d", "wide_resnet50_2", "resnet20-cifar",
                            "keras-resnet50", "cru-net", "resnet" ... */
    gbtd_arch arch;      /* stem, stages, units, widths, inner widths, groups, sharing, classes */
    char spec[128];      /* spec string that rebuilds it (nn/arch.h; "v1:" prefix = stride on
                            the first 1x1, which only gbtd_model_build understands) */
    bool stride_on_1x1;  /* Keras v1 units: the stride sits on the first 1x1 */
    bool conv_bias;      /* the file has convolution biases (folded into BN running means) */
    char prefix[16];     /* prefix of every tensor name ("module." or "") */
    int64_t params;      /* trainable parameters of the network */
    int64_t state;       /* batch-norm running statistics */
    int64_t file_tensors;/* tensors in the file */
    int ignored;         /* tensors ignored (num_batches_tracked) */
    char why[GBTD_MODEL_WHY_LEN]; /* UNKNOWN: one clause per layout saying why it did not match */
} gbtd_model_info;

/* Read any weights file into a named tensor set: safetensors (memory-mapped), .npz, Keras
 * save_weights HDF5 (names "layer/weight:0", kernels OIHW), gbtd checkpoints (params and
 * buffers under their state_dict names; the spec goes to meta "gbtd.spec"), other HDF5 files
 * (every float dataset, "/a/b" named "a.b"). fmt may be NULL.
 * Errors: those of the io readers; GBTD_EUNSUPPORTED for .npy files and unknown formats. */
int gbtd_model_read(const char *path, gbtd_tensor_set *out, gbtd_file_format *fmt);

/* Recognise the network in a tensor set. On success info describes it; otherwise
 * GBTD_EFORMAT ("no known network layout matched: ...") with info->why giving one clause per
 * layout. `what` names the file in messages (may be NULL). */
int gbtd_model_recognize(const gbtd_tensor_set *s, const char *what, gbtd_model_info *info);

/* Options for building a recognised network. */
typedef struct gbtd_model_opts {
    int in_c, in_h, in_w; /* input image shape; 0 keeps the layout's (3x224x224 ImageNet,
                             3x32x32 CIFAR, the spec's for gbtd files) */
    bool no_init;         /* false: parameters initialised as gbtd_net_finalize does; true:
                             left unset (for gbtd_model_assign to fill; gbtd_model_load) */
} gbtd_model_opts;
gbtd_model_opts gbtd_model_opts_default(void);

/* Build (and finalise) the network info describes. net is left empty on error. */
int gbtd_model_build(const gbtd_model_info *info, const gbtd_model_opts *opts, gbtd_net *net);

/* Copy the tensors of s into a network built by gbtd_model_build from the same info: every
 * network entry must be in s with its shape (GBTD_ENOTFOUND / GBTD_ESHAPE), every tensor of s
 * must have a place (GBTD_ENOTFOUND). F64/F32/F16/BF16 are converted to float32. Keras files:
 * kernels already OIHW (gbtd_model_read), the Dense kernel is transposed and convolution biases
 * are subtracted from the running means of the batch norms after them. */
int gbtd_model_assign(const gbtd_model_info *info, const gbtd_tensor_set *s, const char *what,
                      gbtd_net *net);

/* read + recognise + build + assign. info may be NULL. */
int gbtd_model_load(const char *path, const gbtd_model_opts *opts, gbtd_net *net,
                    gbtd_model_info *info);

/* Write a spec string for arch (the shortest preset-plus-overrides form that
 * gbtd_arch_parse turns back into the same network) into spec[len].
 * Errors: GBTD_EINVAL when no form fits in len characters. */
int gbtd_model_arch_spec(const gbtd_arch *arch, char *spec, size_t len);

/* ---- export -------------------------------------------------------------------------------- */

typedef struct gbtd_export_opts {
    gbtd_dtype dtype;          /* F32 (default), F16, BF16 or F64 */
    bool num_batches_tracked;  /* true: an int64 scalar 0 "<bn>.num_batches_tracked" per batch
                                  norm, as torch.nn.BatchNorm2d.state_dict() has */
} gbtd_export_opts;
gbtd_export_opts gbtd_export_opts_default(void);

/* Write every parameter and running statistic of a finalised network to a safetensors file
 * (temporary name + rename) under its state_dict name: ResNets and ResNeXts get torchvision
 * names (torchvision.models.resnet50().load_state_dict(..., strict=True) accepts them); other
 * networks gbtd's names (docs/formats.md; python/gbtd_torch.py builds the same network).
 * __metadata__: "format" = "pt", "gbtd.spec" = net->spec, "gbtd.arch" = the network as JSON
 * (stages, units, widths, ...) when the spec parses, "gbtd.params" = parameter count. */
int gbtd_model_export(const gbtd_net *net, const char *path, const gbtd_export_opts *opts);

/* ---- batch-norm folding ------------------------------------------------------------------ */

/* Fold an evaluation-mode batch norm into the convolution before it:
 *   s = gamma / sqrt(var + eps),  w'[o, ...] = s[o] w[o, ...],  b'[o] = beta[o] + s[o] (b[o] - mean[o])
 * so that conv(x, w') + b' == BN_eval(conv(x, w) + b). w has c_out rows of `per_out` values
 * (c_in / groups * kh * kw); b may be NULL (no bias); gamma NULL means 1, beta NULL means 0.
 * Computed in double, rounded once. w_out may alias w and b_out may alias b.
 * Errors: GBTD_EINVAL (NULL, sizes < 1, eps <= 0), GBTD_ENONFINITE (var + eps <= 0 or not
 * finite). */
int gbtd_bn_fold(int64_t c_out, int64_t per_out, const float *w, const float *b,
                 const float *gamma, const float *beta, const float *mean, const float *var,
                 float eps, float *w_out, float *b_out);

/* Fold the batch norm that directly follows convolution layer `conv` of a finalised network
 * (post-activation nets: conv -> bn). w_out receives c_out x per_out floats, b_out c_out.
 * Errors: GBTD_EINVAL (not a conv layer), GBTD_ENOTFOUND (its output does not go straight
 * into a batch norm, or goes elsewhere too). */
int gbtd_net_fold_bn(const gbtd_net *net, int conv, float *w_out, float *b_out);

#ifdef __cplusplus
}
#endif
#endif
