/* The CRU-Net from a source network and its factored stages; specs; source weights files. */
#include "cru/build.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/io.h"
#include "nn/arch.h"
#include "nn/train.h"

bool gbtd_cru_entry_is_new(const gbtd_net_entry *e)
{
    return e && strstr(e->name, ".cru") != NULL;
}

/* Which member (stage index, member index) a source layer belongs to, and its role:
 * 0 = not a member layer, 1 = the layer whose output the replacement produces, 2 = skipped. */
typedef struct role {
    int role, stage, member;
} role;

typedef struct ctx {
    gbtd_net *net;
    int *val;   /* source value -> new value */
    int *lay;   /* source layer -> new layer (-1 when replaced) */
    int (*shared)[2]; /* per (stage, group): new layer of conv_a and conv_b; flattened */
    int *shared_base; /* per stage: first index into shared */
    /* per (stage, member): new layer indices of c and d (for the weights) */
    int (*own)[2];
    int *own_base;
} ctx;

static int emit_member_(ctx *c, const gbtd_cru_stage *st, int si, int m, int in, int *outv)
{
    gbtd_net *net = c->net;
    const gbtd_cru_member *mb = &st->members[m];
    int g = 0;
    while (st->group_start[g + 1] <= m) g++;
    int *sh = c->shared[c->shared_base[si] + g];
    const int ra = (int)(st->terms * st->rank_in), rb = (int)(st->terms * st->rank_out);
    char nm[GBTD_NET_NAME_LEN];
    int v;
    snprintf(nm, sizeof nm, "layer%d.cru%d.conv_a", st->stage, g);
    GBTD_CHECK(gbtd_net_add_conv(net, nm, in, ra, 1, 1, 0, 1, sh[0], &v));
    if (sh[0] < 0) sh[0] = net->nlayers - 1;
    snprintf(nm, sizeof nm, "layer%d.cru%d.conv_b", st->stage, g);
    GBTD_CHECK(gbtd_net_add_conv(net, nm, v, rb, (int)st->kh, st->stride, st->pad, st->terms,
                                 sh[1], &v));
    if (sh[1] < 0) sh[1] = net->nlayers - 1;
    int *own = c->own[c->own_base[si] + m];
    own[0] = own[1] = -1;
    const float eps = 1e-5f, mom = 0.1f;
    if (st->act) {
        snprintf(nm, sizeof nm, "%.60s.cru_bn_b", mb->name);
        GBTD_CHECK(gbtd_net_add_bn(net, nm, v, true, eps, mom, &v));
    }
    if (st->extra) {
        snprintf(nm, sizeof nm, "%.60s.cru_c", mb->name);
        GBTD_CHECK(gbtd_net_add_conv(net, nm, v, rb, 1, 1, 0, 1, -1, &v));
        own[0] = net->nlayers - 1;
        if (st->act) {
            snprintf(nm, sizeof nm, "%.60s.cru_bn_c", mb->name);
            GBTD_CHECK(gbtd_net_add_bn(net, nm, v, true, eps, mom, &v));
        }
    }
    snprintf(nm, sizeof nm, "%.60s.cru_d", mb->name);
    GBTD_CHECK(gbtd_net_add_conv(net, nm, v, (int)st->c_out, 1, 1, 0, 1, -1, &v));
    own[1] = net->nlayers - 1;
    *outv = v;
    return GBTD_OK;
}

