/* gbtd models: which network does a tensor set hold? (layouts in models.h) */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "models/models_internal.h"

const char *gbtd_model_layout_name(gbtd_model_layout l)
{
    switch (l) {
    case GBTD_MODEL_TORCHVISION: return "torchvision";
    case GBTD_MODEL_CIFAR: return "cifar";
    case GBTD_MODEL_KERAS: return "keras";
    case GBTD_MODEL_GBTD: return "gbtd";
    default: return "unknown";
    }
}

bool models_ignored_(const char *name)
{
    size_t n = strlen(name), k = strlen("num_batches_tracked");
    return n >= k && !strcmp(name + n - k, "num_batches_tracked");
}

/* ---- name mapping ------------------------------------------------------------------------ */

static const char *keras_bn_leaf_(const char *leaf)
{
    if (!strcmp(leaf, "weight")) return "gamma:0";
    if (!strcmp(leaf, "bias")) return "beta:0";
    if (!strcmp(leaf, "running_mean")) return "moving_mean:0";
    if (!strcmp(leaf, "running_var")) return "moving_variance:0";
    return NULL;
}

bool models_file_name_(const gbtd_model_info *info, const char *entry, char *out, size_t len,
                       bool *transpose)
{
    *transpose = false;
    if (info->layout != GBTD_MODEL_KERAS) {
        snprintf(out, len, "%s%s", info->prefix, entry);
        return true;
    }
    int s, u, k;
    char rest[GBTD_NET_NAME_LEN];
    if (!strcmp(entry, "conv1.weight")) {
        snprintf(out, len, "conv1_conv/kernel:0");
        return true;
    }
    if (!strncmp(entry, "bn1.", 4)) {
        const char *leaf = keras_bn_leaf_(entry + 4);
        if (!leaf) return false;
        snprintf(out, len, "conv1_bn/%s", leaf);
        return true;
    }
    if (!strcmp(entry, "fc.weight")) {
        *transpose = true;
        snprintf(out, len, "predictions/kernel:0");
        return true;
    }
    if (!strcmp(entry, "fc.bias")) {
        snprintf(out, len, "predictions/bias:0");
        return true;
    }
    if (sscanf(entry, "layer%d.%d.%79s", &s, &u, rest) != 3) return false;
    char layer[48];
    const char *leaf;
    if (sscanf(rest, "conv%d.weight", &k) == 1) {
        snprintf(out, len, "conv%d_block%d_%d_conv/kernel:0", s + 1, u + 1, k);
        return true;
    }
    if (!strcmp(rest, "downsample.0.weight")) {
        snprintf(out, len, "conv%d_block%d_0_conv/kernel:0", s + 1, u + 1);
        return true;
    }
    if (sscanf(rest, "bn%d.", &k) == 1) {
        snprintf(layer, sizeof layer, "conv%d_block%d_%d_bn", s + 1, u + 1, k);
        leaf = keras_bn_leaf_(strchr(rest, '.') + 1);
    } else if (!strncmp(rest, "downsample.1.", 13)) {
        snprintf(layer, sizeof layer, "conv%d_block%d_0_bn", s + 1, u + 1);
        leaf = keras_bn_leaf_(rest + 13);
    } else {
        return false;
    }
    if (!leaf) return false;
    snprintf(out, len, "%s/%s", layer, leaf);
    return true;
}

static void why_(char *why, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
}

static const char *shape_str_(int nd, const int64_t *sh, char *buf, size_t len)
{
    size_t p = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < nd && p < len; i++)
        p += (size_t)snprintf(buf + p, len - p, i ? ", %lld" : "%lld", (long long)sh[i]);
    if (p < len) snprintf(buf + p, len - p, ")");
    return buf;
}

