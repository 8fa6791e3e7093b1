/* gbtd nn: network architectures from spec strings (ResNet, ResNeXt, CRU-Net).
 *
 * A spec names a preset, optionally followed by ":key=value,..." overrides; every preset is a
 * gbtd_arch description, and the explicit form "custom:key=value,..." fills one from scratch.
 * Presets (docs/networks.md has the exact graphs and how parameters and multiply-adds are
 * counted):
 *   ImageNet (3 x 224 x 224, 1000 classes):
 *     resnet-18, -34, -50, -101, -152, -200           post-activation, stride on the 3x3
 *     resnext-50-32x4d, resnext-101-32x4d, resnext-50-136x1d
 *     cru-net-56@x14-32x4d, cru-net-56@x14-136x1d, cru-net-116@x28x14-32x4d   (pre-activation)
 *   small images (3 x 32 x 32 by default, 10 classes):
 *     resnet-20, -32, -44, -56, -110                  CIFAR 6n+2, option-A shortcuts
 *     bottleneck-29                                   3 stages x 3 bottleneck units
 *     resnext-29-8x4d, resnext-29-32x1d               the same with groups 8 / 32
 *     cru-29-8x4d                                     pre-activation; stages 2 and 3 are CRU stages
 * Keys (stage lists separated by '/'):
 *   units=3/4/6/3  width=256/512/1024/2048  inner=64/128/256/512  groups=1/1/1/1
 *   share=0/0/6/0 (0: ordinary units; k: CRU units, sharing groups of k units)
 *   block=basic|bottleneck  act=post|pre  shortcut=a|b  stem=imagenet|small  stem-width=64
 *   input=CxHxW (e.g. 1x28x28)  classes=10  eps=1e-5  momentum=0.1
 * Example: "resnet-20:input=1x28x28", "custom:block=bottleneck,units=2/2,width=64/128,inner=16/32". */
#ifndef GBTD_NN_ARCH_H
#define GBTD_NN_ARCH_H

#include <stdbool.h>

#include "nn/net.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GBTD_ARCH_MAX_STAGES 6

typedef enum gbtd_block_kind { GBTD_BLOCK_BASIC = 1, GBTD_BLOCK_BOTTLENECK } gbtd_block_kind;
typedef enum gbtd_stem_kind {
    GBTD_STEM_SMALL = 1, /* 3x3 conv stride 1 (+ BN-ReLU) */
    GBTD_STEM_IMAGENET   /* 7x7 conv stride 2, BN-ReLU, 3x3 max pool stride 2 */
} gbtd_stem_kind;

typedef struct gbtd_arch {
    char name[64];
    int in_c, in_h, in_w;
    int classes;
    gbtd_stem_kind stem;
    int stem_width;
    gbtd_block_kind block;
    bool preact;       /* pre-activation units (BN-ReLU-conv), final BN-ReLU before the pool */
    bool shortcut_a;   /* option-A shortcuts where the shape changes (else 1x1 projections) */
    int nstages;
    int units[GBTD_ARCH_MAX_STAGES];
    int width[GBTD_ARCH_MAX_STAGES];  /* output channels of the stage */
    int inner[GBTD_ARCH_MAX_STAGES];  /* bottleneck / CRU inner width (D) */
    int groups[GBTD_ARCH_MAX_STAGES]; /* groups of the 3x3 (CRU stages: depthwise, ignored) */
    int share[GBTD_ARCH_MAX_STAGES];  /* 0, or CRU units per sharing group */
    int stride[GBTD_ARCH_MAX_STAGES]; /* stride of the stage's first unit */
    float bn_eps, bn_momentum;        /* PyTorch convention: running <- (1 - m) running + m batch */
} gbtd_arch;

/* Parse a spec string into *arch. Errors: GBTD_EINVAL with the offending part named
 * ("spec 'resnet-19': unknown depth 19 (resnet: 18, 34, 50, 101, 152, 200, 20, 32, ...)"). */
int gbtd_arch_parse(const char *spec, gbtd_arch *arch);
/* Build the graph of *arch into *net (not finalised: no slabs yet, so counting the largest
 * networks costs no memory); gbtd_net_finalize allocates. net is left empty on error. */
int gbtd_arch_build(const gbtd_arch *arch, gbtd_net *net);
/* Parse and build in one call; net->spec records the spec. */
int gbtd_net_from_spec(const char *spec, gbtd_net *net);
/* The preset names, NULL-terminated (for --help). */
const char *const *gbtd_arch_presets(void);

#ifdef __cplusplus
}
#endif
#endif
