/* Collective factorization of a network stage: members, kernels, budgets, fitting. */
#include "cru/stage.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "cru/unit.h"
#include "decomp/tucker.h"

gbtd_cru_stage_opts gbtd_cru_stage_opts_default(void)
{
    gbtd_cru_stage_opts o;
    memset(&o, 0, sizeof o);
    o.terms = 1;
    o.budget = 0.5;
    o.fold_bn = true;
    o.balance = true;
    o.independent = true;
    o.btd = gbtd_btd_opts_default();
    o.btd.solver = GBTD_BTD_ALS;
    o.btd.max_iter = 200;
    o.btd.tol = 1e-8;
    o.hooi_iter = 30;
    return o;
}

void gbtd_cru_stage_free(gbtd_cru_stage *st)
{
    if (!st) return;
    if (st->models)
        for (int g = 0; g < st->ngroups; g++) gbtd_btd_free(&st->models[g]);
    free(st->models);
    free(st->members);
    free(st->group_start);
    free(st->scale);
    free(st->member_error);
    memset(st, 0, sizeof *st);
}

/* Layer index of the CONV layer with this exact name, -1 when absent. */
static int find_layer_(const gbtd_net *net, const char *name, gbtd_layer_kind kind)
{
    for (int i = 0; i < net->nlayers; i++)
        if (net->layers[i].kind == kind && !strcmp(net->layers[i].name, name)) return i;
    return -1;
}

/* The batch norm reading the output of layer l, -1 when none. */
static int bn_after_(const gbtd_net *net, int l)
{
    for (int i = l + 1; i < net->nlayers; i++)
        if (net->layers[i].kind == GBTD_LAYER_BN && net->layers[i].in == net->layers[l].out)
            return i;
    return -1;
}

/* Parse "layerS.U.leaf": returns true and fills u and leaf when the name is in stage s. */
static bool in_stage_(const char *name, int s, int *u, const char **leaf)
{
    char pre[32];
    int n = snprintf(pre, sizeof pre, "layer%d.", s);
    if (strncmp(name, pre, (size_t)n)) return false;
    char *end;
    long v = strtol(name + n, &end, 10);
    if (end == name + n || *end != '.' || v < 0 || v > 100000) return false;
    *u = (int)v;
    *leaf = end + 1;
    return true;
}

static int push_member_(gbtd_cru_stage *st, int *cap, const gbtd_cru_member *m)
{
    if (st->nmembers == *cap) {
        int nc = *cap ? 2 * *cap : 8;
        gbtd_cru_member *p = realloc(st->members, (size_t)nc * sizeof *p);
        if (!p) return gbtd_error(GBTD_ENOMEM, "cru stage: out of memory");
        st->members = p;
        *cap = nc;
    }
    st->members[st->nmembers++] = *m;
    return GBTD_OK;
}

