/* gbtd nn: spec strings -> gbtd_arch -> network graph (ResNet, ResNeXt, CRU-Net). */
#include "nn/arch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

static const char *const presets_[] = {
    "resnet-18", "resnet-34", "resnet-50", "resnet-101", "resnet-152", "resnet-200",
    "resnext-50-32x4d", "resnext-101-32x4d", "resnext-50-136x1d",
    "cru-net-56@x14-32x4d", "cru-net-56@x14-136x1d", "cru-net-116@x28x14-32x4d",
    "resnet-20", "resnet-32", "resnet-44", "resnet-56", "resnet-110",
    "bottleneck-29", "resnext-29-8x4d", "resnext-29-32x1d", "cru-net-35@x14x7-8x4d",
    "custom", NULL};

const char *const *gbtd_arch_presets(void) { return presets_; }

static void set4_(int *dst, int a, int b, int c, int d)
{
    dst[0] = a;
    dst[1] = b;
    dst[2] = c;
    dst[3] = d;
}

static void imagenet_base_(gbtd_arch *a)
{
    a->in_c = 3;
    a->in_h = a->in_w = 224;
    a->classes = 1000;
    a->stem = GBTD_STEM_IMAGENET;
    a->stem_width = 64;
    a->block = GBTD_BLOCK_BOTTLENECK;
    a->nstages = 4;
    set4_(a->width, 256, 512, 1024, 2048);
    set4_(a->inner, 64, 128, 256, 512);
    set4_(a->groups, 1, 1, 1, 1);
    set4_(a->stride, 1, 2, 2, 2);
}

static void small_base_(gbtd_arch *a)
{
    a->in_c = 3;
    a->in_h = a->in_w = 32;
    a->classes = 10;
    a->stem = GBTD_STEM_SMALL;
    a->nstages = 3;
    a->stride[0] = 1;
    a->stride[1] = a->stride[2] = 2;
}

/* The named presets (exact graphs in docs/networks.md). */
static int preset_(const char *name, gbtd_arch *a)
{
    memset(a, 0, sizeof *a);
    snprintf(a->name, sizeof a->name, "%.63s", name);
    a->bn_eps = 1e-5f;
    a->bn_momentum = 0.1f;
    if (!strcmp(name, "custom")) {
        small_base_(a);
        a->block = GBTD_BLOCK_BASIC;
        a->stem_width = 16;
        for (int s = 0; s < 3; s++) {
            a->units[s] = 1;
            a->width[s] = 16 << s;
            a->groups[s] = 1;
        }
        return GBTD_OK;
    }
    int depth = 0;
    if (sscanf(name, "resnet-%d", &depth) == 1 && !strchr(name + 7, '-')) {
        char chk[32];
        snprintf(chk, sizeof chk, "resnet-%d", depth);
        if (strcmp(chk, name)) return GBTD_ENOTFOUND;
        if (depth == 18 || depth == 34) {
            imagenet_base_(a);
            a->block = GBTD_BLOCK_BASIC;
            set4_(a->width, 64, 128, 256, 512);
            set4_(a->inner, 0, 0, 0, 0);
            if (depth == 18) set4_(a->units, 2, 2, 2, 2);
            else set4_(a->units, 3, 4, 6, 3);
            return GBTD_OK;
        }
        if (depth == 50 || depth == 101 || depth == 152 || depth == 200) {
            imagenet_base_(a);
            if (depth == 50) set4_(a->units, 3, 4, 6, 3);
            if (depth == 101) set4_(a->units, 3, 4, 23, 3);
            if (depth == 152) set4_(a->units, 3, 8, 36, 3);
            if (depth == 200) set4_(a->units, 3, 24, 36, 3);
            return GBTD_OK;
        }
        if (depth >= 8 && (depth - 2) % 6 == 0) { /* CIFAR 6n+2 */
            small_base_(a);
            a->block = GBTD_BLOCK_BASIC;
            a->shortcut_a = true;
            a->stem_width = 16;
            for (int s = 0; s < 3; s++) {
                a->units[s] = (depth - 2) / 6;
                a->width[s] = 16 << s;
                a->groups[s] = 1;
            }
            return GBTD_OK;
        }
        return GBTD_ENOTFOUND;
    }
    if (!strcmp(name, "resnext-50-32x4d") || !strcmp(name, "resnext-101-32x4d") ||
        !strcmp(name, "resnext-50-136x1d")) {
        imagenet_base_(a);
        if (strstr(name, "-101-")) set4_(a->units, 3, 4, 23, 3);
        else set4_(a->units, 3, 4, 6, 3);
        if (strstr(name, "136x1d")) {
            set4_(a->inner, 136, 272, 544, 1088);
            set4_(a->groups, 136, 272, 544, 1088);
        } else {
            set4_(a->inner, 128, 256, 512, 1024);
            set4_(a->groups, 32, 32, 32, 32);
        }
        return GBTD_OK;
    }
    if (!strcmp(name, "cru-net-56@x14-32x4d") || !strcmp(name, "cru-net-56@x14-136x1d") ||
        !strcmp(name, "cru-net-116@x28x14-32x4d")) {
        imagenet_base_(a);
        a->preact = true;
        a->bn_eps = 1e-3f;
        a->bn_momentum = 0.1f; /* MXNet momentum 0.9 in PyTorch's convention */
        if (strstr(name, "136x1d")) {
            set4_(a->inner, 136, 272, 640, 1088);
            set4_(a->groups, 136, 272, 640, 1088);
        } else {
            set4_(a->inner, 128, 256, 640, 1024);
            set4_(a->groups, 32, 32, 640, 32);
        }
        set4_(a->units, 3, 4, 6, 3);
        set4_(a->share, 0, 0, 6, 0);
        if (strstr(name, "-116@")) {
            set4_(a->units, 3, 6, 18, 3);
            set4_(a->share, 0, 6, 6, 0);
            a->inner[1] = a->groups[1] = 352;
            a->inner[2] = a->groups[2] = 704;
        }
        return GBTD_OK;
    }
    if (!strcmp(name, "bottleneck-29") || !strcmp(name, "resnext-29-8x4d") ||
        !strcmp(name, "resnext-29-32x1d") || !strcmp(name, "cru-net-35@x14x7-8x4d")) {
        small_base_(a);
        a->block = GBTD_BLOCK_BOTTLENECK;
        a->stem_width = 32;
        int g = strstr(name, "8x4d") ? 8 : strstr(name, "32x1d") ? 32 : 1;
        for (int s = 0; s < 3; s++) {
            a->units[s] = 3;
            a->width[s] = 128 << s;
            a->inner[s] = 32 << s;
            a->groups[s] = g;
        }
        if (!strncmp(name, "cru", 3)) {
            a->preact = true;
            a->share[1] = a->share[2] = 3;
            a->groups[1] = a->inner[1];
            a->groups[2] = a->inner[2];
        }
        return GBTD_OK;
    }
    return GBTD_ENOTFOUND;
}