static int emit_copy_(ctx *c, const gbtd_net *src, int l)
{
    const gbtd_layer *L = &src->layers[l];
    gbtd_net *net = c->net;
    int v = -1, in = c->val[L->in];
    if (in < 0) return gbtd_error(GBTD_EINVAL, "cru build: layer %s reads a replaced value", L->name);
    switch (L->kind) {
    case GBTD_LAYER_CONV: {
        int sw = L->shared_with >= 0 ? c->lay[L->shared_with] : -1;
        if (L->shared_with >= 0 && sw < 0)
            return gbtd_error(GBTD_EINVAL, "cru build: %s shares a replaced weight", L->name);
        GBTD_CHECK(gbtd_net_add_conv(net, L->name, in, L->c_out, L->k, L->stride, L->pad,
                                     L->groups, sw, &v));
        break;
    }
    case GBTD_LAYER_BN:
        GBTD_CHECK(gbtd_net_add_bn(net, L->name, in, L->relu, L->eps, L->momentum, &v));
        break;
    case GBTD_LAYER_RELU: GBTD_CHECK(gbtd_net_add_relu(net, in, &v)); break;
    case GBTD_LAYER_MAXPOOL:
        GBTD_CHECK(gbtd_net_add_maxpool(net, in, L->k, L->stride, L->pad, &v));
        break;
    case GBTD_LAYER_GAP: GBTD_CHECK(gbtd_net_add_gap(net, in, &v)); break;
    case GBTD_LAYER_LINEAR: GBTD_CHECK(gbtd_net_add_linear(net, L->name, in, L->c_out, &v)); break;
    case GBTD_LAYER_ADD: {
        int b = c->val[L->in2];
        if (b < 0) return gbtd_error(GBTD_EINVAL, "cru build: add reads a replaced value");
        GBTD_CHECK(gbtd_net_add_add(net, in, b, L->relu, &v));
        break;
    }
    case GBTD_LAYER_SHORTCUT_A:
        GBTD_CHECK(gbtd_net_add_shortcut_a(net, in, L->c_out, L->stride, &v));
        break;
    default: return gbtd_error(GBTD_EUNSUPPORTED, "cru build: layer kind %d", (int)L->kind);
    }
    c->lay[l] = net->nlayers - 1;
    c->val[L->out] = v;
    return GBTD_OK;
}

/* Gain balancing of term r of group g. A term's factors are determined up to scalars
 * (A_r a, G_r b, B_r / (a b)) and the solvers leave them unbalanced (HOOI: orthonormal A and
 * B, the whole magnitude in G; ALS: arbitrary). In the network that makes plain SGD unstable:
 * the gradient of one layer of the chain scales with the others' magnitudes. The gain of a
 * layer's block, rms(weights) sqrt(fan_in) (1 for He-like weights), is made the same for
 * conv_a, conv_b and every member's conv_d (the geometric mean of the three, the d gain taken
 * over all the group's members); the product, hence the computed function, is unchanged. */
static void balance_term_(const ctx *c, const gbtd_cru_stage *st, int si, int g, int64_t r,
                          float *wa, float *wb)
{
    const gbtd_net *net = c->net;
    const int64_t R = st->terms, ri = st->rank_in, ro = st->rank_out, ci = st->c_in,
                  co = st->c_out, kk = st->kh * st->kw;
    double sa = 0, sb = 0, sd = 0;
    for (int64_t i = r * ri * ci; i < (r + 1) * ri * ci; i++) sa += (double)wa[i] * wa[i];
    for (int64_t i = r * ro * ri * kk; i < (r + 1) * ro * ri * kk; i++) sb += (double)wb[i] * wb[i];
    const int m0 = st->group_start[g], m1 = st->group_start[g + 1];
    for (int m = m0; m < m1; m++) {
        const float *wd = net->params + net->layers[c->own[c->own_base[si] + m][1]].w;
        for (int64_t o = 0; o < co; o++)
            for (int64_t b = r * ro; b < (r + 1) * ro; b++)
                sd += (double)wd[o * R * ro + b] * wd[o * R * ro + b];
    }
    const double ga = sqrt(sa / (double)(ri * ci) * (double)ci),
                 gb = sqrt(sb / (double)(ro * ri * kk) * (double)(ri * kk)),
                 gd = sqrt(sd / (double)((m1 - m0) * co * ro) * (double)(R * ro));
    if (!(ga > 0) || !(gb > 0) || !(gd > 0) || !isfinite(ga * gb * gd)) return;
    const double t = cbrt(ga * gb * gd);
    const float fa = (float)(t / ga), fb = (float)(t / gb), fd = (float)(t / gd);
    for (int64_t i = r * ri * ci; i < (r + 1) * ri * ci; i++) wa[i] *= fa;
    for (int64_t i = r * ro * ri * kk; i < (r + 1) * ro * ri * kk; i++) wb[i] *= fb;
    for (int m = m0; m < m1; m++) {
        float *wd = net->params + net->layers[c->own[c->own_base[si] + m][1]].w;
        for (int64_t o = 0; o < co; o++)
            for (int64_t b = r * ro; b < (r + 1) * ro; b++) wd[o * R * ro + b] *= fd;
    }
}