int gbtd_cru_stage_find(const gbtd_net *net, int stage, gbtd_cru_stage *out)
{
    if (out) memset(out, 0, sizeof *out);
    if (!net || !out || !net->finalized)
        return gbtd_error(GBTD_EINVAL, "cru stage: NULL or unfinalised network");
    bool exists = false, bottleneck = false;
    int maxu = -1;
    for (int i = 0; i < net->nlayers; i++) {
        int u;
        const char *leaf;
        if (!in_stage_(net->layers[i].name, stage, &u, &leaf)) continue;
        exists = true;
        if (u > maxu) maxu = u;
        if (!strcmp(leaf, "conv3")) bottleneck = true;
    }
    if (!exists)
        return gbtd_error(GBTD_ENOTFOUND, "stage %d does not exist (no layer named layer%d.*)",
                          stage, stage);
    int cap = 0, rc = GBTD_OK;
    out->stage = stage;
    char nm[GBTD_NET_NAME_LEN + 16];
    for (int u = 0; u <= maxu && !rc; u++) {
        gbtd_cru_member m;
        memset(&m, 0, sizeof m);
        if (bottleneck) {
            int c[3];
            for (int j = 0; j < 3; j++) {
                snprintf(nm, sizeof nm, "layer%d.%d.conv%d", stage, u, j + 1);
                c[j] = find_layer_(net, nm, GBTD_LAYER_CONV);
            }
            if (c[0] < 0 || c[1] < 0 || c[2] < 0) continue;
            const gbtd_layer *l1 = &net->layers[c[0]], *l2 = &net->layers[c[1]],
                             *l3 = &net->layers[c[2]];
            int b1 = bn_after_(net, c[0]), b2 = bn_after_(net, c[1]), b3 = bn_after_(net, c[2]);
            if (l1->k != 1 || l3->k != 1 || l2->stride != 1 || l1->stride != 1 ||
                l3->stride != 1 || l1->c_in != l3->c_out || b1 < 0 || b2 < 0 ||
                l2->in != net->layers[b1].out || l3->in != net->layers[b2].out ||
                l1->shared_with >= 0 || l2->shared_with >= 0 || l3->shared_with >= 0)
                continue;
            m.kind = GBTD_CRU_MEMBER_BOTTLENECK;
            snprintf(m.name, sizeof m.name, "layer%d.%d", stage, u);
            for (int j = 0; j < 3; j++) m.conv[j] = c[j];
            m.bn[0] = b1;
            m.bn[1] = b2;
            m.bn[2] = b3;
            m.input = l1->in;
            if (out->nmembers == 0) {
                out->kh = out->kw = l2->k;
                out->c_in = l1->c_in;
                out->c_out = l3->c_out;
                out->stride = 1;
                out->pad = l2->pad;
                out->member_params = l1->params + l2->params + l3->params;
            } else if (l2->k != out->kh || l1->c_in != out->c_in || l3->c_out != out->c_out ||
                       l1->c_out != net->layers[out->members[0].conv[0]].c_out ||
                       l2->groups != net->layers[out->members[0].conv[1]].groups) {
                continue;
            }
            rc = push_member_(out, &cap, &m);
        } else {
            for (int j = 1; j <= 2 && !rc; j++) {
                snprintf(nm, sizeof nm, "layer%d.%d.conv%d", stage, u, j);
                int c = find_layer_(net, nm, GBTD_LAYER_CONV);
                if (c < 0) continue;
                const gbtd_layer *L = &net->layers[c];
                if (L->k < 2 || L->groups != 1 || L->stride != 1 || L->c_in != L->c_out ||
                    L->shared_with >= 0)
                    continue;
                if (out->nmembers > 0 && (L->k != out->kh || L->c_in != out->c_in)) continue;
                m.kind = GBTD_CRU_MEMBER_CONV;
                snprintf(m.name, sizeof m.name, "%s", L->name);
                m.conv[0] = c;
                m.conv[1] = m.conv[2] = -1;
                m.bn[0] = bn_after_(net, c);
                m.bn[1] = m.bn[2] = -1;
                m.input = L->in;
                if (out->nmembers == 0) {
                    out->kh = out->kw = L->k;
                    out->c_in = L->c_in;
                    out->c_out = L->c_out;
                    out->stride = 1;
                    out->pad = L->pad;
                    out->member_params = L->params;
                }
                rc = push_member_(out, &cap, &m);
            }
        }
    }
    if (!rc && out->nmembers == 0)
        rc = gbtd_error(GBTD_ENOTFOUND, "stage %d has no member of a shareable shape (stride 1, "
                        "equal input and output widths)", stage);
    if (!rc) {
        out->scale = malloc((size_t)(out->nmembers * out->c_out) * sizeof *out->scale);
        out->member_error = calloc((size_t)out->nmembers, sizeof *out->member_error);
        if (!out->scale || !out->member_error) rc = gbtd_error(GBTD_ENOMEM, "cru stage: out of memory");
        else
            for (int64_t i = 0; i < out->nmembers * out->c_out; i++) out->scale[i] = 1.0f;
    }
    if (rc) gbtd_cru_stage_free(out);
    return rc;
}

static int bn_scale_(const gbtd_net *net, int bn, float *out)
{
    const gbtd_layer *B = &net->layers[bn];
    float *gam = net->params + B->w, *var = net->state + B->var;
    gbtd_bn_fold_scale(gam, var, B->eps, B->c_out, out);
    for (int c = 0; c < B->c_out; c++)
        if (!(fabsf(out[c]) > 1e-30f))
            return gbtd_error(GBTD_ENUMERIC, "batch norm %s: scale of channel %d is %g, cannot "
                              "fold", B->name, c, (double)out[c]);
    return GBTD_OK;
}

