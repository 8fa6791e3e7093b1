#define _DEFAULT_SOURCE /* madvise(MADV_HUGEPAGE) */
/* gbtd nn: network graph, slabs, initialisation and counting (the running part is net_run.c). */
#include "nn/net.h"

#include <math.h>
#include <stdint.h>
#include <sys/mman.h>
#include <stdio.h>
#include <string.h>

#include "core/rng.h"
#include "core/status.h"

void gbtd_net_runtime_free_(gbtd_net *net); /* net_run.c */

static int grow_(void **arr, int *cap, int need, size_t elem)
{
    if (need <= *cap) return GBTD_OK;
    int ncap = *cap ? *cap * 2 : 32;
    while (ncap < need) ncap *= 2;
    void *p = gbtd_malloc((size_t)ncap * elem);
    if (!p) return GBTD_ENOMEM;
    if (*arr) {
        memcpy(p, *arr, (size_t)(*cap) * elem);
        gbtd_free(*arr);
    }
    *arr = p;
    *cap = ncap;
    return GBTD_OK;
}

int gbtd_net_init(gbtd_net *net, int c, int h, int w)
{
    if (!net) return gbtd_error(GBTD_EINVAL, "net_init: NULL net");
    memset(net, 0, sizeof *net);
    if (c < 1 || h < 1 || w < 1)
        return gbtd_error(GBTD_EINVAL, "net_init: input shape %dx%dx%d must be positive", c, h, w);
    net->in_c = c;
    net->in_h = h;
    net->in_w = w;
    GBTD_CHECK(grow_((void **)&net->values, &net->cap_values, 1, sizeof(gbtd_value)));
    net->values[0] = (gbtd_value){c, h, w, -1};
    net->nvalues = 1;
    return GBTD_OK;
}

void gbtd_net_free(gbtd_net *net)
{
    if (!net) return;
    gbtd_net_runtime_free_(net);
    gbtd_free(net->layers);
    gbtd_free(net->values);
    gbtd_free(net->entries);
    gbtd_free(net->params);
    gbtd_free(net->grads);
    gbtd_free(net->state);
    memset(net, 0, sizeof *net);
}

static int check_value_(const gbtd_net *net, int v, const char *what)
{
    if (!net || !net->values) return gbtd_error(GBTD_EINVAL, "%s: network not initialised", what);
    if (net->finalized) return gbtd_error(GBTD_EINVAL, "%s: network already finalised", what);
    if (v < 0 || v >= net->nvalues)
        return gbtd_error(GBTD_EINVAL, "%s: value %d out of range (%d values)", what, v,
                          net->nvalues);
    return GBTD_OK;
}

/* Append a layer and its output value; returns a pointer to the zero-initialised layer. */
static int push_layer_(gbtd_net *net, gbtd_layer_kind kind, const char *name, int in, int c,
                       int h, int w, gbtd_layer **out)
{
    GBTD_CHECK(grow_((void **)&net->layers, &net->cap_layers, net->nlayers + 1, sizeof(gbtd_layer)));
    GBTD_CHECK(grow_((void **)&net->values, &net->cap_values, net->nvalues + 1, sizeof(gbtd_value)));
    gbtd_layer *L = &net->layers[net->nlayers];
    memset(L, 0, sizeof *L);
    L->kind = kind;
    if (name) snprintf(L->name, sizeof L->name, "%s", name);
    L->in = in;
    L->in2 = -1;
    L->out = net->nvalues;
    L->c_in = net->values[in].c;
    L->c_out = c;
    L->w = L->b = L->mean = L->var = -1;
    L->shared_with = -1;
    L->k = L->stride = L->groups = 1;
    net->values[net->nvalues++] = (gbtd_value){c, h, w, net->nlayers};
    net->nlayers++;
    *out = L;
    return GBTD_OK;
}