/* Write the factors of stage st into the new net. */
static void write_factors_(const ctx *c, const gbtd_cru_stage *st, int si)
{
    gbtd_net *net = c->net;
    const int64_t R = st->terms, ri = st->rank_in, ro = st->rank_out, ci = st->c_in,
                  co = st->c_out, kh = st->kh, kw = st->kw;
    for (int m = 0; m < st->nmembers; m++) {
        const int *own = c->own[c->own_base[si] + m];
        if (own[0] >= 0) { /* identity */
            float *w = net->params + net->layers[own[0]].w;
            memset(w, 0, (size_t)(R * ro * R * ro) * sizeof *w);
            for (int64_t i = 0; i < R * ro; i++) w[i * R * ro + i] = 1.0f;
        }
    }
    if (!st->models) return;
    for (int g = 0; g < st->ngroups; g++) {
        const gbtd_btd *M = &st->models[g];
        const int *sh = c->shared[c->shared_base[si] + g];
        float *wa = net->params + net->layers[sh[0]].w, *wb = net->params + net->layers[sh[1]].w;
        for (int64_t r = 0; r < R; r++) {
            const gbtd_tensor *A = &M->factors[r * 2], *B = &M->factors[r * 2 + 1],
                              *G = &M->cores[r];
            for (int64_t a = 0; a < ri; a++)
                for (int64_t i = 0; i < ci; i++)
                    wa[(r * ri + a) * ci + i] = (float)A->data[i * A->stride[0] + a * A->stride[1]];
            for (int64_t b = 0; b < ro; b++)
                for (int64_t a = 0; a < ri; a++)
                    for (int64_t h = 0; h < kh; h++)
                        for (int64_t v = 0; v < kw; v++)
                            wb[(((r * ro + b) * ri + a) * kh + h) * kw + v] =
                                (float)G->data[h * G->stride[0] + v * G->stride[1] +
                                               a * G->stride[2] + b * G->stride[3]];
            for (int m = st->group_start[g]; m < st->group_start[g + 1]; m++) {
                const int64_t l = m - st->group_start[g];
                const float *s = st->scale + m * co;
                float *wd = net->params + net->layers[c->own[c->own_base[si] + m][1]].w;
                for (int64_t o = 0; o < co; o++)
                    for (int64_t b = 0; b < ro; b++)
                        wd[o * R * ro + r * ro + b] =
                            (float)(B->data[(l * co + o) * B->stride[0] + b * B->stride[1]] /
                                    (double)s[o]);
            }
            balance_term_(c, st, si, g, r, wa, wb);
        }
    }
}