int gbtd_cru_member_kernel(const gbtd_net *net, const gbtd_cru_stage *st, int m, bool fold_bn,
                           gbtd_tensor *k, float *scale_out)
{
    if (k) memset(k, 0, sizeof *k);
    if (!net || !st || !k || m < 0 || m >= st->nmembers)
        return gbtd_error(GBTD_EINVAL, "cru member kernel: bad argument");
    const gbtd_cru_member *mb = &st->members[m];
    const int64_t kh = st->kh, kw = st->kw, ci = st->c_in, co = st->c_out;
    int rc = GBTD_OK;
    if (mb->kind == GBTD_CRU_MEMBER_CONV) {
        float *s = NULL;
        if (fold_bn && mb->bn[0] >= 0) {
            s = malloc((size_t)co * sizeof *s);
            if (!s) return gbtd_error(GBTD_ENOMEM, "cru member kernel: out of memory");
            rc = bn_scale_(net, mb->bn[0], s);
        }
        int64_t shape[4] = {kh, kw, ci, co};
        if (!rc) rc = gbtd_tensor_alloc(k, 4, shape);
        if (!rc) {
            const float *w = net->params + net->layers[mb->conv[0]].w;
            for (int64_t o = 0; o < co; o++)
                for (int64_t i = 0; i < ci; i++)
                    for (int64_t h = 0; h < kh; h++)
                        for (int64_t v = 0; v < kw; v++)
                            k->data[((h * kw + v) * ci + i) * co + o] =
                                (double)w[((o * ci + i) * kh + h) * kw + v] * (s ? s[o] : 1.0);
            if (scale_out)
                for (int64_t o = 0; o < co; o++) scale_out[o] = s ? s[o] : 1.0f;
        }
        free(s);
        return rc;
    }
    const gbtd_layer *l1 = &net->layers[mb->conv[0]], *l2 = &net->layers[mb->conv[1]],
                     *l3 = &net->layers[mb->conv[2]];
    const int64_t D = l1->c_out;
    float *s = malloc((size_t)(2 * D + co) * sizeof *s);
    if (!s) return gbtd_error(GBTD_ENOMEM, "cru member kernel: out of memory");
    bool have3 = fold_bn && mb->bn[2] >= 0;
    if (fold_bn) {
        rc = bn_scale_(net, mb->bn[0], s);
        if (!rc) rc = bn_scale_(net, mb->bn[1], s + D);
        if (!rc && have3) rc = bn_scale_(net, mb->bn[2], s + 2 * D);
    }
    gbtd_unit_weights u = {ci, D, co, kh, kw, l2->groups, net->params + l1->w,
                           net->params + l2->w, net->params + l3->w,
                           fold_bn ? s : NULL, fold_bn ? s + D : NULL, have3 ? s + 2 * D : NULL};
    if (!rc) rc = gbtd_unit_effective_kernel(&u, k);
    if (!rc && scale_out)
        for (int64_t o = 0; o < co; o++) scale_out[o] = have3 ? s[2 * D + o] : 1.0f;
    free(s);
    return rc;
}

/* members in group g of n-member groups of size `of` (0 = one group) */
static int ngroups_(int nmembers, int of)
{
    return of <= 0 || of >= nmembers ? 1 : (nmembers + of - 1) / of;
}

int64_t gbtd_cru_stage_count(const gbtd_cru_stage *st, int terms, int64_t rank_in,
                             int64_t rank_out, int groups_of, bool extra)
{
    if (!st || terms < 1 || rank_in < 1 || rank_out < 1) return -1;
    const int ng = ngroups_(st->nmembers, groups_of);
    const int64_t R = terms, kk = st->kh * st->kw;
    int64_t total = ng * R * (st->c_in * rank_in + kk * rank_in * rank_out);
    total += st->nmembers * (R * rank_out * st->c_out + (extra ? R * rank_out * R * rank_out : 0));
    return total;
}

