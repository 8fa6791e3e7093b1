/* gbtd models: building recognised networks and copying the file's tensors into them. */
#define _DEFAULT_SOURCE /* madvise */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/status.h"
#include "models/models_internal.h"

gbtd_model_opts gbtd_model_opts_default(void)
{
    gbtd_model_opts o;
    memset(&o, 0, sizeof o);
    return o;
}

/* v1 post-activation bottleneck network (Keras ResNet): the stride of a stage's first unit
 * sits on its first 1x1 convolution; otherwise as torchvision's graph, with its names. */
static int build_v1_(const gbtd_arch *a, gbtd_net *net)
{
    if (a->block != GBTD_BLOCK_BOTTLENECK || a->preact || a->shortcut_a ||
        a->stem != GBTD_STEM_IMAGENET)
        return gbtd_error(GBTD_EUNSUPPORTED, "stride on the first 1x1 is only supported for "
                          "post-activation bottleneck networks with an ImageNet stem");
    for (int s = 0; s < a->nstages; s++)
        if (a->share[s])
            return gbtd_error(GBTD_EUNSUPPORTED, "stride on the first 1x1: no CRU stages");
    GBTD_CHECK(gbtd_net_init(net, a->in_c, a->in_h, a->in_w));
    float e = a->bn_eps, m = a->bn_momentum;
    int v, rc;
    char nm[GBTD_NET_NAME_LEN];
#define TRY(expr)                                                                                 \
    do {                                                                                          \
        rc = (expr);                                                                              \
        if (rc) goto fail;                                                                        \
    } while (0)
#define NM(leaf) (snprintf(nm, sizeof nm, "layer%d.%d.%s", s + 1, u, leaf), nm)
    TRY(gbtd_net_add_conv(net, "conv1", 0, a->stem_width, 7, 2, 3, 1, -1, &v));
    TRY(gbtd_net_add_bn(net, "bn1", v, true, e, m, &v));
    TRY(gbtd_net_add_maxpool(net, v, 3, 2, 1, &v));
    for (int s = 0; s < a->nstages; s++) {
        for (int u = 0; u < a->units[s]; u++) {
            int stride = u == 0 ? a->stride[s] : 1, x = v, sc = v, p;
            TRY(gbtd_net_add_conv(net, NM("conv1"), x, a->inner[s], 1, stride, 0, 1, -1, &v));
            TRY(gbtd_net_add_bn(net, NM("bn1"), v, true, e, m, &v));
            TRY(gbtd_net_add_conv(net, NM("conv2"), v, a->inner[s], 3, 1, 1, a->groups[s], -1,
                                  &v));
            TRY(gbtd_net_add_bn(net, NM("bn2"), v, true, e, m, &v));
            TRY(gbtd_net_add_conv(net, NM("conv3"), v, a->width[s], 1, 1, 0, 1, -1, &v));
            TRY(gbtd_net_add_bn(net, NM("bn3"), v, false, e, m, &v));
            if (stride != 1 || net->values[x].c != a->width[s]) {
                TRY(gbtd_net_add_conv(net, NM("downsample.0"), x, a->width[s], 1, stride, 0, 1,
                                      -1, &p));
                TRY(gbtd_net_add_bn(net, NM("downsample.1"), p, false, e, m, &sc));
            }
            TRY(gbtd_net_add_add(net, v, sc, true, &v));
        }
    }
    TRY(gbtd_net_add_gap(net, v, &v));
    TRY(gbtd_net_add_linear(net, "fc", v, a->classes, &v));
#undef NM
#undef TRY
    net->classes = a->classes;
    return GBTD_OK;
fail:
    gbtd_net_free(net);
    return rc;
}

int models_build_graph_(const gbtd_arch *arch, bool stride_on_1x1, gbtd_net *net)
{
    memset(net, 0, sizeof *net);
    return stride_on_1x1 ? build_v1_(arch, net) : gbtd_arch_build(arch, net);
}

int gbtd_model_build(const gbtd_model_info *info, const gbtd_model_opts *opts, gbtd_net *net)
{
    if (net) memset(net, 0, sizeof *net);
    if (!info || !net) return gbtd_error(GBTD_EINVAL, "model_build: NULL argument");
    if (info->layout == GBTD_MODEL_UNKNOWN)
        return gbtd_error(GBTD_EINVAL, "model_build: the network was not recognised");
    gbtd_model_opts o = opts ? *opts : gbtd_model_opts_default();
    gbtd_arch a = info->arch;
    if (o.in_c && o.in_c != a.in_c)
        return gbtd_error(GBTD_ESHAPE, "%s takes %d input channels, not %d", info->family, a.in_c,
                          o.in_c);
    if (o.in_h) a.in_h = o.in_h;
    if (o.in_w) a.in_w = o.in_w;
    char spec[128];
    GBTD_CHECK(gbtd_model_arch_spec(&a, spec, sizeof spec - 3));
    GBTD_CHECK(models_build_graph_(&a, info->stride_on_1x1, net));
    snprintf(net->spec, sizeof net->spec, "%s%.124s", info->stride_on_1x1 ? "v1:" : "", spec);
    int rc = gbtd_net_finalize_ex(net, !o.no_init);
    if (rc) gbtd_net_free(net);
    return rc;
}

/* Drop the file pages of [p, p + n) from the resident set once copied (mapped sets only):
 * keeps the peak RSS of a load near one copy of the weights. */