int gbtd_cru_build(const gbtd_net *src, const gbtd_cru_stage *stages, int nstages, gbtd_net *out)
{
    if (out) memset(out, 0, sizeof *out);
    if (!src || !out || !src->finalized || nstages < 0 || (nstages > 0 && !stages))
        return gbtd_error(GBTD_EINVAL, "cru build: bad argument");
    int ngroups = 0, nmem = 0;
    for (int s = 0; s < nstages; s++) {
        if (!stages[s].group_start || stages[s].terms < 1)
            return gbtd_error(GBTD_EINVAL, "cru build: stage %d has no layout", stages[s].stage);
        for (int t = 0; t < s; t++)
            if (stages[t].stage == stages[s].stage)
                return gbtd_error(GBTD_EINVAL, "cru build: stage %d given twice", stages[s].stage);
        ngroups += stages[s].ngroups;
        nmem += stages[s].nmembers;
    }
    role *roles = calloc((size_t)src->nlayers, sizeof *roles);
    ctx c;
    memset(&c, 0, sizeof c);
    c.net = out;
    c.val = malloc((size_t)src->nvalues * sizeof *c.val);
    c.lay = malloc((size_t)src->nlayers * sizeof *c.lay);
    c.shared = malloc((size_t)(ngroups + 1) * sizeof *c.shared);
    c.shared_base = calloc((size_t)nstages + 1, sizeof *c.shared_base);
    c.own = malloc((size_t)(nmem + 1) * sizeof *c.own);
    c.own_base = calloc((size_t)nstages + 1, sizeof *c.own_base);
    int rc = roles && c.val && c.lay && c.shared && c.shared_base && c.own && c.own_base
                 ? GBTD_OK
                 : gbtd_error(GBTD_ENOMEM, "cru build: out of memory");
    if (!rc) {
        for (int i = 0; i < src->nvalues; i++) c.val[i] = -1;
        for (int i = 0; i < src->nlayers; i++) c.lay[i] = -1;
        for (int i = 0; i < ngroups; i++) c.shared[i][0] = c.shared[i][1] = -1;
        int gb = 0, mb = 0;
        for (int s = 0; s < nstages && !rc; s++) {
            c.shared_base[s] = gb;
            c.own_base[s] = mb;
            gb += stages[s].ngroups;
            mb += stages[s].nmembers;
            for (int m = 0; m < stages[s].nmembers && !rc; m++) {
                const gbtd_cru_member *M = &stages[s].members[m];
                int last = M->kind == GBTD_CRU_MEMBER_CONV ? M->conv[0] : M->conv[2];
                if (last < 0 || last >= src->nlayers || M->input < 0 || M->input >= src->nvalues) {
                    rc = gbtd_error(GBTD_EINVAL, "cru build: member %s is not of this network",
                                    M->name);
                    break;
                }
                roles[last] = (role){1, s, m};
                if (M->kind == GBTD_CRU_MEMBER_BOTTLENECK) {
                    int skip[4] = {M->conv[0], M->bn[0], M->conv[1], M->bn[1]};
                    for (int j = 0; j < 4; j++) roles[skip[j]] = (role){2, s, m};
                }
            }
        }
    }
    if (!rc) rc = gbtd_net_init(out, src->in_c, src->in_h, src->in_w);
    if (!rc) c.val[0] = 0;
    for (int l = 0; l < src->nlayers && !rc; l++) {
        if (roles[l].role == 2) continue;
        if (roles[l].role == 1) {
            const gbtd_cru_stage *st = &stages[roles[l].stage];
            int in = c.val[st->members[roles[l].member].input], v;
            if (in < 0) {
                rc = gbtd_error(GBTD_EINVAL, "cru build: member input not built");
                break;
            }
            rc = emit_member_(&c, st, roles[l].stage, roles[l].member, in, &v);
            if (!rc) c.val[src->layers[l].out] = v;
        } else {
            rc = emit_copy_(&c, src, l);
        }
    }
    if (!rc) {
        out->classes = src->classes;
        rc = gbtd_net_finalize(out);
    }
    if (!rc) {
        /* copy by name */
        for (int e = 0; e < out->nentries; e++) {
            const gbtd_net_entry *E = &out->entries[e];
            const gbtd_net_entry *S = gbtd_net_find(src, E->name);
            if (!S || S->numel != E->numel || S->kind != E->kind) continue;
            memcpy(gbtd_net_entry_data(out, E), gbtd_net_entry_data(src, S),
                   (size_t)E->numel * sizeof(float));
        }
        for (int s = 0; s < nstages; s++) write_factors_(&c, &stages[s], s);
        char spec[sizeof out->spec];
        if (gbtd_cru_spec(src->spec, stages, nstages, spec, sizeof spec) == GBTD_OK)
            snprintf(out->spec, sizeof out->spec, "%s", spec);
        else
            out->spec[0] = 0;
        gbtd_clear_error();
    }
    if (rc) gbtd_net_free(out);
    free(roles);
    free(c.val);
    free(c.lay);
    free(c.shared);
    free(c.shared_base);
    free(c.own);
    free(c.own_base);
    return rc;
}