int models_match_(const gbtd_model_info *info, const gbtd_net *net, const gbtd_tensor_set *s,
                  char *why, size_t len)
{
    bool *used = gbtd_calloc((size_t)(s->count > 0 ? s->count : 1), sizeof(bool));
    if (!used) return GBTD_ENOMEM;
    int rc = GBTD_OK;
    char fname[256], b1[96], b2[96];
    for (int i = 0; i < net->nentries && !rc; i++) {
        const gbtd_net_entry *e = &net->entries[i];
        bool tr;
        if (!models_file_name_(info, e->name, fname, sizeof fname, &tr)) {
            why_(why, len, "network entry '%s' has no name in this layout", e->name);
            rc = GBTD_ENOTFOUND;
            break;
        }
        const gbtd_named_tensor *t = gbtd_tensor_set_find(s, fname);
        if (!t) {
            why_(why, len, "no tensor '%s'", fname);
            rc = GBTD_ENOTFOUND;
            break;
        }
        int64_t want[4];
        for (int k = 0; k < e->ndim; k++) want[k] = e->shape[k];
        if (tr && e->ndim == 2) {
            want[0] = e->shape[1];
            want[1] = e->shape[0];
        }
        bool same = t->ndim == e->ndim;
        for (int k = 0; same && k < e->ndim; k++) same = t->shape[k] == want[k];
        if (!same) {
            why_(why, len, "tensor '%s' has shape %s, the network needs %s", fname,
                 shape_str_(t->ndim, t->shape, b1, sizeof b1), shape_str_(e->ndim, want, b2,
                                                                             sizeof b2));
            rc = GBTD_ESHAPE;
            break;
        }
        if (t->dtype != GBTD_DTYPE_F32 && t->dtype != GBTD_DTYPE_F64 &&
            t->dtype != GBTD_DTYPE_F16 && t->dtype != GBTD_DTYPE_BF16) {
            why_(why, len, "tensor '%s' is %s, not a float type", fname,
                 gbtd_dtype_name(t->dtype));
            rc = GBTD_EUNSUPPORTED;
            break;
        }
        used[t - s->items] = true;
        /* Keras convolution biases belong to the convolution's entry */
        if (info->layout == GBTD_MODEL_KERAS && e->kind == GBTD_ENTRY_WEIGHT && e->ndim == 4) {
            char bname[256];
            snprintf(bname, sizeof bname, "%s", fname);
            char *k = strstr(bname, "kernel:0");
            if (k) {
                snprintf(k, sizeof bname - (size_t)(k - bname), "bias:0");
                const gbtd_named_tensor *bt = gbtd_tensor_set_find(s, bname);
                if (bt) {
                    if (bt->ndim != 1 || bt->shape[0] != e->shape[0]) {
                        why_(why, len, "bias '%s' has shape %s, expected (%lld)", bname,
                             shape_str_(bt->ndim, bt->shape, b1, sizeof b1),
                             (long long)e->shape[0]);
                        rc = GBTD_ESHAPE;
                        break;
                    }
                    used[bt - s->items] = true;
                }
            }
        }
    }
    for (int i = 0; i < s->count && !rc; i++) {
        if (used[i] || models_ignored_(s->items[i].name)) continue;
        why_(why, len, "tensor '%s' has no place in the network", s->items[i].name);
        rc = GBTD_ENOTFOUND;
    }
    gbtd_free(used);
    return rc;
}

/* ---- inference from names and shapes ----------------------------------------------------- */

typedef struct rec {
    const gbtd_tensor_set *s;
    const char *prefix;
} rec;

static const gbtd_named_tensor *get_(const rec *r, const char *fmt, ...)
{
    char nm[256];
    size_t p = (size_t)snprintf(nm, sizeof nm, "%s", r->prefix);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(nm + p, sizeof nm - p, fmt, ap);
    va_end(ap);
    return gbtd_tensor_set_find(r->s, nm);
}

static bool is4_(const gbtd_named_tensor *t) { return t && t->ndim == 4; }

/* Depth as the usual names count it: weighted layers on the main path. */
static int depth_(const gbtd_arch *a)
{
    int d = 2;
    for (int s = 0; s < a->nstages; s++) {
        int per = a->share[s] ? 4 : a->block == GBTD_BLOCK_BASIC ? 2 : 3;
        d += per * a->units[s];
    }
    return d;
}

/* Verify an inferred arch against the set; fills params/state on success. */
static int verify_(gbtd_model_info *info, const gbtd_tensor_set *s, char *why, size_t len)
{
    gbtd_net net;
    memset(&net, 0, sizeof net);
    int rc = models_build_graph_(&info->arch, info->stride_on_1x1, &net);
    if (rc) {
        why_(why, len, "the inferred network does not build: %s", gbtd_last_error());
        return rc;
    }
    rc = models_match_(info, &net, s, why, len);
    if (!rc) {
        info->params = net.nparams;
        info->state = net.nstate;
    }
    gbtd_net_free(&net);
    return rc;
}