/* "a/b/c" -> up to GBTD_ARCH_MAX_STAGES ints; returns count or -1. */
static int parse_stage_list_(const char *v, int *out)
{
    int n = 0;
    const char *p = v;
    while (*p) {
        if (n == GBTD_ARCH_MAX_STAGES) return -1;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > 1000000) return -1;
        out[n++] = (int)x;
        if (*end == '/') p = end + 1;
        else if (*end == '\0') p = end;
        else return -1;
        if (*end == '/' && *p == '\0') return -1;
    }
    return n;
}

static int apply_key_(gbtd_arch *a, const char *spec, const char *key, const char *val)
{
    int list[GBTD_ARCH_MAX_STAGES];
    int *dst = NULL;
    if (!strcmp(key, "units")) dst = a->units;
    else if (!strcmp(key, "width")) dst = a->width;
    else if (!strcmp(key, "inner")) dst = a->inner;
    else if (!strcmp(key, "groups")) dst = a->groups;
    else if (!strcmp(key, "share")) dst = a->share;
    else if (!strcmp(key, "stride")) dst = a->stride;
    if (dst) {
        int n = parse_stage_list_(val, list);
        if (n < 1)
            return gbtd_error(GBTD_EINVAL, "spec '%s': %s=%s is not a list like 3/4/6 (at most %d "
                              "stages)", spec, key, val, GBTD_ARCH_MAX_STAGES);
        if (!strcmp(key, "units")) {
            /* the stage count follows the units list; new stages copy the last one's settings */
            for (int s = a->nstages; s < n; s++) {
                int p = s > 0 ? s - 1 : 0;
                a->width[s] = a->width[p] * (s > 0 ? 2 : 1);
                a->inner[s] = a->inner[p] * (s > 0 ? 2 : 1);
                a->groups[s] = a->groups[p];
                a->share[s] = 0;
                a->stride[s] = s > 0 ? 2 : 1;
            }
            a->nstages = n;
        } else if (n != a->nstages) {
            return gbtd_error(GBTD_EINVAL, "spec '%s': %s has %d values for %d stages", spec, key,
                              n, a->nstages);
        }
        for (int s = 0; s < n; s++) dst[s] = list[s];
        return GBTD_OK;
    }
    char *end;
    if (!strcmp(key, "block")) {
        if (!strcmp(val, "basic")) a->block = GBTD_BLOCK_BASIC;
        else if (!strcmp(val, "bottleneck")) a->block = GBTD_BLOCK_BOTTLENECK;
        else return gbtd_error(GBTD_EINVAL, "spec '%s': block=%s (basic or bottleneck)", spec, val);
    } else if (!strcmp(key, "act")) {
        if (!strcmp(val, "post")) a->preact = false;
        else if (!strcmp(val, "pre")) a->preact = true;
        else return gbtd_error(GBTD_EINVAL, "spec '%s': act=%s (post or pre)", spec, val);
    } else if (!strcmp(key, "shortcut")) {
        if (!strcmp(val, "a")) a->shortcut_a = true;
        else if (!strcmp(val, "b")) a->shortcut_a = false;
        else return gbtd_error(GBTD_EINVAL, "spec '%s': shortcut=%s (a or b)", spec, val);
    } else if (!strcmp(key, "stem")) {
        if (!strcmp(val, "small")) a->stem = GBTD_STEM_SMALL;
        else if (!strcmp(val, "imagenet")) a->stem = GBTD_STEM_IMAGENET;
        else return gbtd_error(GBTD_EINVAL, "spec '%s': stem=%s (small or imagenet)", spec, val);
    } else if (!strcmp(key, "stem-width") || !strcmp(key, "classes")) {
        long x = strtol(val, &end, 10);
        if (end == val || *end || x < 1 || x > 1000000)
            return gbtd_error(GBTD_EINVAL, "spec '%s': %s=%s is not a positive integer", spec, key,
                              val);
        if (key[0] == 's') a->stem_width = (int)x;
        else a->classes = (int)x;
    } else if (!strcmp(key, "input")) {
        int c, h, w;
        char extra;
        if (sscanf(val, "%dx%dx%d%c", &c, &h, &w, &extra) != 3 || c < 1 || h < 1 || w < 1 ||
            c > 4096 || h > 65536 || w > 65536)
            return gbtd_error(GBTD_EINVAL, "spec '%s': input=%s is not CxHxW (e.g. 1x28x28)", spec,
                              val);
        a->in_c = c;
        a->in_h = h;
        a->in_w = w;
    } else if (!strcmp(key, "eps") || !strcmp(key, "momentum")) {
        double x = strtod(val, &end);
        if (end == val || *end || !(x > 0) || x > 1)
            return gbtd_error(GBTD_EINVAL, "spec '%s': %s=%s must be in (0, 1]", spec, key, val);
        if (key[0] == 'e') a->bn_eps = (float)x;
        else a->bn_momentum = (float)x;
    } else {
        return gbtd_error(GBTD_EINVAL, "spec '%s': unknown key '%s' (units, width, inner, groups, "
                          "share, stride, block, act, shortcut, stem, stem-width, input, classes, "
                          "eps, momentum)", spec, key);
    }
    return GBTD_OK;
}