static int add_entry_(gbtd_net *net, const char *module, const char *suffix, gbtd_entry_kind kind,
                      int ndim, const int64_t *shape, int64_t *offset)
{
    GBTD_CHECK(grow_((void **)&net->entries, &net->cap_entries, net->nentries + 1,
                     sizeof(gbtd_net_entry)));
    gbtd_net_entry *e = &net->entries[net->nentries];
    memset(e, 0, sizeof *e);
    int len = snprintf(e->name, sizeof e->name, "%s%s%s", module, module[0] ? "." : "", suffix);
    if (len >= (int)sizeof e->name)
        return gbtd_error(GBTD_EINVAL, "net: parameter name '%s.%s' too long", module, suffix);
    for (int i = 0; i < net->nentries; i++)
        if (!strcmp(net->entries[i].name, e->name))
            return gbtd_error(GBTD_EINVAL, "net: duplicate parameter name '%s'", e->name);
    e->kind = kind;
    e->ndim = ndim;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        e->shape[i] = shape[i];
        numel *= shape[i];
    }
    e->numel = numel;
    bool st = kind == GBTD_ENTRY_BN_MEAN || kind == GBTD_ENTRY_BN_VAR;
    int64_t *count = st ? &net->nstate : &net->nparams;
    e->offset = *count;
    *count += numel;
    *offset = e->offset;
    net->nentries++;
    return GBTD_OK;
}

int gbtd_net_add_conv(gbtd_net *net, const char *name, int in, int c_out, int k, int stride,
                      int pad, int groups, int share_with, int *out)
{
    GBTD_CHECK(check_value_(net, in, "conv"));
    const gbtd_value x = net->values[in];
    if (c_out < 1 || k < 1 || stride < 1 || pad < 0 || groups < 1)
        return gbtd_error(GBTD_EINVAL, "conv %s: bad geometry (c_out %d, k %d, stride %d, pad %d, "
                          "groups %d)", name, c_out, k, stride, pad, groups);
    if (x.c % groups || c_out % groups)
        return gbtd_error(GBTD_EINVAL, "conv %s: groups %d do not divide %d -> %d channels", name,
                          groups, x.c, c_out);
    if (x.h + 2 * pad < k || x.w + 2 * pad < k)
        return gbtd_error(GBTD_EINVAL, "conv %s: kernel %d larger than the padded %dx%d input",
                          name, k, x.h, x.w);
    int h = (x.h + 2 * pad - k) / stride + 1, w = (x.w + 2 * pad - k) / stride + 1;
    int64_t shape[4] = {c_out, x.c / groups, k, k};
    int64_t woff = -1;
    if (share_with >= 0) {
        if (share_with >= net->nlayers || net->layers[share_with].kind != GBTD_LAYER_CONV)
            return gbtd_error(GBTD_EINVAL, "conv %s: layer %d to share with is not a convolution",
                              name, share_with);
        const gbtd_layer *S = &net->layers[share_with];
        if (S->c_out != c_out || S->c_in != x.c || S->k != k || S->groups != groups)
            return gbtd_error(GBTD_EINVAL, "conv %s: shared weight of %s has another shape", name,
                              S->name);
        woff = S->w;
        while (net->layers[share_with].shared_with >= 0)
            share_with = net->layers[share_with].shared_with;
    }
    gbtd_layer *L;
    GBTD_CHECK(push_layer_(net, GBTD_LAYER_CONV, name, in, c_out, h, w, &L));
    L->k = k;
    L->stride = stride;
    L->pad = pad;
    L->groups = groups;
    L->shared_with = share_with;
    if (woff < 0) {
        int rc = add_entry_(net, name, "weight", GBTD_ENTRY_WEIGHT, 4, shape, &woff);
        if (rc) {
            net->nlayers--;
            net->nvalues--;
            return rc;
        }
        L->params = shape[0] * shape[1] * shape[2] * shape[3];
    }
    L->w = woff;
    L->macs = (int64_t)c_out * h * w * (x.c / groups) * k * k;
    *out = L->out;
    return GBTD_OK;
}