/* layerS.U names (torchvision, CIFAR, gbtd's own pre-activation and CRU nets). */
static int infer_layers_(const rec *r, gbtd_model_info *info, char *why, size_t len)
{
    gbtd_arch *a = &info->arch;
    memset(a, 0, sizeof *a);
    const gbtd_named_tensor *c1 = get_(r, "conv1.weight");
    if (!is4_(c1)) {
        why_(why, len, "no 4-d 'conv1.weight'");
        return GBTD_ENOTFOUND;
    }
    if (c1->shape[2] != c1->shape[3] || (c1->shape[2] != 7 && c1->shape[2] != 3)) {
        why_(why, len, "conv1.weight is %lldx%lld (a 7x7 or 3x3 stem expected)",
             (long long)c1->shape[2], (long long)c1->shape[3]);
        return GBTD_EUNSUPPORTED;
    }
    a->stem = c1->shape[2] == 7 ? GBTD_STEM_IMAGENET : GBTD_STEM_SMALL;
    a->in_c = (int)c1->shape[1];
    a->in_h = a->in_w = a->stem == GBTD_STEM_IMAGENET ? 224 : 32;
    a->stem_width = (int)c1->shape[0];
    a->bn_eps = 1e-5f;
    a->bn_momentum = 0.1f;
    a->preact = get_(r, "bn_final.weight") != NULL;
    const gbtd_named_tensor *head = get_(r, "fc.weight");
    bool linear = false;
    if (!head) {
        head = get_(r, "linear.weight");
        linear = head != NULL;
    }
    if (!head || head->ndim != 2) {
        why_(why, len, "no 2-d classifier 'fc.weight' or 'linear.weight'");
        return GBTD_ENOTFOUND;
    }
    a->classes = (int)head->shape[0];
    bool any_proj = false, any_basic = false, any_bott = false;
    for (int s = 0; s < GBTD_ARCH_MAX_STAGES + 1; s++) {
        int units = 0;
        while (get_(r, "layer%d.%d.conv1.weight", s + 1, units) ||
               get_(r, "layer%d.%d.conv_d.weight", s + 1, units))
            units++;
        if (!units) break;
        if (s == GBTD_ARCH_MAX_STAGES) {
            why_(why, len, "more than %d stages", GBTD_ARCH_MAX_STAGES);
            return GBTD_EUNSUPPORTED;
        }
        a->nstages = s + 1;
        a->units[s] = units;
        a->stride[s] = s == 0 ? 1 : 2;
        const gbtd_named_tensor *cd = get_(r, "layer%d.0.conv_d.weight", s + 1);
        if (cd) { /* CRU stage */
            const gbtd_named_tensor *cc = get_(r, "layer%d.0.conv_c.weight", s + 1);
            if (!is4_(cd) || !is4_(cc)) {
                why_(why, len, "CRU unit layer%d.0 without 4-d conv_c / conv_d", s + 1);
                return GBTD_ENOTFOUND;
            }
            a->width[s] = (int)cd->shape[0];
            a->inner[s] = a->groups[s] = (int)cc->shape[0];
            int share = units;
            for (int u = 1; u < units; u++)
                if (get_(r, "layer%d.%d.conv_a.weight", s + 1, u)) {
                    share = u;
                    break;
                }
            a->share[s] = share;
            any_proj = true;
            continue;
        }
        const gbtd_named_tensor *k1 = get_(r, "layer%d.0.conv1.weight", s + 1);
        const gbtd_named_tensor *k2 = get_(r, "layer%d.0.conv2.weight", s + 1);
        const gbtd_named_tensor *k3 = get_(r, "layer%d.0.conv3.weight", s + 1);
        if (!is4_(k1) || !is4_(k2)) {
            why_(why, len, "layer%d.0 has no 4-d conv1 / conv2 weights", s + 1);
            return GBTD_ENOTFOUND;
        }
        if (k3) {
            if (!is4_(k3)) {
                why_(why, len, "layer%d.0.conv3.weight is not 4-d", s + 1);
                return GBTD_ESHAPE;
            }
            any_bott = true;
            a->inner[s] = (int)k1->shape[0];
            a->width[s] = (int)k3->shape[0];
            if (k2->shape[1] < 1 || a->inner[s] % k2->shape[1]) {
                why_(why, len, "layer%d.0.conv2.weight: %lld input channels per group do not "
                     "divide the inner width %d", s + 1, (long long)k2->shape[1], a->inner[s]);
                return GBTD_ESHAPE;
            }
            a->groups[s] = (int)(a->inner[s] / k2->shape[1]);
        } else {
            any_basic = true;
            a->width[s] = (int)k1->shape[0];
            a->groups[s] = 1;
        }
        for (int u = 0; u < units; u++)
            if (get_(r, "layer%d.%d.downsample.0.weight", s + 1, u) ||
                get_(r, "layer%d.%d.shortcut.conv.weight", s + 1, u))
                any_proj = true;
    }
    if (a->nstages == 0) {
        why_(why, len, "no residual stages (no 'layer1.0.conv1.weight')");
        return GBTD_ENOTFOUND;
    }
    if (any_basic && any_bott) {
        why_(why, len, "basic and bottleneck units mixed");
        return GBTD_EUNSUPPORTED;
    }
    a->block = any_basic ? GBTD_BLOCK_BASIC : GBTD_BLOCK_BOTTLENECK;
    a->shortcut_a = !any_proj && !a->preact && a->block == GBTD_BLOCK_BASIC;
    if (a->shortcut_a != linear) {
        why_(why, len, a->shortcut_a ? "parameter-free (option-A) shortcuts go with a 'linear' "
                                       "classifier, the file has 'fc'"
                                     : "projection shortcuts go with an 'fc' classifier, the "
                                       "file has 'linear'");
        return GBTD_EUNSUPPORTED;
    }
    bool cru = false;
    for (int s = 0; s < a->nstages; s++) cru = cru || a->share[s] > 0;
    int depth = depth_(a);
    if (a->preact || cru) {
        info->layout = GBTD_MODEL_GBTD;
        snprintf(info->family, sizeof info->family, "%s-%d", cru ? "cru-net" : "preact-resnet",
                 depth);
    } else if (a->shortcut_a) {
        info->layout = GBTD_MODEL_CIFAR;
        snprintf(info->family, sizeof info->family, "resnet%d-cifar", depth);
    } else {
        info->layout = GBTD_MODEL_TORCHVISION;
        int g = a->groups[0], in0 = a->inner[0], w0 = a->width[0];
        if (a->block == GBTD_BLOCK_BASIC)
            snprintf(info->family, sizeof info->family, "resnet%d", depth);
        else if (g > 1)
            snprintf(info->family, sizeof info->family, "resnext%d_%dx%dd", depth, g, in0 / g);
        else if (in0 * 4 == w0)
            snprintf(info->family, sizeof info->family, "resnet%d", depth);
        else if (in0 * 2 == w0)
            snprintf(info->family, sizeof info->family, "wide_resnet%d_2", depth);
        else
            snprintf(info->family, sizeof info->family, "resnet%d-bottleneck", depth);
    }
    return GBTD_OK;
}