static int validate_(const gbtd_arch *a, const char *spec)
{
    if (a->nstages < 1)
        return gbtd_error(GBTD_EINVAL, "spec '%s': no stages", spec);
    for (int s = 0; s < a->nstages; s++) {
        bool bott = a->block == GBTD_BLOCK_BOTTLENECK || a->share[s] > 0;
        int inner = bott ? a->inner[s] : a->width[s];
        if (a->units[s] < 1 || a->width[s] < 1 || a->stride[s] < 1 || a->stride[s] > 4 ||
            (bott && a->inner[s] < 1) || a->groups[s] < 1)
            return gbtd_error(GBTD_EINVAL, "spec '%s': stage %d needs units, width%s, groups and "
                              "stride >= 1", spec, s + 1, bott ? ", inner" : "");
        if (a->share[s] == 0 && inner % a->groups[s])
            return gbtd_error(GBTD_EINVAL, "spec '%s': stage %d: groups %d do not divide width %d",
                              spec, s + 1, a->groups[s], inner);
        if (a->share[s] > 0 && !a->preact)
            return gbtd_error(GBTD_EINVAL, "spec '%s': CRU stages (share=) need act=pre", spec);
        if (a->shortcut_a && (a->block != GBTD_BLOCK_BASIC || a->preact))
            return gbtd_error(GBTD_EINVAL, "spec '%s': option-A shortcuts need post-activation "
                              "basic blocks", spec);
    }
    return GBTD_OK;
}