/* The largest ranks the data can hold for this layout (see decomp/btd.h). */
static void rank_limits_(const gbtd_cru_stage *st, int terms, int groups_of, int64_t *max_in,
                         int64_t *max_out)
{
    const int ng = ngroups_(st->nmembers, groups_of);
    const int64_t nmin = ng == 1 ? st->nmembers : st->nmembers - (int64_t)(ng - 1) * groups_of;
    const int64_t kk = st->kh * st->kw;
    int64_t mi = st->c_in / terms, mo = nmin * st->c_out;
    if (kk * st->c_in / terms < mo) mo = kk * st->c_in / terms;
    *max_in = mi;
    *max_out = mo;
}

int gbtd_cru_stage_ranks_for_budget(const gbtd_cru_stage *st, int terms, int groups_of,
                                    bool extra, double budget, int64_t *rank_in,
                                    int64_t *rank_out)
{
    if (!st || !rank_in || !rank_out || terms < 1 || !(budget > 0.0))
        return gbtd_error(GBTD_EINVAL, "cru budget: bad argument (budget must be > 0)");
    int64_t mi, mo;
    rank_limits_(st, terms, groups_of, &mi, &mo);
    if (mi < 1 || mo < 1)
        return gbtd_error(GBTD_ERANGE, "stage %d: %d terms do not fit %lld input channels",
                          st->stage, terms, (long long)st->c_in);
    const double limit = budget * (double)(st->nmembers * st->member_params);
    for (int64_t ro = mo; ro >= 1; ro--) {
        int64_t ri = ro < mi ? ro : mi;
        /* a term's core must not be degenerate: r_out <= kh kw r_in */
        if (ro > st->kh * st->kw * ri) continue;
        if ((double)gbtd_cru_stage_count(st, terms, ri, ro, groups_of, extra) <= limit) {
            *rank_in = ri;
            *rank_out = ro;
            return GBTD_OK;
        }
    }
    return gbtd_error(GBTD_ERANGE, "stage %d: budget %.3g of %lld parameters cannot be met with "
                      "%d terms (rank 1 needs %lld)", st->stage, budget,
                      (long long)(st->nmembers * st->member_params), terms,
                      (long long)gbtd_cru_stage_count(st, terms, 1, 1, groups_of, extra));
}

int gbtd_cru_stage_set_layout(gbtd_cru_stage *st, int terms, int64_t rank_in, int64_t rank_out,
                              int groups_of, bool extra, bool act)
{
    if (!st || st->nmembers < 1 || terms < 1)
        return gbtd_error(GBTD_EINVAL, "cru layout: bad argument");
    int64_t mi, mo;
    rank_limits_(st, terms, groups_of, &mi, &mo);
    if (rank_in < 1 || rank_out < 1 || rank_in > mi || rank_out > mo ||
        rank_out > st->kh * st->kw * rank_in || rank_in > st->kh * st->kw * rank_out)
        return gbtd_error(GBTD_ERANGE, "stage %d: ranks (%lld, %lld) with %d terms out of range "
                          "(input rank <= %lld, output rank <= %lld)", st->stage,
                          (long long)rank_in, (long long)rank_out, terms, (long long)mi,
                          (long long)mo);
    const int ng = ngroups_(st->nmembers, groups_of);
    int *gs = malloc((size_t)(ng + 1) * sizeof *gs);
    if (!gs) return gbtd_error(GBTD_ENOMEM, "cru layout: out of memory");
    for (int g = 0; g < ng; g++) gs[g] = ng == 1 ? 0 : g * groups_of;
    gs[ng] = st->nmembers;
    if (st->models)
        for (int g = 0; g < st->ngroups; g++) gbtd_btd_free(&st->models[g]);
    free(st->models);
    st->models = NULL;
    free(st->group_start);
    st->group_start = gs;
    st->ngroups = ng;
    st->terms = terms;
    st->rank_in = rank_in;
    st->rank_out = rank_out;
    st->extra = extra;
    st->act = act;
    st->params_before = st->nmembers * st->member_params;
    st->params_after = gbtd_cru_stage_count(st, terms, rank_in, rank_out, groups_of, extra);
    return GBTD_OK;
}

/* Tucker-2 result as a one-term BTD model. */
static int tucker_to_btd_(const gbtd_tucker *t, gbtd_btd *m)
{
    const int modes[2] = {2, 3};
    const int64_t ranks[2] = {t->factors[0].shape[1], t->factors[1].shape[1]};
    GBTD_CHECK(gbtd_btd_alloc_uniform(m, 4, t->shape, 2, modes, 1, ranks));
    int rc = gbtd_tensor_copy(&m->cores[0], &t->core);
    if (!rc) rc = gbtd_tensor_copy(&m->factors[0], &t->factors[0]);
    if (!rc) rc = gbtd_tensor_copy(&m->factors[1], &t->factors[1]);
    if (rc) gbtd_btd_free(m);
    return rc;
}