/* Keras applications ResNet (v1) names. */
static int infer_keras_(const gbtd_tensor_set *set, gbtd_model_info *info, char *why, size_t len)
{
    rec r = {set, ""};
    gbtd_arch *a = &info->arch;
    memset(a, 0, sizeof *a);
    const gbtd_named_tensor *c1 = get_(&r, "conv1_conv/kernel:0");
    if (!is4_(c1)) {
        why_(why, len, "no 4-d 'conv1_conv/kernel:0'");
        return GBTD_ENOTFOUND;
    }
    const gbtd_named_tensor *pk = get_(&r, "predictions/kernel:0");
    if (!pk || pk->ndim != 2) {
        why_(why, len, "no 2-d 'predictions/kernel:0' (models saved without the top are not "
             "supported)");
        return GBTD_ENOTFOUND;
    }
    if (c1->shape[2] != 7 || c1->shape[3] != 7) {
        why_(why, len, "conv1_conv kernel is not 7x7");
        return GBTD_EUNSUPPORTED;
    }
    a->stem = GBTD_STEM_IMAGENET;
    a->in_c = (int)c1->shape[1];
    a->in_h = a->in_w = 224;
    a->stem_width = (int)c1->shape[0];
    a->classes = (int)pk->shape[1];
    a->block = GBTD_BLOCK_BOTTLENECK;
    a->bn_eps = 1.001e-5f;
    a->bn_momentum = 0.01f; /* Keras momentum 0.99 */
    for (int s = 0; s < GBTD_ARCH_MAX_STAGES + 1; s++) {
        int units = 0;
        while (get_(&r, "conv%d_block%d_1_conv/kernel:0", s + 2, units + 1)) units++;
        if (!units) break;
        if (s == GBTD_ARCH_MAX_STAGES) {
            why_(why, len, "more than %d stages", GBTD_ARCH_MAX_STAGES);
            return GBTD_EUNSUPPORTED;
        }
        const gbtd_named_tensor *k1 = get_(&r, "conv%d_block1_1_conv/kernel:0", s + 2);
        const gbtd_named_tensor *k3 = get_(&r, "conv%d_block1_3_conv/kernel:0", s + 2);
        if (!is4_(k1) || !is4_(k3)) {
            why_(why, len, "conv%d_block1 has no 4-d _1_conv / _3_conv kernels", s + 2);
            return GBTD_ENOTFOUND;
        }
        a->nstages = s + 1;
        a->units[s] = units;
        a->inner[s] = (int)k1->shape[0];
        a->width[s] = (int)k3->shape[0];
        a->groups[s] = 1;
        a->stride[s] = s == 0 ? 1 : 2;
    }
    if (a->nstages == 0) {
        why_(why, len, "no 'conv2_block1_1_conv/kernel:0'");
        return GBTD_ENOTFOUND;
    }
    info->layout = GBTD_MODEL_KERAS;
    info->stride_on_1x1 = true;
    info->conv_bias = get_(&r, "conv1_conv/bias:0") != NULL;
    snprintf(info->family, sizeof info->family, "keras-resnet%d", depth_(a));
    return GBTD_OK;
}