int gbtd_arch_parse(const char *spec, gbtd_arch *arch)
{
    if (!spec || !arch) return gbtd_error(GBTD_EINVAL, "arch_parse: NULL argument");
    char buf[256];
    if (strlen(spec) >= sizeof buf) return gbtd_error(GBTD_EINVAL, "spec too long (%zu chars)",
                                                       strlen(spec));
    snprintf(buf, sizeof buf, "%s", spec);
    char *colon = strchr(buf, ':');
    if (colon) *colon = '\0';
    if (preset_(buf, arch) != GBTD_OK)
        return gbtd_error(GBTD_EINVAL, "spec '%s': unknown network '%s' (gbtd arch --list shows "
                          "the presets; 'custom:...' gives stages explicitly)", spec, buf);
    if (colon) {
        char *p = colon + 1;
        while (*p) {
            char *comma = strchr(p, ',');
            if (comma) *comma = '\0';
            char *eq = strchr(p, '=');
            if (!eq || eq == p || !eq[1])
                return gbtd_error(GBTD_EINVAL, "spec '%s': '%s' is not key=value", spec, p);
            *eq = '\0';
            GBTD_CHECK(apply_key_(arch, spec, p, eq + 1));
            if (!comma) break;
            p = comma + 1;
        }
    }
    return validate_(arch, spec);
}

/* ---- builders -------------------------------------------------------------------------- */

typedef struct builder {
    gbtd_net *net;
    const gbtd_arch *a;
    char name[GBTD_NET_NAME_LEN];
} builder;

static const char *nm_(builder *b, const char *fmt, int s, int u, const char *leaf)
{
    if (s < 0) snprintf(b->name, sizeof b->name, "%s", leaf);
    else snprintf(b->name, sizeof b->name, fmt, s, u, leaf);
    return b->name;
}

#define UNIT_NAME "layer%d.%d.%s"

/* post-activation basic block (torchvision BasicBlock / CIFAR ResNet) */
static int basic_post_(builder *b, int x, int s, int u, int width, int stride, int *out)
{
    gbtd_net *net = b->net;
    const gbtd_arch *a = b->a;
    int c1, b1, c2, b2, sc = x;
    GBTD_CHECK(gbtd_net_add_conv(net, nm_(b, UNIT_NAME, s, u, "conv1"), x, width, 3, stride, 1, 1,
                                 -1, &c1));
    GBTD_CHECK(gbtd_net_add_bn(net, nm_(b, UNIT_NAME, s, u, "bn1"), c1, true, a->bn_eps,
                               a->bn_momentum, &b1));
    GBTD_CHECK(gbtd_net_add_conv(net, nm_(b, UNIT_NAME, s, u, "conv2"), b1, width, 3, 1, 1, 1, -1,
                                 &c2));
    GBTD_CHECK(gbtd_net_add_bn(net, nm_(b, UNIT_NAME, s, u, "bn2"), c2, false, a->bn_eps,
                               a->bn_momentum, &b2));
    if (stride != 1 || net->values[x].c != width) {
        if (a->shortcut_a) {
            GBTD_CHECK(gbtd_net_add_shortcut_a(net, x, width, stride, &sc));
        } else {
            int p;
            GBTD_CHECK(gbtd_net_add_conv(net, nm_(b, UNIT_NAME, s, u, "downsample.0"), x, width, 1,
                                         stride, 0, 1, -1, &p));
            GBTD_CHECK(gbtd_net_add_bn(net, nm_(b, UNIT_NAME, s, u, "downsample.1"), p, false,
                                       a->bn_eps, a->bn_momentum, &sc));
        }
    }
    return gbtd_net_add_add(net, b2, sc, true, out);
}