/* Fit one group's X+ (terms R, ranks) into *m. */
static int fit_group_(const gbtd_tensor *x, int terms, int64_t ri, int64_t ro,
                      const gbtd_cru_stage_opts *o, gbtd_btd *m)
{
    const int modes[2] = {2, 3};
    if (terms == 1) {
        const int64_t ranks[2] = {ri, ro};
        gbtd_tucker_opts to = gbtd_tucker_opts_default();
        to.max_iter = o->hooi_iter;
        to.tol = 1e-9;
        gbtd_tucker t;
        memset(&t, 0, sizeof t);
        int rc = gbtd_tucker_partial_hooi(x, modes, 2, ranks, &t, &to, NULL);
        if (!rc) rc = tucker_to_btd_(&t, m);
        gbtd_tucker_free(&t);
        return rc;
    }
    int64_t *ranks = malloc((size_t)(2 * terms) * sizeof *ranks);
    if (!ranks) return gbtd_error(GBTD_ENOMEM, "cru fit: out of memory");
    for (int r = 0; r < terms; r++) {
        ranks[2 * r] = ri;
        ranks[2 * r + 1] = ro;
    }
    int rc = gbtd_btd_decompose(x, 2, modes, terms, ranks, m, NULL, &o->btd);
    free(ranks);
    return rc;
}

/* ||E||^2 of each member's block of X+ - model, added into err2 (members of the group). */
static int member_errors_(const gbtd_tensor *x, const gbtd_btd *m, int64_t co, int n,
                          double *err2, double *norm2)
{
    gbtd_tensor y;
    GBTD_CHECK(gbtd_btd_reconstruct_alloc(m, &y));
    const int64_t rows = x->shape[0] * x->shape[1] * x->shape[2], cols = x->shape[3];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double a = x->data[r * cols + c], d = a - y.data[r * cols + c];
            int l = (int)(c / co);
            if (l < n) {
                err2[l] += d * d;
                norm2[l] += a * a;
            }
        }
    gbtd_tensor_free(&y);
    return GBTD_OK;
}