int gbtd_net_add_bn(gbtd_net *net, const char *name, int in, bool relu, float eps,
                    float momentum, int *out)
{
    GBTD_CHECK(check_value_(net, in, "bn"));
    const gbtd_value x = net->values[in];
    if (!(eps > 0) || !(momentum >= 0 && momentum <= 1))
        return gbtd_error(GBTD_EINVAL, "bn %s: eps %g / momentum %g out of range", name, eps,
                          momentum);
    int64_t shape[1] = {x.c};
    int64_t g, b, m, v;
    int n0 = net->nentries;
    int64_t p0 = net->nparams, s0 = net->nstate;
    int rc = add_entry_(net, name, "weight", GBTD_ENTRY_BN_WEIGHT, 1, shape, &g);
    if (!rc) rc = add_entry_(net, name, "bias", GBTD_ENTRY_BN_BIAS, 1, shape, &b);
    if (!rc) rc = add_entry_(net, name, "running_mean", GBTD_ENTRY_BN_MEAN, 1, shape, &m);
    if (!rc) rc = add_entry_(net, name, "running_var", GBTD_ENTRY_BN_VAR, 1, shape, &v);
    gbtd_layer *L = NULL;
    if (!rc) rc = push_layer_(net, GBTD_LAYER_BN, name, in, x.c, x.h, x.w, &L);
    if (rc) {
        net->nentries = n0;
        net->nparams = p0;
        net->nstate = s0;
        return rc;
    }
    L->relu = relu;
    L->eps = eps;
    L->momentum = momentum;
    L->w = g;
    L->b = b;
    L->mean = m;
    L->var = v;
    L->params = 2 * (int64_t)x.c;
    L->state = 2 * (int64_t)x.c;
    *out = L->out;
    return GBTD_OK;
}

int gbtd_net_add_relu(gbtd_net *net, int in, int *out)
{
    GBTD_CHECK(check_value_(net, in, "relu"));
    const gbtd_value x = net->values[in];
    gbtd_layer *L;
    GBTD_CHECK(push_layer_(net, GBTD_LAYER_RELU, "", in, x.c, x.h, x.w, &L));
    *out = L->out;
    return GBTD_OK;
}

int gbtd_net_add_maxpool(gbtd_net *net, int in, int k, int stride, int pad, int *out)
{
    GBTD_CHECK(check_value_(net, in, "maxpool"));
    const gbtd_value x = net->values[in];
    if (k < 1 || stride < 1 || pad < 0 || pad > k / 2 || x.h + 2 * pad < k || x.w + 2 * pad < k)
        return gbtd_error(GBTD_EINVAL, "maxpool: bad geometry k %d stride %d pad %d on %dx%d", k,
                          stride, pad, x.h, x.w);
    gbtd_layer *L;
    GBTD_CHECK(push_layer_(net, GBTD_LAYER_MAXPOOL, "", in, x.c, (x.h + 2 * pad - k) / stride + 1,
                           (x.w + 2 * pad - k) / stride + 1, &L));
    L->k = k;
    L->stride = stride;
    L->pad = pad;
    *out = L->out;
    return GBTD_OK;
}

int gbtd_net_add_gap(gbtd_net *net, int in, int *out)
{
    GBTD_CHECK(check_value_(net, in, "gap"));
    gbtd_layer *L;
    GBTD_CHECK(push_layer_(net, GBTD_LAYER_GAP, "", in, net->values[in].c, 1, 1, &L));
    *out = L->out;
    return GBTD_OK;
}