/* post-activation bottleneck (torchvision Bottleneck, stride on the 3x3, groups on the 3x3) */
static int bottleneck_post_(builder *b, int x, int s, int u, int width, int inner, int groups,
                            int stride, int *out)
{
    gbtd_net *net = b->net;
    const gbtd_arch *a = b->a;
    float e = a->bn_eps, m = a->bn_momentum;
    int v, sc = x;
    GBTD_CHECK(gbtd_net_add_conv(net, nm_(b, UNIT_NAME, s, u, "conv1"), x, inner, 1, 1, 0, 1, -1,
                                 &v));
    GBTD_CHECK(gbtd_net_add_bn(net, nm_(b, UNIT_NAME, s, u, "bn1"), v, true, e, m, &v));
    GBTD_CHECK(gbtd_net_add_conv(net, nm_(b, UNIT_NAME, s, u, "conv2"), v, inner, 3, stride, 1,
                                 groups, -1, &v));
    GBTD_CHECK(gbtd_net_add_bn(net, nm_(b, UNIT_NAME, s, u, "bn2"), v, true, e, m, &v));
    GBTD_CHECK(gbtd_net_add_conv(net, nm_(b, UNIT_NAME, s, u, "conv3"), v, width, 1, 1, 0, 1, -1,
                                 &v));
    GBTD_CHECK(gbtd_net_add_bn(net, nm_(b, UNIT_NAME, s, u, "bn3"), v, false, e, m, &v));
    if (stride != 1 || net->values[x].c != width) {
        int p;
        GBTD_CHECK(gbtd_net_add_conv(net, nm_(b, UNIT_NAME, s, u, "downsample.0"), x, width, 1,
                                     stride, 0, 1, -1, &p));
        GBTD_CHECK(gbtd_net_add_bn(net, nm_(b, UNIT_NAME, s, u, "downsample.1"), p, false, e, m,
                                   &sc));
    }
    return gbtd_net_add_add(net, v, sc, true, out);
}

/* BN-ReLU then conv: the pre-activation building block. */
static int bn_conv_(builder *b, int x, int s, int u, const char *bn, const char *conv, int c_out,
                    int k, int stride, int groups, int share_with, int *out)
{
    int v;
    GBTD_CHECK(gbtd_net_add_bn(b->net, nm_(b, UNIT_NAME, s, u, bn), x, true, b->a->bn_eps,
                               b->a->bn_momentum, &v));
    return gbtd_net_add_conv(b->net, nm_(b, UNIT_NAME, s, u, conv), v, c_out, k, stride, k / 2,
                             groups, share_with, out);
}

/* pre-activation bottleneck with groups (the non-CRU stages of the CRU-Nets; projection
 * shortcut with its own BN-ReLU) */
static int bottleneck_pre_(builder *b, int x, int s, int u, int width, int inner, int groups,
                           int stride, int *out)
{
    int v, sc = x;
    GBTD_CHECK(bn_conv_(b, x, s, u, "bn1", "conv1", inner, 1, 1, 1, -1, &v));
    GBTD_CHECK(bn_conv_(b, v, s, u, "bn2", "conv2", inner, 3, stride, groups, -1, &v));
    GBTD_CHECK(bn_conv_(b, v, s, u, "bn3", "conv3", width, 1, 1, 1, -1, &v));
    if (stride != 1 || b->net->values[x].c != width)
        GBTD_CHECK(bn_conv_(b, x, s, u, "shortcut.bn", "shortcut.conv", width, 1, stride, 1, -1,
                            &sc));
    return gbtd_net_add_add(b->net, v, sc, false, out);
}

/* pre-activation basic block (for act=pre with block=basic) */
static int basic_pre_(builder *b, int x, int s, int u, int width, int stride, int *out)
{
    int v, sc = x;
    GBTD_CHECK(bn_conv_(b, x, s, u, "bn1", "conv1", width, 3, stride, 1, -1, &v));
    GBTD_CHECK(bn_conv_(b, v, s, u, "bn2", "conv2", width, 3, 1, 1, -1, &v));
    if (stride != 1 || b->net->values[x].c != width)
        GBTD_CHECK(bn_conv_(b, x, s, u, "shortcut.bn", "shortcut.conv", width, 1, stride, 1, -1,
                            &sc));
    return gbtd_net_add_add(b->net, v, sc, false, out);
}

/* Collective residual unit (PAPER.md). share_a / share_b: layer indices of the group's shared
 * 1x1 and depthwise 3x3 (-1: this unit creates them and returns their indices). */