int gbtd_cru_stage_factor(const gbtd_net *net, gbtd_cru_stage *st,
                          const gbtd_cru_stage_opts *opts)
{
    if (!net || !st || st->nmembers < 1) return gbtd_error(GBTD_EINVAL, "cru factor: bad argument");
    gbtd_cru_stage_opts o = opts ? *opts : gbtd_cru_stage_opts_default();
    if (o.terms < 1 || o.groups_of < 0 || o.rank_in < 0 || o.rank_out < 0)
        return gbtd_error(GBTD_EINVAL, "cru factor: bad options");
    int64_t ri = o.rank_in, ro = o.rank_out;
    if (ri == 0 || ro == 0)
        GBTD_CHECK(gbtd_cru_stage_ranks_for_budget(st, o.terms, o.groups_of, o.extra, o.budget,
                                                   &ri, &ro));
    GBTD_CHECK(gbtd_cru_stage_set_layout(st, o.terms, ri, ro, o.groups_of, o.extra, o.act));
    const double t0 = gbtd_wall_time();
    const int L = st->nmembers;
    gbtd_tensor *ks = calloc((size_t)L, sizeof *ks);
    const gbtd_tensor **kp = calloc((size_t)L, sizeof *kp);
    double *err2 = calloc((size_t)(2 * L), sizeof *err2);
    st->models = calloc((size_t)st->ngroups, sizeof *st->models);
    int rc = ks && kp && err2 && st->models ? GBTD_OK
                                            : gbtd_error(GBTD_ENOMEM, "cru factor: out of memory");
    double *norm2 = err2 ? err2 + L : NULL;
    double *knorm = rc ? NULL : malloc((size_t)L * sizeof *knorm);
    if (!rc && !knorm) rc = gbtd_error(GBTD_ENOMEM, "cru factor: out of memory");
    for (int l = 0; l < L && !rc; l++) {
        rc = gbtd_cru_member_kernel(net, st, l, o.fold_bn, &ks[l], st->scale + l * st->c_out);
        kp[l] = &ks[l];
        knorm[l] = 1.0;
        if (!rc && o.balance) {
            const double nk = gbtd_tensor_norm(&ks[l]);
            knorm[l] = nk > 0 ? nk : 1.0;
        }
    }
    for (int g = 0; g < st->ngroups && !rc; g++) {
        const int a = st->group_start[g], n = st->group_start[g + 1] - a;
        gbtd_tensor x;
        rc = gbtd_stage_stack(kp + a, n, &x);
        /* balance: X+ = [K_1 / |K_1|, ..., K_n / |K_n|]; unit l's output block of every term is
         * multiplied back by |K_l| after the fit */
        if (!rc && o.balance) {
            const int64_t rows = x.shape[0] * x.shape[1] * x.shape[2], cols = x.shape[3];
            for (int64_t i = 0; i < rows; i++)
                for (int64_t c = 0; c < cols; c++) x.data[i * cols + c] /= knorm[a + c / st->c_out];
        }
        if (!rc) rc = fit_group_(&x, o.terms, ri, ro, &o, &st->models[g]);
        if (!rc) rc = member_errors_(&x, &st->models[g], st->c_out, n, err2 + a, norm2 + a);
        for (int l = 0; l < n && !rc; l++) {
            const double f = knorm[a + l];
            err2[a + l] *= f * f;
            norm2[a + l] *= f * f;
            for (int r = 0; r < st->models[g].nterms && f != 1.0; r++) {
                gbtd_tensor B;
                rc = gbtd_stage_unit_factor(&st->models[g], n, l, r, &B);
                for (int64_t i = 0; !rc && i < B.shape[0]; i++)
                    for (int64_t j = 0; j < B.shape[1]; j++)
                        B.data[i * B.stride[0] + j * B.stride[1]] *= f;
            }
        }
        gbtd_tensor_free(&x);
    }
    free(knorm);
    if (!rc) {
        double e = 0, nn = 0;
        for (int l = 0; l < L; l++) {
            st->member_error[l] = norm2[l] > 0 ? sqrt(err2[l] / norm2[l]) : 0.0;
            e += err2[l];
            nn += norm2[l];
        }
        st->kernel_error = nn > 0 ? sqrt(e / nn) : 0.0;
    }
    st->seconds = gbtd_wall_time() - t0;
    /* the baseline: independent Tucker-2 of each member at no more parameters */
    st->indep_rank = 0;
    if (!rc && o.independent) {
        const double t1 = gbtd_wall_time();
        const int64_t per = st->params_after / L, kk = st->kh * st->kw;
        int64_t t = st->c_in < st->c_out ? st->c_in : st->c_out;
        while (t >= 1 && (st->c_in + st->c_out) * t + kk * t * t > per) t--;
        if (t >= 1) {
            double e = 0, nn = 0;
            const int modes[2] = {2, 3};
            const int64_t ranks[2] = {t, t};
            gbtd_tucker_opts to = gbtd_tucker_opts_default();
            to.max_iter = o.hooi_iter;
            to.tol = 1e-9;
            for (int l = 0; l < L && !rc; l++) {
                gbtd_tucker tk;
                memset(&tk, 0, sizeof tk);
                gbtd_decomp_info info;
                gbtd_decomp_info_init(&info);
                rc = gbtd_tucker_partial_hooi(&ks[l], modes, 2, ranks, &tk, &to, &info);
                if (!rc) {
                    double nk = gbtd_tensor_norm(&ks[l]);
                    e += info.rel_error * info.rel_error * nk * nk;
                    nn += nk * nk;
                }
                gbtd_decomp_info_free(&info);
                gbtd_tucker_free(&tk);
            }
            st->indep_rank = t;
            st->indep_params = L * ((st->c_in + st->c_out) * t + kk * t * t);
            st->indep_error = nn > 0 ? sqrt(e / nn) : 0.0;
        }
        st->indep_seconds = gbtd_wall_time() - t1;
    }
    for (int l = 0; ks && l < L; l++) gbtd_tensor_free(&ks[l]);
    free(ks);
    free(kp);
    free(err2);
    return rc;
}