int gbtd_net_add_linear(gbtd_net *net, const char *name, int in, int c_out, int *out)
{
    GBTD_CHECK(check_value_(net, in, "linear"));
    const gbtd_value x = net->values[in];
    if (c_out < 1) return gbtd_error(GBTD_EINVAL, "linear %s: %d outputs", name, c_out);
    int64_t fin = (int64_t)x.c * x.h * x.w;
    int64_t ws[2] = {c_out, fin}, bs[1] = {c_out};
    int64_t w, b;
    int n0 = net->nentries;
    int64_t p0 = net->nparams;
    int rc = add_entry_(net, name, "weight", GBTD_ENTRY_WEIGHT, 2, ws, &w);
    if (!rc) rc = add_entry_(net, name, "bias", GBTD_ENTRY_BIAS, 1, bs, &b);
    gbtd_layer *L = NULL;
    if (!rc) rc = push_layer_(net, GBTD_LAYER_LINEAR, name, in, c_out, 1, 1, &L);
    if (rc) {
        net->nentries = n0;
        net->nparams = p0;
        return rc;
    }
    L->c_in = (int)fin;
    L->w = w;
    L->b = b;
    L->params = fin * c_out + c_out;
    L->macs = fin * c_out;
    *out = L->out;
    return GBTD_OK;
}

int gbtd_net_add_add(gbtd_net *net, int a, int b, bool relu, int *out)
{
    GBTD_CHECK(check_value_(net, a, "add"));
    GBTD_CHECK(check_value_(net, b, "add"));
    const gbtd_value x = net->values[a], y = net->values[b];
    if (x.c != y.c || x.h != y.h || x.w != y.w)
        return gbtd_error(GBTD_EINVAL, "add: shapes %dx%dx%d and %dx%dx%d differ", x.c, x.h, x.w,
                          y.c, y.h, y.w);
    gbtd_layer *L;
    GBTD_CHECK(push_layer_(net, GBTD_LAYER_ADD, "", a, x.c, x.h, x.w, &L));
    L->in2 = b;
    L->relu = relu;
    *out = L->out;
    return GBTD_OK;
}

int gbtd_net_add_shortcut_a(gbtd_net *net, int in, int c_out, int stride, int *out)
{
    GBTD_CHECK(check_value_(net, in, "shortcut_a"));
    const gbtd_value x = net->values[in];
    if (stride != 2 || c_out < x.c || (c_out - x.c) % 2)
        return gbtd_error(GBTD_EINVAL, "shortcut_a: needs stride 2 and an even channel growth "
                          "(got stride %d, %d -> %d)", stride, x.c, c_out);
    gbtd_layer *L;
    GBTD_CHECK(push_layer_(net, GBTD_LAYER_SHORTCUT_A, "", in, c_out, (x.h + 1) / 2, (x.w + 1) / 2,
                           &L));
    L->stride = 2;
    *out = L->out;
    return GBTD_OK;
}

int gbtd_net_init_params(gbtd_net *net, uint64_t seed)
{
    if (!net || !net->finalized) return gbtd_error(GBTD_EINVAL, "init_params: net not finalised");
    gbtd_rng *rng;
    GBTD_CHECK(gbtd_rng_alloc(seed, &rng));
    for (int i = 0; i < net->nentries; i++) {
        const gbtd_net_entry *e = &net->entries[i];
        float *p = gbtd_net_entry_data(net, e);
        switch (e->kind) {
        case GBTD_ENTRY_WEIGHT:
            if (e->ndim == 4) { /* conv: He normal, fan_out = c_out k k */
                double sd = sqrt(2.0 / (double)(e->shape[0] * e->shape[2] * e->shape[3]));
                for (int64_t j = 0; j < e->numel; j++) p[j] = (float)(sd * gbtd_rng_normal(rng));
            } else { /* linear */
                double a = 1.0 / sqrt((double)e->shape[1]);
                for (int64_t j = 0; j < e->numel; j++)
                    p[j] = (float)(a * (2.0 * gbtd_rng_uniform(rng) - 1.0));
            }
            break;
        case GBTD_ENTRY_BIAS: {
            /* fan_in of the linear weight stored just before it */
            double a = 1.0 / sqrt((double)(i > 0 ? net->entries[i - 1].shape[1] : 1));
            for (int64_t j = 0; j < e->numel; j++)
                p[j] = (float)(a * (2.0 * gbtd_rng_uniform(rng) - 1.0));
            break;
        }
        case GBTD_ENTRY_BN_WEIGHT:
        case GBTD_ENTRY_BN_VAR:
            for (int64_t j = 0; j < e->numel; j++) p[j] = 1.0f;
            break;
        case GBTD_ENTRY_BN_BIAS:
        case GBTD_ENTRY_BN_MEAN:
            for (int64_t j = 0; j < e->numel; j++) p[j] = 0.0f;
            break;
        }
    }
    gbtd_rng_free(rng);
    return GBTD_OK;
}