int gbtd_cru_spec(const char *src_spec, const gbtd_cru_stage *stages, int nstages, char *buf,
                  size_t len)
{
    if (!src_spec || !buf || len == 0 || (nstages > 0 && !stages))
        return gbtd_error(GBTD_EINVAL, "cru spec: bad argument");
    size_t n = (size_t)snprintf(buf, len, "%s", src_spec);
    if (strchr(src_spec, '|')) return gbtd_error(GBTD_EINVAL, "cru spec: source is a CRU-Net");
    for (int s = 0; s < nstages && n < len; s++) {
        const gbtd_cru_stage *st = &stages[s];
        int of = st->ngroups > 1 ? st->group_start[1] : 0;
        n += (size_t)snprintf(buf + n, len - n, "|%d,%d,%lld,%lld,%d,%d,%d", st->stage, st->terms,
                              (long long)st->rank_in, (long long)st->rank_out, of, st->extra,
                              st->act);
    }
    if (n >= len) return gbtd_error(GBTD_ERANGE, "cru spec: longer than %zu characters", len - 1);
    return GBTD_OK;
}

int gbtd_cru_net_from_spec(const char *spec, gbtd_net *out)
{
    if (out) memset(out, 0, sizeof *out);
    if (!spec || !out) return gbtd_error(GBTD_EINVAL, "cru spec: NULL argument");
    const char *bar = strchr(spec, '|');
    if (!bar) return gbtd_net_from_spec(spec, out);
    char base[256];
    if ((size_t)(bar - spec) >= sizeof base) return gbtd_error(GBTD_EINVAL, "cru spec too long");
    memcpy(base, spec, (size_t)(bar - spec));
    base[bar - spec] = 0;
    gbtd_net src;
    GBTD_CHECK(gbtd_net_from_spec(base, &src));
    gbtd_cru_stage st[GBTD_ARCH_MAX_STAGES];
    memset(st, 0, sizeof st);
    int ns = 0, rc = GBTD_OK;
    for (const char *p = bar; p && *p == '|' && !rc; p = strchr(p + 1, '|')) {
        int s, R, of, x, a;
        long long ri, ro;
        if (ns == GBTD_ARCH_MAX_STAGES ||
            sscanf(p + 1, "%d,%d,%lld,%lld,%d,%d,%d", &s, &R, &ri, &ro, &of, &x, &a) != 7) {
            rc = gbtd_error(GBTD_EINVAL, "cru spec '%s': bad stage part '%s'", spec, p + 1);
            break;
        }
        rc = gbtd_cru_stage_find(&src, s, &st[ns]);
        if (!rc) rc = gbtd_cru_stage_set_layout(&st[ns], R, ri, ro, of, x != 0, a != 0);
        ns++;
    }
    if (!rc) rc = gbtd_cru_build(&src, st, ns, out);
    for (int i = 0; i < ns; i++) gbtd_cru_stage_free(&st[i]);
    gbtd_net_free(&src);
    return rc;
}