static void release_pages_(const gbtd_tensor_set *s, const void *p, size_t n)
{
    if (!s->map) return;
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0) return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
    uintptr_t b = ((uintptr_t)p + n) & ~((uintptr_t)pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

/* fd >= 0: the file the set maps; float32 tensors are then read with pread straight into the
 * slab (one copy from the page cache, no page faults on the mapping). */
static int assign_(const gbtd_model_info *info, const gbtd_tensor_set *s, const char *what,
                   gbtd_net *net, int fd);

int gbtd_model_assign(const gbtd_model_info *info, const gbtd_tensor_set *s, const char *what,
                      gbtd_net *net)
{
    return assign_(info, s, what, net, -1);
}

static bool pread_all_(int fd, void *dst, size_t n, off_t off)
{
    char *p = dst;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, off);
        if (r <= 0) return false;
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return true;
}

static int assign_(const gbtd_model_info *info, const gbtd_tensor_set *s, const char *what,
                   gbtd_net *net, int fd)
{
    if (!info || !s || !net || !net->finalized)
        return gbtd_error(GBTD_EINVAL, "model_assign: NULL argument or unfinalised network");
    if (!what) what = "weights";
    char why[512];
    int rc = models_match_(info, net, s, why, sizeof why);
    if (rc == GBTD_ENOMEM) return rc;
    if (rc) return gbtd_error(rc, "%s: %s", what, why);
    char fname[256];
    for (int i = 0; i < net->nentries && !rc; i++) {
        const gbtd_net_entry *e = &net->entries[i];
        bool tr;
        models_file_name_(info, e->name, fname, sizeof fname, &tr);
        const gbtd_named_tensor *t = gbtd_tensor_set_find(s, fname);
        float *dst = gbtd_net_entry_data(net, e);
        if (tr) { /* Keras Dense kernel (in, out) -> (out, in) */
            float *tmp = gbtd_malloc((size_t)e->numel * sizeof(float));
            if (!tmp) return GBTD_ENOMEM;
            rc = gbtd_named_tensor_to_float(t, tmp);
            const int64_t in = e->shape[1], out = e->shape[0];
            for (int64_t o = 0; !rc && o < out; o++)
                for (int64_t k = 0; k < in; k++) dst[o * in + k] = tmp[k * out + o];
            gbtd_free(tmp);
        } else if (fd >= 0 && s->map && t->dtype == GBTD_DTYPE_F32 &&
                   pread_all_(fd, dst, t->nbytes, (off_t)((const char *)t->data - (const char *)s->map))) {
            continue;
        } else {
            rc = gbtd_named_tensor_to_float(t, dst);
        }
        release_pages_(s, t->data, t->nbytes);
    }
    if (rc || info->layout != GBTD_MODEL_KERAS) return rc;
    /* Keras convolution biases: BN(conv(x) + b) with mean m is BN(conv(x)) with mean m - b */
    for (int l = 0; l < net->nlayers && !rc; l++) {
        const gbtd_layer *L = &net->layers[l];
        if (L->kind != GBTD_LAYER_CONV) continue;
        char wname[GBTD_NET_NAME_LEN + 8];
        bool tr;
        snprintf(wname, sizeof wname, "%s.weight", L->name);
        if (!models_file_name_(info, wname, fname, sizeof fname, &tr)) continue;
        char *k = strstr(fname, "kernel:0");
        if (!k) continue;
        snprintf(k, sizeof fname - (size_t)(k - fname), "bias:0");
        const gbtd_named_tensor *bt = gbtd_tensor_set_find(s, fname);
        if (!bt) continue;
        const gbtd_layer *B = NULL;
        for (int j = l + 1; j < net->nlayers && !B; j++)
            if (net->layers[j].kind == GBTD_LAYER_BN && net->layers[j].in == L->out)
                B = &net->layers[j];
        if (!B) return gbtd_error(GBTD_EUNSUPPORTED, "%s: bias '%s' of a convolution without a "
                                  "batch norm after it", what, fname);
        float *bias = gbtd_malloc((size_t)L->c_out * sizeof(float));
        if (!bias) return GBTD_ENOMEM;
        rc = gbtd_named_tensor_to_float(bt, bias);
        for (int c = 0; !rc && c < L->c_out; c++) net->state[B->mean + c] -= bias[c];
        gbtd_free(bias);
    }
    return rc;
}

int gbtd_model_load(const char *path, const gbtd_model_opts *opts, gbtd_net *net,
                    gbtd_model_info *info)
{
    if (net) memset(net, 0, sizeof *net);
    if (!path || !net) return gbtd_error(GBTD_EINVAL, "model_load: NULL argument");
    gbtd_tensor_set s;
    gbtd_file_format fmt;
    GBTD_CHECK(gbtd_model_read(path, &s, &fmt));
    gbtd_model_info mi;
    int rc = gbtd_model_recognize(&s, path, &mi);
    mi.format = fmt;
    gbtd_model_opts o = opts ? *opts : gbtd_model_opts_default();
    o.no_init = true; /* every slab value comes from the file */
    if (!rc) rc = gbtd_model_build(&mi, &o, net);
    if (!rc) {
        int fd = s.map ? open(path, O_RDONLY) : -1;
        rc = assign_(&mi, &s, path, net, fd);
        if (fd >= 0) close(fd);
        if (rc) gbtd_net_free(net);
    }
    gbtd_tensor_set_free(&s);
    if (info) *info = mi;
    return rc;
}