/* gbtd files: the spec in the metadata ("v1:" prefix: stride on the first 1x1). */
static int infer_meta_(const gbtd_tensor_set *s, gbtd_model_info *info, char *why, size_t len)
{
    const gbtd_attr *sp = gbtd_attr_list_find(&s->meta, "gbtd.spec");
    if (!sp || sp->kind != GBTD_ATTR_STRING || !sp->strs[0][0]) {
        why_(why, len, "no 'gbtd.spec' metadata");
        return GBTD_ENOTFOUND;
    }
    const char *spec = sp->strs[0];
    info->stride_on_1x1 = !strncmp(spec, "v1:", 3);
    if (gbtd_arch_parse(spec + (info->stride_on_1x1 ? 3 : 0), &info->arch)) {
        why_(why, len, "metadata gbtd.spec '%.60s' does not parse: %s", spec, gbtd_last_error());
        return GBTD_EFORMAT;
    }
    info->layout = GBTD_MODEL_GBTD;
    snprintf(info->family, sizeof info->family, "%.47s", info->arch.name);
    return GBTD_OK;
}

int gbtd_model_recognize(const gbtd_tensor_set *s, const char *what, gbtd_model_info *info)
{
    if (!s || !info) return gbtd_error(GBTD_EINVAL, "model_recognize: NULL argument");
    if (!what) what = "weights";
    memset(info, 0, sizeof *info);
    info->file_tensors = s->count;
    for (int i = 0; i < s->count; i++) info->ignored += models_ignored_(s->items[i].name);
    char w[3][320];
    const char *lname[3] = {"gbtd metadata", "keras", "torchvision/cifar/gbtd names"};
    int rc = GBTD_ENOTFOUND;
    for (int k = 0; k < 3; k++) {
        gbtd_model_info t;
        memset(&t, 0, sizeof t);
        t.file_tensors = info->file_tensors;
        t.ignored = info->ignored;
        w[k][0] = '\0';
        int r;
        if (k == 0) {
            r = infer_meta_(s, &t, w[k], sizeof w[k]);
        } else if (k == 1) {
            r = infer_keras_(s, &t, w[k], sizeof w[k]);
        } else {
            /* DataParallel checkpoints prefix every name with "module." */
            bool mod = !gbtd_tensor_set_find(s, "conv1.weight") &&
                       gbtd_tensor_set_find(s, "module.conv1.weight");
            snprintf(t.prefix, sizeof t.prefix, "%s", mod ? "module." : "");
            rec r2 = {s, t.prefix};
            r = infer_layers_(&r2, &t, w[k], sizeof w[k]);
        }
        if (!r) r = verify_(&t, s, w[k], sizeof w[k]);
        if (!r) r = gbtd_model_arch_spec(&t.arch, t.spec, sizeof t.spec - 3);
        if (!r && t.stride_on_1x1) {
            char tmp[128];
            snprintf(tmp, sizeof tmp, "v1:%.124s", t.spec);
            snprintf(t.spec, sizeof t.spec, "%s", tmp);
        }
        if (!r) {
            *info = t;
            return GBTD_OK;
        }
        if (r == GBTD_ENOMEM) return r;
        if (k == 0 && r != GBTD_ENOTFOUND) rc = r; /* metadata present but wrong */
    }
    size_t p = 0;
    for (int k = 0; k < 3 && p < sizeof info->why; k++)
        p += (size_t)snprintf(info->why + p, sizeof info->why - p, "%s%s: %s", k ? "; " : "",
                              lname[k], w[k]);
    info->layout = GBTD_MODEL_UNKNOWN;
    (void)rc;
    return gbtd_error(GBTD_EFORMAT, "%s: no known network layout matched (%s)", what, info->why);
}