/* The CIFAR ResNet spec of a safetensors file, or GBTD_EFORMAT. */
static int cifar_spec_(const char *path, int c, int h, int w, char *spec, size_t len)
{
    gbtd_file_format fmt;
    gbtd_tensor_desc_list l;
    memset(&l, 0, sizeof l);
    GBTD_CHECK(gbtd_io_list(path, &fmt, &l));
    int units = 0, classes = -1;
    bool conv1 = false, conv3 = false;
    for (int i = 0; i < l.count; i++) {
        const char *n = l.items[i].name;
        int u;
        if (!strcmp(n, "conv1.weight")) conv1 = true;
        if (!strcmp(n, "linear.weight") && l.items[i].ndim == 2) classes = (int)l.items[i].shape[0];
        if (sscanf(n, "layer1.%d.", &u) == 1 && u + 1 > units) units = u + 1;
        if (strstr(n, ".conv3.")) conv3 = true;
    }
    gbtd_tensor_desc_list_free(&l);
    if (!conv1 || classes < 1 || units < 1 || conv3)
        return gbtd_error(GBTD_EFORMAT, "%s: unrecognised weights (expected a CIFAR ResNet with "
                          "PyTorch names conv1, layerS.U.conv1/2, linear, or a gbtd checkpoint)",
                          path);
    snprintf(spec, len, "resnet-%d:input=%dx%dx%d,classes=%d", 6 * units + 2, c, h, w, classes);
    return GBTD_OK;
}

int gbtd_cru_load_net(const char *path, int in_c, int in_h, int in_w, gbtd_net *out)
{
    if (out) memset(out, 0, sizeof *out);
    if (!path || !out) return gbtd_error(GBTD_EINVAL, "cru load: NULL argument");
    gbtd_file_format fmt;
    GBTD_CHECK(gbtd_file_format_detect(path, &fmt));
    char spec[256];
    if (fmt == GBTD_FORMAT_HDF5) {
        GBTD_CHECK(gbtd_checkpoint_spec(path, spec, sizeof spec));
        GBTD_CHECK(gbtd_cru_net_from_spec(spec, out));
        int rc = gbtd_checkpoint_load(path, out, NULL, NULL);
        if (rc) gbtd_net_free(out);
        return rc;
    }
    if (fmt != GBTD_FORMAT_SAFETENSORS)
        return gbtd_error(GBTD_EFORMAT, "%s: unrecognised weights (%s holds no network)", path,
                          gbtd_file_format_name(fmt));
    GBTD_CHECK(cifar_spec_(path, in_c > 0 ? in_c : 3, in_h > 0 ? in_h : 32, in_w > 0 ? in_w : 32,
                           spec, sizeof spec));
    GBTD_CHECK(gbtd_net_from_spec(spec, out));
    int rc = gbtd_net_load_safetensors(out, path);
    if (rc) gbtd_net_free(out);
    return rc;
}

/* ---- stage outputs ---------------------------------------------------------------------- */

/* The stage number of a layer named "layerS.*", else 0. */
static int stage_of_(const char *name)
{
    int s = 0, used = 0;
    if (sscanf(name, "layer%d%n", &s, &used) != 1 || name[used] != '.' || s < 1) return 0;
    return s;
}

int gbtd_cru_net_stages(const gbtd_net *net)
{
    int top = 0;
    for (int i = 0; net && i < net->nlayers; i++) {
        const int s = stage_of_(net->layers[i].name);
        if (s > top) top = s;
    }
    return top;
}

int gbtd_cru_stage_output(const gbtd_net *net, int stage, int *value)
{
    if (value) *value = -1;
    if (!net || !value) return gbtd_error(GBTD_EINVAL, "stage output: NULL argument");
    int last = -1;
    for (int i = 0; i < net->nlayers; i++)
        if (stage_of_(net->layers[i].name) == stage) last = i;
    if (stage < 1 || last < 0)
        return gbtd_error(GBTD_ENOTFOUND, "stage %d does not exist (no layer named layer%d.*; the "
                          "network has stages 1 to %d)", stage, stage, gbtd_cru_net_stages(net));
    /* the add that ends the last unit; a named layer first means another part began */
    for (int i = last + 1; i < net->nlayers; i++) {
        const gbtd_layer *L = &net->layers[i];
        if (L->kind == GBTD_LAYER_ADD) {
            *value = L->out;
            return GBTD_OK;
        }
        if (L->name[0]) break;
    }
    return gbtd_error(GBTD_ENOTFOUND, "stage %d: no residual add after its last layer %s", stage,
                      net->layers[last].name);
}
