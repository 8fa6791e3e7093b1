/* gbtd nn: forward, loss and backward of a gbtd_net over the layer kernels of nn/ops.h.
 *
 * Memory: every value of a training forward is kept for the backward (batch-norm layers fuse
 * their ReLU, so a conv-BN-ReLU costs two activations). Gradients of values live only while
 * needed: a plan made once per batch size assigns each value's gradient to a slot of a small
 * pool, reused as soon as the producing layer's backward has run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/status.h"
#include "nn/net.h"
#include "nn/ops.h"
#include "nn/ops_internal.h"

void gbtd_net_runtime_free_(gbtd_net *net);

struct gbtd_net_runtime {
    int n;               /* batch capacity */
    int cur_n;           /* batch of the last forward */
    int threads;         /* thread count the workspace was sized for */
    bool trained;        /* last forward was a training one */
    bool want_dx;        /* compute the gradient of the input value */
    bool have_dlogits;
    float *arena;        /* activations of all values except the input */
    float **act;         /* per value (act[0] = the caller's input) */
    float *bn_cache;     /* mean and rstd per BN layer */
    int64_t *bn_off;     /* per layer offset into bn_cache and bn_map (-1) */
    /* A batch norm without ReLU whose output only a residual add reads runs inside the add
     * (nn_bn_add_forward): its output is computed on demand (gbtd_net_value). */
    int *fuse_add;       /* per layer: the add a BN layer is deferred to (-1: not deferred) */
    bool *deferred;      /* per value: a deferred BN output, not computed in the last forward */
    float *bn_map;       /* scale and shift per BN layer, as used (deferred ones, and the
                          * ReLU ones' masks in the backward) */
    int nfused;          /* BN layers deferred in the last forward */
    int32_t *argmax;     /* max-pool caches */
    int64_t *am_off;     /* per layer offset into argmax (-1) */
    float *ws;
    size_t ws_len;
    float *probs;        /* n x classes softmax */
    int32_t *labels;
    /* gradient pool */
    int nslots;
    float **slot;        /* slot buffers */
    int *gslot;          /* per value: slot holding its gradient (-1 none) */
    bool *zero_in, *zero_in2; /* per layer: zero the input gradient before accumulating */
    int64_t bytes;
    double *prof;        /* GBTD_PROFILE set: per layer forward and backward seconds */
    int64_t prof_steps;  /* training forwards profiled */
    /* extra value gradients for the next backward (gbtd_net_add_value_grad) */
    int ninj, cap_inj;
    struct value_grad_ {
        int value;
        float scale;
        const float *grad;
    } *inj;
};