/* ---- spec strings ------------------------------------------------------------------------ */

static bool stage_list_eq_(const int *x, const int *y, int n)
{
    for (int s = 0; s < n; s++)
        if (x[s] != y[s]) return false;
    return true;
}

/* The fields that decide the graph (and BN settings). */
static bool arch_eq_(const gbtd_arch *a, const gbtd_arch *b)
{
    if (a->in_c != b->in_c || a->in_h != b->in_h || a->in_w != b->in_w ||
        a->classes != b->classes || a->stem != b->stem || a->stem_width != b->stem_width ||
        a->block != b->block || a->preact != b->preact || a->shortcut_a != b->shortcut_a ||
        a->nstages != b->nstages || a->bn_eps != b->bn_eps || a->bn_momentum != b->bn_momentum)
        return false;
    for (int s = 0; s < a->nstages; s++) {
        if (a->units[s] != b->units[s] || a->width[s] != b->width[s] ||
            a->stride[s] != b->stride[s] || a->share[s] != b->share[s])
            return false;
        bool bott = a->block == GBTD_BLOCK_BOTTLENECK || a->share[s] > 0;
        if (bott && a->inner[s] != b->inner[s]) return false;
        if (a->share[s] == 0 && bott && a->groups[s] != b->groups[s]) return false;
    }
    return true;
}

static void put_list_(char *buf, size_t len, size_t *p, const char *key, const int *v, int n)
{
    if (*p + 1 >= len) {
        *p = len;
        return;
    }
    *p += (size_t)snprintf(buf + *p, *p < len ? len - *p : 0, "%s%s=", buf[*p - 1] == ':' ? "" : ",",
                           key);
    for (int s = 0; s < n; s++)
        *p += (size_t)snprintf(buf + *p, *p < len ? len - *p : 0, s ? "/%d" : "%d", v[s]);
}

static void put_kv_(char *buf, size_t len, size_t *p, const char *key, const char *val)
{
    if (*p + 1 >= len) {
        *p = len;
        return;
    }
    *p += (size_t)snprintf(buf + *p, *p < len ? len - *p : 0, "%s%s=%s",
                           buf[*p - 1] == ':' ? "" : ",", key, val);
}

static void fmt_float_(float x, char *buf, size_t len)
{
    snprintf(buf, len, "%g", (double)x);
    if ((float)strtod(buf, NULL) != x) snprintf(buf, len, "%.9g", (double)x);
}