static int cru_unit_(builder *b, int x, int s, int u, int width, int inner, int stride,
                     int *share_a, int *share_b, int *out)
{
    gbtd_net *net = b->net;
    int in = x, sc = x, v;
    if (stride != 1 || net->values[x].c != width) {
        /* 'down' unit: one projection W_p used at stride 1 (input of the shared layers) and at
         * the unit's stride (shortcut), each use with its own BN-ReLU */
        GBTD_CHECK(bn_conv_(b, x, s, u, "proj.bn1", "proj.conv", width, 1, 1, 1, -1, &in));
        int wp = net->nlayers - 1;
        GBTD_CHECK(bn_conv_(b, x, s, u, "proj.bn2", "proj.conv_s", width, 1, stride, 1, wp, &sc));
    }
    GBTD_CHECK(bn_conv_(b, in, s, u, "bn_a", "conv_a", inner, 1, 1, 1, *share_a, &v));
    if (*share_a < 0) *share_a = net->nlayers - 1;
    GBTD_CHECK(gbtd_net_add_conv(net, nm_(b, UNIT_NAME, s, u, "conv_b"), v, inner, 3, stride, 1,
                                 inner, *share_b, &v));
    if (*share_b < 0) *share_b = net->nlayers - 1;
    GBTD_CHECK(bn_conv_(b, v, s, u, "bn_b", "conv_c", inner, 1, 1, 1, -1, &v));
    GBTD_CHECK(bn_conv_(b, v, s, u, "bn_c", "conv_d", width, 1, 1, 1, -1, &v));
    return gbtd_net_add_add(net, v, sc, false, out);
}

int gbtd_arch_build(const gbtd_arch *a, gbtd_net *net)
{
    if (!a || !net) return gbtd_error(GBTD_EINVAL, "arch_build: NULL argument");
    GBTD_CHECK(validate_(a, a->name));
    int rc = gbtd_net_init(net, a->in_c, a->in_h, a->in_w);
    if (rc) return rc;
    builder b = {net, a, {0}};
    int v;
#define TRY(expr)                                                                                 \
    do {                                                                                          \
        rc = (expr);                                                                              \
        if (rc) goto fail;                                                                        \
    } while (0)
    /* stem */
    if (a->stem == GBTD_STEM_IMAGENET) {
        TRY(gbtd_net_add_conv(net, "conv1", 0, a->stem_width, 7, 2, 3, 1, -1, &v));
        TRY(gbtd_net_add_bn(net, "bn1", v, true, a->bn_eps, a->bn_momentum, &v));
        TRY(gbtd_net_add_maxpool(net, v, 3, 2, 1, &v));
    } else {
        TRY(gbtd_net_add_conv(net, "conv1", 0, a->stem_width, 3, 1, 1, 1, -1, &v));
        TRY(gbtd_net_add_bn(net, "bn1", v, true, a->bn_eps, a->bn_momentum, &v));
    }
    for (int s = 0; s < a->nstages; s++) {
        int sa = -1, sb = -1;
        for (int u = 0; u < a->units[s]; u++) {
            int stride = u == 0 ? a->stride[s] : 1;
            if (a->share[s] > 0) {
                if (u % a->share[s] == 0) sa = sb = -1; /* a new sharing group */
                TRY(cru_unit_(&b, v, s + 1, u, a->width[s], a->inner[s], stride, &sa, &sb, &v));
            } else if (a->block == GBTD_BLOCK_BASIC) {
                if (a->preact) TRY(basic_pre_(&b, v, s + 1, u, a->width[s], stride, &v));
                else TRY(basic_post_(&b, v, s + 1, u, a->width[s], stride, &v));
            } else {
                if (a->preact)
                    TRY(bottleneck_pre_(&b, v, s + 1, u, a->width[s], a->inner[s], a->groups[s],
                                        stride, &v));
                else
                    TRY(bottleneck_post_(&b, v, s + 1, u, a->width[s], a->inner[s], a->groups[s],
                                         stride, &v));
            }
        }
    }
    if (a->preact) TRY(gbtd_net_add_bn(net, "bn_final", v, true, a->bn_eps, a->bn_momentum, &v));
    TRY(gbtd_net_add_gap(net, v, &v));
    TRY(gbtd_net_add_linear(net, a->shortcut_a ? "linear" : "fc", v, a->classes, &v));
#undef TRY
    snprintf(net->spec, sizeof net->spec, "%s", a->name);
    net->classes = a->classes;
    return GBTD_OK;
fail:
    gbtd_net_free(net);
    return rc;
}

int gbtd_net_from_spec(const char *spec, gbtd_net *net)
{
    if (net) memset(net, 0, sizeof *net);
    gbtd_arch a;
    GBTD_CHECK(gbtd_arch_parse(spec, &a));
    GBTD_CHECK(gbtd_arch_build(&a, net));
    snprintf(net->spec, sizeof net->spec, "%s", spec);
    int rc = gbtd_net_finalize(net);
    if (rc) gbtd_net_free(net);
    return rc;
}