/* Ask for transparent huge pages on a large slab: a ResNet-50 slab is 25 M floats, and 2 MiB
 * pages cut the page faults of its first touch by 512x. Advice only; failure is harmless. */
static void advise_huge_pages(void *p, size_t bytes)
{
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)2 << 20;
    const uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    const uintptr_t b = ((uintptr_t)p + bytes) & ~(huge - 1);
    if (b > a) madvise((void *)a, b - a, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
}

int gbtd_net_finalize_ex(gbtd_net *net, bool init)
{
    if (!net || !net->values) return gbtd_error(GBTD_EINVAL, "net_finalize: net not initialised");
    if (net->finalized) return GBTD_OK;
    const gbtd_value *last = &net->values[net->nvalues - 1];
    if (net->nlayers < 1 || last->h != 1 || last->w != 1)
        return gbtd_error(GBTD_EINVAL, "net_finalize: the last value must be C x 1 x 1 logits "
                          "(is %dx%dx%d)", last->c, last->h, last->w);
    net->classes = last->c;
    /* One pad element past each slab. Without init the parameter and state slabs are left
     * unwritten (the caller fills every entry) and the gradient slab is allocated, zeroed, by
     * the first gbtd_net_zero_grad or gbtd_net_backward (evaluation never needs it). */
    const size_t np = (size_t)net->nparams + 1, ns = (size_t)net->nstate + 1;
    net->params = gbtd_malloc(np * sizeof(float));
    net->grads = init ? gbtd_malloc(np * sizeof(float)) : NULL;
    net->state = init ? gbtd_calloc(ns, sizeof(float)) : gbtd_malloc(ns * sizeof(float));
    if (!net->params || (init && !net->grads) || !net->state) {
        gbtd_free(net->params);
        gbtd_free(net->grads);
        gbtd_free(net->state);
        net->params = net->grads = net->state = NULL;
        return GBTD_ENOMEM;
    }
    advise_huge_pages(net->params, np * sizeof(float));
    if (init) {
        advise_huge_pages(net->grads, np * sizeof(float));
        memset(net->params, 0, np * sizeof(float));
        memset(net->grads, 0, np * sizeof(float));
    }
    net->params[net->nparams] = 0.0f;
    net->state[net->nstate] = 0.0f;
    net->finalized = true;
    if (!init) return GBTD_OK;
    int rc = gbtd_net_init_params(net, 0);
    if (rc) {
        net->finalized = false;
        return rc;
    }
    return GBTD_OK;
}

int gbtd_net_finalize(gbtd_net *net) { return gbtd_net_finalize_ex(net, true); }

const gbtd_net_entry *gbtd_net_find(const gbtd_net *net, const char *name)
{
    for (int i = 0; net && i < net->nentries; i++)
        if (!strcmp(net->entries[i].name, name)) return &net->entries[i];
    return NULL;
}

float *gbtd_net_entry_data(const gbtd_net *net, const gbtd_net_entry *e)
{
    bool st = e->kind == GBTD_ENTRY_BN_MEAN || e->kind == GBTD_ENTRY_BN_VAR;
    float *base = st ? net->state : net->params;
    return base ? base + e->offset : NULL;
}

int64_t gbtd_net_macs(const gbtd_net *net)
{
    int64_t s = 0;
    for (int i = 0; net && i < net->nlayers; i++) s += net->layers[i].macs;
    return s;
}

int64_t gbtd_net_file_bytes(const gbtd_net *net)
{
    return net ? 4 * (net->nparams + net->nstate) : 0;
}