/* Candidate spec: preset `base` plus the keys where a differs (all keys when `all`). */
static void candidate_(const char *preset, const gbtd_arch *base, const gbtd_arch *a, bool all,
                       char *buf, size_t len)
{
    size_t p = (size_t)snprintf(buf, len, "%s:", preset);
    char v[64];
    int n = a->nstages;
    bool nd = all || base->nstages != n;
    if (nd || !stage_list_eq_(base->units, a->units, n)) put_list_(buf, len, &p, "units", a->units, n);
    if (nd || !stage_list_eq_(base->width, a->width, n)) put_list_(buf, len, &p, "width", a->width, n);
    bool need_inner = a->block == GBTD_BLOCK_BOTTLENECK;
    for (int s = 0; s < n; s++) need_inner = need_inner || a->share[s] > 0;
    if (need_inner && (nd || !stage_list_eq_(base->inner, a->inner, n)))
        put_list_(buf, len, &p, "inner", a->inner, n);
    if (nd || !stage_list_eq_(base->groups, a->groups, n))
        put_list_(buf, len, &p, "groups", a->groups, n);
    if (nd || !stage_list_eq_(base->share, a->share, n)) put_list_(buf, len, &p, "share", a->share, n);
    if (nd || !stage_list_eq_(base->stride, a->stride, n))
        put_list_(buf, len, &p, "stride", a->stride, n);
    if (all || base->block != a->block)
        put_kv_(buf, len, &p, "block", a->block == GBTD_BLOCK_BASIC ? "basic" : "bottleneck");
    if (all || base->preact != a->preact) put_kv_(buf, len, &p, "act", a->preact ? "pre" : "post");
    if (all || base->shortcut_a != a->shortcut_a)
        put_kv_(buf, len, &p, "shortcut", a->shortcut_a ? "a" : "b");
    if (all || base->stem != a->stem)
        put_kv_(buf, len, &p, "stem", a->stem == GBTD_STEM_SMALL ? "small" : "imagenet");
    if (all || base->stem_width != a->stem_width) {
        snprintf(v, sizeof v, "%d", a->stem_width);
        put_kv_(buf, len, &p, "stem-width", v);
    }
    if (all || base->in_c != a->in_c || base->in_h != a->in_h || base->in_w != a->in_w) {
        snprintf(v, sizeof v, "%dx%dx%d", a->in_c, a->in_h, a->in_w);
        put_kv_(buf, len, &p, "input", v);
    }
    if (all || base->classes != a->classes) {
        snprintf(v, sizeof v, "%d", a->classes);
        put_kv_(buf, len, &p, "classes", v);
    }
    if (all || base->bn_eps != a->bn_eps) {
        fmt_float_(a->bn_eps, v, sizeof v);
        put_kv_(buf, len, &p, "eps", v);
    }
    if (all || base->bn_momentum != a->bn_momentum) {
        fmt_float_(a->bn_momentum, v, sizeof v);
        put_kv_(buf, len, &p, "momentum", v);
    }
    if (p < len && buf[p - 1] == ':') buf[p - 1] = '\0'; /* the preset itself */
    if (p >= len) buf[0] = '\0';                         /* did not fit */
}

int gbtd_model_arch_spec(const gbtd_arch *arch, char *spec, size_t len)
{
    if (!arch || !spec || len < 2) return gbtd_error(GBTD_EINVAL, "model_arch_spec: bad argument");
    const char *const *pre = gbtd_arch_presets();
    char best[256] = "", cand[256];
    for (int i = 0; pre[i]; i++) {
        gbtd_arch base, back;
        if (gbtd_arch_parse(pre[i], &base)) continue;
        for (int all = 0; all < 2; all++) {
            candidate_(pre[i], &base, arch, all == 1, cand, sizeof cand);
            if (!cand[0] || strlen(cand) >= len) continue;
            if (best[0] && strlen(cand) >= strlen(best)) continue;
            if (gbtd_arch_parse(cand, &back) || !arch_eq_(&back, arch)) continue;
            snprintf(best, sizeof best, "%s", cand);
            break;
        }
    }
    gbtd_clear_error();
    if (!best[0])
        return gbtd_error(GBTD_EINVAL, "no spec string of at most %zu characters describes this "
                          "network", len - 1);
    snprintf(spec, len, "%s", best);
    return GBTD_OK;
}