static double prof_now_(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static const char *kind_name_(int kind)
{
    switch (kind) {
    case GBTD_LAYER_CONV: return "conv";
    case GBTD_LAYER_BN: return "bn";
    case GBTD_LAYER_RELU: return "relu";
    case GBTD_LAYER_MAXPOOL: return "maxpool";
    case GBTD_LAYER_GAP: return "gap";
    case GBTD_LAYER_LINEAR: return "linear";
    case GBTD_LAYER_ADD: return "add";
    case GBTD_LAYER_SHORTCUT_A: return "shortcut-a";
    }
    return "?";
}

/* GBTD_PROFILE: the time per layer kind (forward / backward, training passes only) and the ten
 * slowest layers (GBTD_PROFILE=all: every layer), on stderr when the runtime is released. */
static void prof_print_(const gbtd_net *net, const gbtd_net_runtime *rt)
{
    enum { NK = 8 };
    double kf[NK + 1] = {0}, kb[NK + 1] = {0}, total = 0.0;
    const int nl = net->nlayers;
    for (int i = 0; i < nl; i++) {
        int k = net->layers[i].kind;
        if (k < 0 || k > NK) k = NK;
        kf[k] += rt->prof[2 * i];
        kb[k] += rt->prof[2 * i + 1];
        total += rt->prof[2 * i] + rt->prof[2 * i + 1];
    }
    if (total <= 0.0) return;
    fprintf(stderr, "profile: %lld training passes, %.3f s\n  kind          forward  backward  share\n",
            (long long)rt->prof_steps, total);
    for (int k = 0; k <= NK; k++)
        if (kf[k] + kb[k] > 0.0)
            fprintf(stderr, "  %-12s %8.3f  %8.3f  %5.1f %%\n", kind_name_(k), kf[k], kb[k],
                    100.0 * (kf[k] + kb[k]) / total);
    fprintf(stderr, "  slowest layers (forward + backward):\n");
    bool *done = calloc((size_t)nl + 1, sizeof(bool));
    if (!done) return;
    const char *env = getenv("GBTD_PROFILE");
    const int shown = env && !strcmp(env, "all") ? nl : 10;
    for (int r = 0; r < shown && r < nl; r++) {
        int best = -1;
        for (int i = 0; i < nl; i++)
            if (!done[i] && (best < 0 || rt->prof[2 * i] + rt->prof[2 * i + 1] >
                                             rt->prof[2 * best] + rt->prof[2 * best + 1]))
                best = i;
        done[best] = true;
        const gbtd_layer *L = &net->layers[best];
        fprintf(stderr, "  %4d %-28s %-10s %8.3f  %8.3f\n", best, L->name,
                kind_name_(L->kind), rt->prof[2 * best], rt->prof[2 * best + 1]);
    }
    free(done);
}

static int64_t numel_(const gbtd_value *v) { return (int64_t)v->c * v->h * v->w; }

void gbtd_net_runtime_free_(gbtd_net *net)
{
    gbtd_net_runtime *rt = net ? net->rt : NULL;
    if (!rt) return;
    if (rt->prof) {
        prof_print_(net, rt);
        free(rt->prof);
    }
    gbtd_free(rt->arena);
    gbtd_free(rt->act);
    gbtd_free(rt->bn_cache);
    gbtd_free(rt->bn_off);
    gbtd_free(rt->fuse_add);
    gbtd_free(rt->deferred);
    gbtd_free(rt->bn_map);
    gbtd_free(rt->argmax);
    gbtd_free(rt->am_off);
    gbtd_free(rt->ws);
    gbtd_free(rt->probs);
    gbtd_free(rt->labels);
    for (int i = 0; i < rt->nslots; i++) gbtd_free(rt->slot[i]);
    gbtd_free(rt->slot);
    gbtd_free(rt->gslot);
    gbtd_free(rt->zero_in);
    gbtd_free(rt->zero_in2);
    gbtd_free(rt->inj);
    gbtd_free(rt);
    net->rt = NULL;
}

static gbtd_conv2d_shape conv_shape_(const gbtd_net *net, const gbtd_layer *L, int n)
{
    const gbtd_value *x = &net->values[L->in];
    gbtd_conv2d_shape s = gbtd_conv2d_shape_make(n, x->c, x->h, x->w, L->c_out, L->k, L->stride,
                                                 L->pad, L->groups);
    gbtd_conv2d_shape_init(&s);
    return s;
}

/* Plan the gradient slots: walk the layers backwards; a layer needs its output's gradient
 * (already live) and the gradients of its inputs (allocated at first use, zeroed then); its
 * output's slot is free after it. Slots are reused best-fit by size. */
static int plan_grads_(gbtd_net *net, gbtd_net_runtime *rt, int64_t n)
{
    int nv = net->nvalues, nl = net->nlayers;
    int64_t *slot_size = gbtd_calloc((size_t)nv + 1, sizeof(int64_t));
    bool *slot_free = gbtd_calloc((size_t)nv + 1, sizeof(bool));
    rt->gslot = gbtd_malloc((size_t)nv * sizeof(int));
    rt->zero_in = gbtd_calloc((size_t)nl, sizeof(bool));
    rt->zero_in2 = gbtd_calloc((size_t)nl, sizeof(bool));
    if (!slot_size || !slot_free || !rt->gslot || !rt->zero_in || !rt->zero_in2) {
        gbtd_free(slot_size);
        gbtd_free(slot_free);
        return GBTD_ENOMEM;
    }
    for (int v = 0; v < nv; v++) rt->gslot[v] = -1;
    int ns = 0;
#define TAKE(v, flag)                                                                             \
    do {                                                                                          \
        if (rt->gslot[v] < 0) {                                                                   \
            int64_t need = n * numel_(&net->values[v]);                                           \
            int best = -1;                                                                        \
            for (int q = 0; q < ns; q++)                                                          \
                if (slot_free[q] && slot_size[q] >= need &&                                       \
                    (best < 0 || slot_size[q] < slot_size[best]))                                 \
                    best = q;                                                                     \
            if (best < 0) {                                                                       \
                best = ns++;                                                                      \
                slot_size[best] = need;                                                           \
            }                                                                                     \
            slot_free[best] = false;                                                              \
            rt->gslot[v] = best;                                                                  \
            flag = true;                                                                          \
        }                                                                                         \
    } while (0)
    bool dummy = false;
    TAKE(nv - 1, dummy);
    (void)dummy;
    for (int i = nl - 1; i >= 0; i--) {
        const gbtd_layer *L = &net->layers[i];
        if (rt->gslot[L->out] < 0) continue; /* an output nothing reads: no gradient flows back */
        if (L->in > 0 || rt->want_dx) TAKE(L->in, rt->zero_in[i]);
        if (L->in2 > 0 || (L->in2 == 0 && rt->want_dx)) TAKE(L->in2, rt->zero_in2[i]);
        if (rt->gslot[L->out] >= 0) slot_free[rt->gslot[L->out]] = true;
    }
#undef TAKE
    rt->slot = gbtd_calloc((size_t)ns + 1, sizeof(float *));
    int rc = rt->slot ? GBTD_OK : GBTD_ENOMEM;
    rt->nslots = ns;
    for (int q = 0; q < ns && !rc; q++) {
        rt->slot[q] = gbtd_malloc((size_t)slot_size[q] * sizeof(float));
        if (!rt->slot[q]) rc = GBTD_ENOMEM;
        rt->bytes += slot_size[q] * 4;
    }
    gbtd_free(slot_size);
    gbtd_free(slot_free);
    return rc;
}

/* fuse_add: each batch norm without ReLU whose output is read by one layer only, a residual add,
 * runs inside that add (unless GBTD_NN_NO_FUSE is set to other than "0"). */
static void plan_fusion_(const gbtd_net *net, gbtd_net_runtime *rt)
{
    const char *off = getenv("GBTD_NN_NO_FUSE");
    const bool none = off && strcmp(off, "0");
    for (int i = 0; i < net->nlayers; i++) {
        const gbtd_layer *L = &net->layers[i];
        rt->fuse_add[i] = -1;
        if (none || L->kind != GBTD_LAYER_BN || L->relu) continue;
        int reader = -1, readers = 0;
        for (int j = i + 1; j < net->nlayers; j++) {
            const gbtd_layer *R = &net->layers[j];
            const int uses = (R->in == L->out) + (R->in2 == L->out);
            if (uses) reader = j;
            readers += uses;
        }
        if (readers == 1 && net->layers[reader].kind == GBTD_LAYER_ADD) rt->fuse_add[i] = reader;
    }
}

static int runtime_alloc_(gbtd_net *net, int n)
{
    bool want_dx = net->rt ? net->rt->want_dx : false;
    gbtd_net_runtime_free_(net);
    gbtd_net_runtime *rt = gbtd_calloc(1, sizeof *rt);
    if (!rt) return GBTD_ENOMEM;
    net->rt = rt;
    rt->n = n;
    rt->want_dx = want_dx;
    rt->threads = gbtd_get_threads();
    int nv = net->nvalues, nl = net->nlayers;
    int64_t total = 0, bn = 0, am = 0;
    for (int v = 1; v < nv; v++) total += (int64_t)n * numel_(&net->values[v]);
    rt->act = gbtd_calloc((size_t)nv, sizeof(float *));
    rt->bn_off = gbtd_malloc((size_t)nl * sizeof(int64_t));
    rt->am_off = gbtd_malloc((size_t)nl * sizeof(int64_t));
    rt->fuse_add = gbtd_malloc((size_t)nl * sizeof(int));
    rt->deferred = gbtd_calloc((size_t)nv, sizeof(bool));
    if (!rt->act || !rt->bn_off || !rt->am_off || !rt->fuse_add || !rt->deferred) goto oom;
    plan_fusion_(net, rt);
    size_t ws = 0;
    for (int i = 0; i < nl; i++) {
        const gbtd_layer *L = &net->layers[i];
        rt->bn_off[i] = rt->am_off[i] = -1;
        if (L->kind == GBTD_LAYER_BN) {
            rt->bn_off[i] = bn;
            bn += 2 * L->c_out;
        } else if (L->kind == GBTD_LAYER_MAXPOOL) {
            rt->am_off[i] = am;
            am += (int64_t)n * numel_(&net->values[L->out]);
        } else if (L->kind == GBTD_LAYER_CONV) {
            gbtd_conv2d_shape s = conv_shape_(net, L, n);
            size_t w = gbtd_conv2d_workspace_size(&s, rt->threads);
            if (w > ws) ws = w;
        }
    }
    rt->arena = gbtd_malloc((size_t)total * sizeof(float) + 64);
    rt->bn_cache = gbtd_malloc((size_t)bn * sizeof(float) + 64);
    rt->bn_map = gbtd_malloc((size_t)bn * sizeof(float) + 64);
    rt->argmax = gbtd_malloc((size_t)am * sizeof(int32_t) + 64);
    rt->ws = gbtd_malloc(ws * sizeof(float) + 64);
    rt->ws_len = ws;
    rt->probs = gbtd_malloc((size_t)n * (size_t)net->classes * sizeof(float));
    rt->labels = gbtd_malloc((size_t)n * sizeof(int32_t));
    if (!rt->arena || !rt->bn_cache || !rt->bn_map || !rt->argmax || !rt->ws || !rt->probs || !rt->labels)
        goto oom;
    rt->bytes = total * 4 + bn * 4 + am * 4 + (int64_t)ws * 4;
    int64_t off = 0;
    for (int v = 1; v < nv; v++) {
        rt->act[v] = rt->arena + off;
        off += (int64_t)n * numel_(&net->values[v]);
    }
    if (plan_grads_(net, rt, n)) goto oom;
    if (getenv("GBTD_PROFILE")) rt->prof = calloc(2 * (size_t)nl + 1, sizeof(double));
    return GBTD_OK;
oom:
    gbtd_net_runtime_free_(net);
    return gbtd_error(GBTD_ENOMEM, "net: out of memory for activations of batch %d", n);
}

void gbtd_net_want_input_grad(gbtd_net *net, bool want)
{
    if (!net) return;
    if (net->rt && net->rt->want_dx != want) {
        gbtd_net_runtime_free_(net);
    }
    if (!net->rt && want) {
        /* remembered until the next allocation */
        net->rt = gbtd_calloc(1, sizeof *net->rt);
        if (net->rt) net->rt->want_dx = true;
    }
}

/* Operand v of a residual add: its deferred batch norm (input, parameters, statistics) or the
 * value itself. */
static void side_(const gbtd_net *net, int v, nn_bn_side *d)
{
    const gbtd_net_runtime *rt = net->rt;
    memset(d, 0, sizeof *d);
    d->x = rt->act[v];
    if (!rt->deferred[v]) return;
    const int p = net->values[v].producer;
    const gbtd_layer *B = &net->layers[p];
    d->x = rt->act[B->in];
    d->bn = 1;
    d->gamma = net->params + B->w;
    d->beta = net->params + B->b;
    d->eps = B->eps;
    d->momentum = B->momentum;
    d->running_mean = net->state + B->mean;
    d->running_var = net->state + B->var;
    d->mean = rt->bn_cache + rt->bn_off[p];
    d->rstd = d->mean + B->c_out;
    d->scale = rt->bn_map + rt->bn_off[p];
    d->shift = d->scale + B->c_out;
}

/* Layers 0..last of a forward pass (the whole pass: last = nlayers - 1). */
static int forward_(gbtd_net *net, const float *x, int n, bool training, int last)
{
    if (!net || !net->finalized || !x || n < 1)
        return gbtd_error(GBTD_EINVAL, "net_forward: %s", !net || !net->finalized
                          ? "network not finalised" : !x ? "NULL input" : "batch size < 1");
    if (training && n < 2)
        return gbtd_error(GBTD_EINVAL, "net_forward: training needs a batch of at least 2 "
                          "(batch statistics)");
    if (!net->rt || net->rt->n < n || net->rt->threads != gbtd_get_threads())
        GBTD_CHECK(runtime_alloc_(net, n));
    gbtd_net_runtime *rt = net->rt;
    rt->act[0] = (float *)x;
    rt->cur_n = n;
    rt->trained = training;
    rt->have_dlogits = false;
    rt->ninj = 0;
    double *prof = training ? rt->prof : NULL;
    if (prof) rt->prof_steps++;
    memset(rt->deferred, 0, (size_t)net->nvalues * sizeof *rt->deferred);
    rt->nfused = 0;
    for (int i = 0; i <= last; i++) {
        const gbtd_layer *L = &net->layers[i];
        const gbtd_value *vi = &net->values[L->in], *vo = &net->values[L->out];
        const double t0 = prof ? prof_now_() : 0.0;
        const float *in = rt->act[L->in];
        float *out = rt->act[L->out];
        int rc = GBTD_OK;
        switch (L->kind) {
        case GBTD_LAYER_CONV: {
            gbtd_conv2d_shape s = conv_shape_(net, L, n);
            rc = gbtd_conv2d_forward(&s, in, net->params + L->w, NULL, out, rt->ws, rt->ws_len);
            break;
        }
        case GBTD_LAYER_BN: {
            if (rt->fuse_add[i] >= 0 && rt->fuse_add[i] <= last) { /* runs in its add */
                rt->deferred[L->out] = true;
                rt->nfused++;
                break;
            }
            gbtd_bn_shape s = {n, vi->c, (int64_t)vi->h * vi->w};
            const float *g = net->params + L->w, *b = net->params + L->b;
            float *rm = net->state + L->mean, *rv = net->state + L->var;
            float *mean = rt->bn_cache + rt->bn_off[i], *rstd = mean + L->c_out;
            if (training) {
                /* with ReLU, the affine map is kept: the backward takes the mask from the input */
                float *map = rt->bn_map + rt->bn_off[i];
                rc = L->relu ? nn_bn_relu_forward_train_map(&s, in, g, b, L->eps, L->momentum, rm,
                                                            rv, mean, rstd, out, map,
                                                            map + L->c_out)
                             : gbtd_bn_forward_train(&s, in, g, b, L->eps, L->momentum, rm, rv,
                                                     mean, rstd, out);
            } else {
                rc = L->relu ? gbtd_bn_relu_forward_eval(&s, in, g, b, L->eps, rm, rv, out)
                             : gbtd_bn_forward_eval(&s, in, g, b, L->eps, rm, rv, out);
            }
            break;
        }
        case GBTD_LAYER_RELU:
            rc = gbtd_relu_forward(n * numel_(vi), in, out);
            break;
        case GBTD_LAYER_MAXPOOL: {
            gbtd_pool2d_shape s = gbtd_pool2d_shape_make(n, vi->c, vi->h, vi->w, L->k, L->stride,
                                                         L->pad);
            gbtd_pool2d_shape_init(&s);
            rc = gbtd_maxpool2d_forward(&s, in, out, rt->argmax + rt->am_off[i]);
            break;
        }
        case GBTD_LAYER_GAP:
            rc = gbtd_global_avgpool_forward(n, vi->c, (int64_t)vi->h * vi->w, in, out);
            break;
        case GBTD_LAYER_LINEAR:
            rc = gbtd_linear_forward(n, L->c_in, L->c_out, in, net->params + L->w,
                                     net->params + L->b, out);
            break;
        case GBTD_LAYER_ADD:
            if (rt->deferred[L->in] || rt->deferred[L->in2]) {
                gbtd_bn_shape s = {n, vo->c, (int64_t)vo->h * vo->w};
                nn_bn_side a, b;
                side_(net, L->in, &a);
                side_(net, L->in2, &b);
                rc = nn_bn_add_forward(&s, &a, &b, training, L->relu, out);
            } else {
                rc = L->relu ? gbtd_add_relu_forward(n * numel_(vo), in, rt->act[L->in2], out)
                             : gbtd_add_forward(n * numel_(vo), in, rt->act[L->in2], out);
            }
            break;
        case GBTD_LAYER_SHORTCUT_A:
            rc = gbtd_shortcut_a_forward(n, vi->c, vi->h, vi->w, (L->c_out - L->c_in) / 2, in, out);
            break;
        }
        if (prof) prof[2 * i] += prof_now_() - t0;
        if (rc) return rc;
    }
    return GBTD_OK;
}

int gbtd_net_forward(gbtd_net *net, const float *x, int n, bool training, const float **logits)
{
    GBTD_CHECK(forward_(net, x, n, training, net ? net->nlayers - 1 : 0));
    if (logits) *logits = net->rt->act[net->nvalues - 1];
    return GBTD_OK;
}

int gbtd_net_forward_until(gbtd_net *net, const float *x, int n, int last)
{
    if (net && (last < 0 || last >= net->nlayers))
        return gbtd_error(GBTD_EINVAL, "net_forward_until: layer %d out of range [0, %d)", last,
                          net->nlayers);
    return forward_(net, x, n, false, net ? last : 0);
}

int gbtd_net_loss(gbtd_net *net, const int32_t *labels, float label_smoothing, double *loss,
                  int *correct)
{
    if (!net || !net->rt || !net->rt->cur_n || !labels)
        return gbtd_error(GBTD_EINVAL, "net_loss: no forward pass yet or NULL labels");
    gbtd_net_runtime *rt = net->rt;
    int n = rt->cur_n, k = net->classes;
    const float *lg = rt->act[net->nvalues - 1];
    float l = 0;
    GBTD_CHECK(gbtd_xent_forward(n, k, lg, labels, label_smoothing, rt->probs, NULL, &l));
    if (loss) *loss = l;
    if (correct) {
        int c = 0;
        for (int i = 0; i < n; i++) {
            int best = 0;
            for (int j = 1; j < k; j++)
                if (lg[(int64_t)i * k + j] > lg[(int64_t)i * k + best]) best = j;
            c += best == labels[i];
        }
        *correct = c;
    }
    if (rt->trained) {
        float *d = rt->slot[rt->gslot[net->nvalues - 1]];
        memset(d, 0, (size_t)n * (size_t)k * sizeof(float));
        GBTD_CHECK(gbtd_xent_backward(n, k, rt->probs, labels, label_smoothing, 1.0f, d));
        rt->have_dlogits = true;
    }
    return GBTD_OK;
}

int gbtd_net_set_dlogits(gbtd_net *net, const float *dlogits)
{
    if (!net || !net->rt || !net->rt->trained || !dlogits)
        return gbtd_error(GBTD_EINVAL, "net_set_dlogits: no training forward pass yet");
    gbtd_net_runtime *rt = net->rt;
    memcpy(rt->slot[rt->gslot[net->nvalues - 1]], dlogits,
           (size_t)rt->cur_n * (size_t)net->classes * sizeof(float));
    rt->have_dlogits = true;
    return GBTD_OK;
}

/* The gradient slab of a net finalised without init is allocated on first use. */
static int ensure_grads(gbtd_net *net)
{
    if (net->grads) return GBTD_OK;
    net->grads = gbtd_calloc((size_t)net->nparams + 1, sizeof(float));
    return net->grads ? GBTD_OK : GBTD_ENOMEM;
}

void gbtd_net_zero_grad(gbtd_net *net)
{
    if (!net || !net->finalized) return;
    if (!net->grads) {
        ensure_grads(net); /* calloc'd: already zero; a failure is reported by backward */
        return;
    }
    memset(net->grads, 0, (size_t)net->nparams * sizeof(float));
}

int gbtd_net_add_value_grad(gbtd_net *net, int value, const float *grad, float scale)
{
    if (!net || !net->rt || !net->rt->trained || !net->rt->cur_n)
        return gbtd_error(GBTD_EINVAL, "net_add_value_grad: needs a training forward first");
    gbtd_net_runtime *rt = net->rt;
    if (value < 1 || value >= net->nvalues)
        return gbtd_error(GBTD_EINVAL, "net_add_value_grad: value %d is not a layer output "
                          "(1 to %d)", value, net->nvalues - 1);
    if (!grad || !isfinite(scale))
        return gbtd_error(GBTD_EINVAL, "net_add_value_grad: %s", grad ? "scale not finite"
                          : "NULL gradient");
    if (rt->gslot[value] < 0)
        return gbtd_error(GBTD_EINVAL, "net_add_value_grad: value %d is read by no layer (it has "
                          "no gradient)", value);
    if (rt->ninj == rt->cap_inj) {
        const int cap = rt->cap_inj ? 2 * rt->cap_inj : 8;
        struct value_grad_ *p = gbtd_malloc((size_t)cap * sizeof *p);
        if (!p) return gbtd_error(GBTD_ENOMEM, "net_add_value_grad: out of memory");
        if (rt->ninj) memcpy(p, rt->inj, (size_t)rt->ninj * sizeof *p);
        gbtd_free(rt->inj);
        rt->inj = p;
        rt->cap_inj = cap;
    }
    rt->inj[rt->ninj++] = (struct value_grad_){value, scale, grad};
    return GBTD_OK;
}

/* Add the recorded extra gradients of value v into its slot: called just before the backward
 * of v's producer, when every consumer of v has added its part. */
static void add_value_grads_(const gbtd_net *net, gbtd_net_runtime *rt, int v)
{
    const int64_t len = (int64_t)rt->cur_n * numel_(&net->values[v]);
    for (int j = 0; j < rt->ninj; j++) {
        if (rt->inj[j].value != v) continue;
        float *d = rt->slot[rt->gslot[v]];
        const float *g = rt->inj[j].grad;
        const float s = rt->inj[j].scale;
        for (int64_t e = 0; e < len; e++) d[e] += s * g[e];
    }
}

int gbtd_net_backward(gbtd_net *net)
{
    if (!net || !net->rt || !net->rt->trained || !net->rt->have_dlogits)
        return gbtd_error(GBTD_EINVAL, "net_backward: needs a training forward and the loss "
                          "gradient (gbtd_net_loss or gbtd_net_set_dlogits) first");
    GBTD_CHECK(ensure_grads(net));
    gbtd_net_runtime *rt = net->rt;
    const int n = rt->cur_n;
    for (int i = net->nlayers - 1; i >= 0; i--) {
        const gbtd_layer *L = &net->layers[i];
        const gbtd_value *vi = &net->values[L->in], *vo = &net->values[L->out];
        const double t0 = rt->prof ? prof_now_() : 0.0;
        if (rt->ninj) add_value_grads_(net, rt, L->out);
        if (rt->gslot[L->out] < 0) continue; /* planned without a gradient (plan_grads_) */
        const float *dy = rt->slot[rt->gslot[L->out]];
        float *dx = rt->gslot[L->in] >= 0 ? rt->slot[rt->gslot[L->in]] : NULL;
        float *dx2 = L->in2 >= 0 && rt->gslot[L->in2] >= 0 ? rt->slot[rt->gslot[L->in2]] : NULL;
        /* these write rather than add their input's first gradient: no memset */
        const bool store = L->kind == GBTD_LAYER_ADD || L->kind == GBTD_LAYER_CONV ||
                           L->kind == GBTD_LAYER_BN;
        if (dx && rt->zero_in[i] && !store)
            memset(dx, 0, (size_t)(n * numel_(vi)) * sizeof(float));
        if (dx2 && rt->zero_in2[i] && L->kind != GBTD_LAYER_ADD)
            memset(dx2, 0, (size_t)(n * numel_(&net->values[L->in2])) * sizeof(float));
        const float *x = rt->act[L->in], *y = rt->act[L->out];
        int rc = GBTD_OK;
        switch (L->kind) {
        case GBTD_LAYER_CONV: {
            gbtd_conv2d_shape s = conv_shape_(net, L, n);
            rc = nn_conv2d_backward_set(&s, x, net->params + L->w, dy, dx, net->grads + L->w,
                                        NULL, rt->ws, rt->ws_len, dx && rt->zero_in[i]);
            break;
        }
        case GBTD_LAYER_BN: {
            gbtd_bn_shape s = {n, vi->c, (int64_t)vi->h * vi->w};
            const float *mean = rt->bn_cache + rt->bn_off[i], *rstd = mean + L->c_out;
            const float *map = rt->bn_map + rt->bn_off[i];
            rc = L->relu ? nn_bn_relu_backward_map(&s, x, net->params + L->w, mean, rstd, map,
                                                   map + L->c_out, dy, dx, net->grads + L->w,
                                                   net->grads + L->b, dx && rt->zero_in[i])
                         : nn_bn_backward_set(&s, x, net->params + L->w, mean, rstd, NULL, dy, dx,
                                              net->grads + L->w, net->grads + L->b,
                                              dx && rt->zero_in[i]);
            break;
        }
        case GBTD_LAYER_RELU:
            if (dx) rc = gbtd_relu_backward(n * numel_(vi), y, dy, dx);
            break;
        case GBTD_LAYER_MAXPOOL: {
            gbtd_pool2d_shape s = gbtd_pool2d_shape_make(n, vi->c, vi->h, vi->w, L->k, L->stride,
                                                         L->pad);
            gbtd_pool2d_shape_init(&s);
            if (dx) rc = gbtd_maxpool2d_backward(&s, rt->argmax + rt->am_off[i], dy, dx);
            break;
        }
        case GBTD_LAYER_GAP:
            if (dx) rc = gbtd_global_avgpool_backward(n, vi->c, (int64_t)vi->h * vi->w, dy, dx);
            break;
        case GBTD_LAYER_LINEAR:
            rc = gbtd_linear_backward(n, L->c_in, L->c_out, x, net->params + L->w, dy, dx,
                                      net->grads + L->w, net->grads + L->b);
            break;
        case GBTD_LAYER_ADD:
            nn_add_backward_store(n * numel_(vo), L->relu, y, dy, dx, rt->zero_in[i], dx2,
                                  rt->zero_in2[i]);
            break;
        case GBTD_LAYER_SHORTCUT_A:
            if (dx)
                rc = gbtd_shortcut_a_backward(n, vi->c, vi->h, vi->w, (L->c_out - L->c_in) / 2, dy,
                                              dx);
            break;
        }
        if (rt->prof) rt->prof[2 * i + 1] += prof_now_() - t0;
        if (rc) return rc;
    }
    rt->ninj = 0;
    return GBTD_OK;
}

const float *gbtd_net_input_grad(const gbtd_net *net)
{
    if (!net || !net->rt || !net->rt->want_dx || !net->rt->slot || net->rt->gslot[0] < 0)
        return NULL;
    return net->rt->slot[net->rt->gslot[0]];
}

const float *gbtd_net_value(const gbtd_net *net, int v)
{
    if (!net || !net->rt || !net->rt->act || v < 0 || v >= net->nvalues) return NULL;
    gbtd_net_runtime *rt = net->rt;
    if (rt->deferred[v]) { /* a batch norm computed inside its add: its output now */
        const int p = net->values[v].producer;
        const gbtd_value *vi = &net->values[net->layers[p].in];
        const gbtd_bn_shape s = {rt->cur_n, vi->c, (int64_t)vi->h * vi->w};
        const float *map = rt->bn_map + rt->bn_off[p];
        nn_bn_apply(&s, rt->act[net->layers[p].in], map, map + vi->c, rt->act[v]);
        rt->deferred[v] = false;
    }
    return rt->act[v];
}

int gbtd_net_fused_bn(const gbtd_net *net)
{
    return net && net->rt ? net->rt->nfused : 0;
}

int64_t gbtd_net_runtime_bytes(const gbtd_net *net)
{
    return net && net->rt ? net->rt->bytes : 0;
}
