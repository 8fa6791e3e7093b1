/* Tests of the CRU pipeline: the unification through a fitted BTD (R = 1 and R = cardinality
 * reproduce a unit's effective kernel), collective factorization of a stage (members, budgets,
 * collective vs independent on a planted shared structure), the CRU-Net built from factors
 * (its linear chain computes exactly the factored kernel; lossless ranks give the source's
 * logits), CRU specs, and fine-tuning with frozen old layers. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cru/build.h"
#include "cru/stage.h"
#include "cru/unit.h"
#include "nn/arch.h"

static void fill_f(float *v, int64_t n, gbtd_rng *rng, double sd)
{
    for (int64_t i = 0; i < n; i++) v[i] = (float)(sd * gbtd_rng_normal(rng));
}

/* A fitted BTD with R terms of rank (d, d) reproduces the unit's effective kernel. */
static void test_unification(gbtd_rng *rng, int groups, const char *name)
{
    const int64_t cin = 16, d = 2, D = groups * d, cout = 12;
    float *w1 = malloc(sizeof(float) * (size_t)(D * cin)), *w2 = malloc(sizeof(float) * (size_t)(D * d * 9)),
          *w3 = malloc(sizeof(float) * (size_t)(cout * D));
    fill_f(w1, D * cin, rng, 1);
    fill_f(w2, D * d * 9, rng, 1);
    fill_f(w3, cout * D, rng, 1);
    gbtd_unit_weights u = {cin, D, cout, 3, 3, groups, w1, w2, w3, NULL, NULL, NULL};
    gbtd_tensor k;
    CHECK_OK(gbtd_unit_effective_kernel(&u, &k), name);
    const int modes[2] = {2, 3};
    int64_t *ranks = malloc(sizeof(int64_t) * (size_t)(2 * groups));
    for (int r = 0; r < 2 * groups; r++) ranks[r] = groups == 1 ? D : d;
    gbtd_btd m;
    gbtd_btd_opts o = gbtd_btd_opts_default();
    o.restarts = 3;
    CHECK_OK(gbtd_btd_decompose(&k, 2, modes, groups, ranks, &m, NULL, &o), name);
    double e = 1;
    CHECK_OK(gbtd_btd_relative_error(&k, &m, &e), name);
    /* An exact BTD: the fit stops at the floor of double rounding, a few hundred eps of the
     * ~numel(K) = 1728 accumulated terms; 1e-10 leaves room for the solver's stopping rule. */
    CHECK_LE(e, 1e-10, name);
    gbtd_btd_free(&m);
    gbtd_tensor_free(&k);
    free(ranks);
    free(w1);
    free(w2);
    free(w3);
}

/* conv in double of x (c x h x w) with K[kh, kw, ci, co], stride 1, pad kh/2 */
static void conv_k(const float *x, int c, int h, int w, const gbtd_tensor *K, double *y)
{
    const int64_t kh = K->shape[0], co = K->shape[3], pad = kh / 2;
    for (int64_t o = 0; o < co; o++)
        for (int p = 0; p < h; p++)
            for (int q = 0; q < w; q++) {
                double s = 0;
                for (int i = 0; i < c; i++)
                    for (int64_t a = 0; a < kh; a++)
                        for (int64_t b = 0; b < kh; b++) {
                            int64_t pp = p + a - pad, qq = q + b - pad;
                            if (pp < 0 || qq < 0 || pp >= h || qq >= w) continue;
                            s += x[((int64_t)i * h + pp) * w + qq] *
                                 K->data[((a * kh + b) * c + i) * co + o];
                        }
                y[(o * h + p) * w + q] = s;
            }
}

static int find_layer(const gbtd_net *net, const char *name)
{
    for (int i = 0; i < net->nlayers; i++)
        if (!strcmp(net->layers[i].name, name)) return i;
    return -1;
}

/* Build a CRU-Net from factors; with the nonlinearities off, each member's chain is the
 * convolution by its factored kernel (divided by the folded BN scale). */
static void test_chain_exact(const char *spec, int stage, int64_t ri, int64_t ro, int terms,
                             bool extra, const char *name)
{
    gbtd_net src, cru;
    char nm[160];
    CHECK_OK(gbtd_net_from_spec(spec, &src), spec);
    gbtd_net_init_params(&src, 7);
    /* non-trivial BN statistics so that folding matters */
    gbtd_rng *rng = NULL;
    gbtd_rng_alloc(3, &rng);
    for (int i = 0; i < src.nentries; i++) {
        gbtd_net_entry *E = &src.entries[i];
        float *p = gbtd_net_entry_data(&src, E);
        for (int64_t j = 0; j < E->numel; j++) {
            if (E->kind == GBTD_ENTRY_BN_VAR) p[j] = (float)(0.5 + gbtd_rng_uniform(rng));
            if (E->kind == GBTD_ENTRY_BN_WEIGHT) p[j] = (float)(0.5 + gbtd_rng_uniform(rng));
        }
    }
    gbtd_cru_stage st;
    CHECK_OK(gbtd_cru_stage_find(&src, stage, &st), name);
    gbtd_cru_stage_opts o = gbtd_cru_stage_opts_default();
    o.terms = terms;
    o.rank_in = ri;
    o.rank_out = ro;
    o.extra = extra;
    o.independent = false;
    o.btd.max_iter = 30;
    CHECK_OK(gbtd_cru_stage_factor(&src, &st, &o), name);
    CHECK_OK(gbtd_cru_build(&src, &st, 1, &cru), name);
    CHECK(cru.nparams < src.nparams, "CRU-Net has fewer parameters");
    /* the conv parameters of the net dropped by params_before - params_after (conv weights) */
    int64_t bn_dropped = 0;
    for (int m = 0; m < st.nmembers; m++)
        if (st.members[m].kind == GBTD_CRU_MEMBER_BOTTLENECK)
            bn_dropped += 2 * (src.layers[st.members[m].bn[0]].c_out + src.layers[st.members[m].bn[1]].c_out);
    CHECK(src.nparams - cru.nparams == st.params_before - st.params_after + bn_dropped,
          "parameter count of the CRU-Net matches the stage report");
    const int n = 2;
    float *x = malloc(sizeof(float) * (size_t)(n * src.in_c * src.in_h * src.in_w));
    fill_f(x, n * src.in_c * src.in_h * src.in_w, rng, 1);
    CHECK_OK(gbtd_net_forward(&cru, x, n, true, NULL), "forward CRU-Net");
    double worst = 0;
    for (int m = 0; m < st.nmembers; m++) {
        int g = 0;
        while (st.group_start[g + 1] <= m) g++;
        snprintf(nm, sizeof nm, "%s.cru_d", st.members[m].name);
        int ld = find_layer(&cru, nm), la = ld;
        while (la >= 0 && !strstr(cru.layers[la].name, ".conv_a")) la--;
        if (ld < 0 || la < 0) {
            CHECK(0, "member layers present");
            continue;
        }
        const gbtd_value vin = cru.values[cru.layers[la].in], vout = cru.values[cru.layers[ld].out];
        const float *xi = gbtd_net_value(&cru, cru.layers[la].in);
        const float *yo = gbtd_net_value(&cru, cru.layers[ld].out);
        /* factored kernel of member m: its block of the group's model / scale */
        gbtd_tensor full;
        CHECK_OK(gbtd_btd_reconstruct_alloc(&st.models[g], &full), "reconstruct");
        int64_t shape[4] = {st.kh, st.kw, st.c_in, st.c_out};
        gbtd_tensor K;
        gbtd_tensor_alloc(&K, 4, shape);
        const int64_t l = m - st.group_start[g], cols = full.shape[3];
        for (int64_t r = 0; r < st.kh * st.kw * st.c_in; r++)
            for (int64_t c = 0; c < st.c_out; c++)
                K.data[r * st.c_out + c] = full.data[r * cols + l * st.c_out + c] /
                                            st.scale[m * st.c_out + c];
        double *y = malloc(sizeof(double) * (size_t)(vout.c * vout.h * vout.w));
        for (int i = 0; i < n && xi && yo; i++) {
            conv_k(xi + (int64_t)i * vin.c * vin.h * vin.w, vin.c, vin.h, vin.w, &K, y);
            double num = 0, den = 0;
            for (int64_t j = 0; j < (int64_t)vout.c * vout.h * vout.w; j++) {
                double dd = y[j] - yo[(int64_t)i * vout.c * vout.h * vout.w + j];
                num += dd * dd;
                den += y[j] * y[j];
            }
            double e = sqrt(num / den);
            if (e > worst) worst = e;
        }
        free(y);
        gbtd_tensor_free(&K);
        gbtd_tensor_free(&full);
    }
    /* float32 network: three chained convolutions of at most kh kw C = 9 x 64 products each,
     * relative error ~ sqrt(576) x 6e-8 per layer; the terms of an ALS BTD partly cancel (their
     * sum is smaller than the sum of their sizes), which multiplies that by the cancellation
     * ratio, and the gain balancing of the build rescales the layers; 1e-3 bounds it with a
     * margin while a wrong factor layout or balancing that changes the function gives O(1). */
    snprintf(nm, sizeof nm, "%s: CRU chain = conv with the factored kernel (rel. err %.2e)", name,
             worst);
    CHECK(worst < 1e-3, nm);
    free(x);
    gbtd_rng_free(rng);
    gbtd_net_free(&cru);
    gbtd_cru_stage_free(&st);
    gbtd_net_free(&src);
}

/* Lossless ranks on a basic-block stage: the CRU-Net computes the source network's logits. */
static void test_lossless_net(void)
{
    gbtd_net src, cru, back;
    CHECK_OK(gbtd_net_from_spec("resnet-20:input=3x8x8,classes=5", &src), "resnet-20 8x8");
    gbtd_net_init_params(&src, 11);
    gbtd_cru_stage st;
    CHECK_OK(gbtd_cru_stage_find(&src, 1, &st), "stage 1");
    CHECK(st.nmembers == 6 && st.kh == 3 && st.c_in == 16, "stage 1 of resnet-20: 6 3x3 16->16 convs");
    gbtd_cru_stage_opts o = gbtd_cru_stage_opts_default();
    o.rank_in = 16;
    o.rank_out = 96; /* = 6 x 16 = rank of the output unfolding: exact */
    CHECK_OK(gbtd_cru_stage_factor(&src, &st, &o), "factor at full rank");
    CHECK_LE(st.kernel_error, 1e-12, "full-rank collective Tucker-2 is exact");
    CHECK_OK(gbtd_cru_build(&src, &st, 1, &cru), "build");
    gbtd_rng *rng = NULL;
    gbtd_rng_alloc(5, &rng);
    float x[4 * 3 * 8 * 8];
    fill_f(x, 4 * 3 * 64, rng, 1);
    const float *l1, *l2;
    float a[20];
    CHECK_OK(gbtd_net_forward(&src, x, 4, false, &l1), "forward source");
    memcpy(a, l1, sizeof a);
    CHECK_OK(gbtd_net_forward(&cru, x, 4, false, &l2), "forward CRU");
    double num = 0, den = 0;
    for (int i = 0; i < 20; i++) {
        num += (a[i] - l2[i]) * (a[i] - l2[i]);
        den += a[i] * a[i];
    }
    /* float32 through 19 layers: ~1e-6 relative; the factorization adds two GEMMs per conv */
    CHECK_LE(sqrt(num / den), 1e-4, "lossless CRU-Net logits = source logits");
    /* the spec rebuilds the same graph */
    CHECK(strchr(cru.spec, '|') != NULL, "CRU spec recorded");
    CHECK_OK(gbtd_cru_net_from_spec(cru.spec, &back), "net from CRU spec");
    CHECK(back.nparams == cru.nparams && back.nlayers == cru.nlayers, "spec rebuilds the same graph");
    int same = back.nentries == cru.nentries;
    for (int i = 0; same && i < cru.nentries; i++)
        same = !strcmp(back.entries[i].name, cru.entries[i].name);
    CHECK(same, "spec rebuilds the same entry names");
    CHECK(gbtd_net_find(&cru, "layer1.cru0.conv_a.weight") && gbtd_net_find(&cru, "layer1.2.conv2.cru_d.weight"),
          "shared and own weights named");
    /* budgets */
    int64_t ri, ro;
    CHECK_OK(gbtd_cru_stage_ranks_for_budget(&st, 1, 0, false, 0.3, &ri, &ro), "budget 0.3");
    int64_t lim = (int64_t)(0.3 * (double)st.params_before);
    CHECK(gbtd_cru_stage_count(&st, 1, ri, ro, 0, false) <= lim, "budget ranks fit");
    CHECK(ro == 96 || gbtd_cru_stage_count(&st, 1, ro + 1 < 16 ? ro + 1 : 16, ro + 1, 0, false) > lim,
          "budget ranks are the largest that fit");
    CHECK_STATUS(gbtd_cru_stage_ranks_for_budget(&st, 1, 0, false, 0.001, &ri, &ro), GBTD_ERANGE,
                 "a budget that cannot be met is refused");
    CHECK_STATUS(gbtd_cru_stage_set_layout(&st, 1, 17, 10, 0, false, false), GBTD_ERANGE,
                 "input rank above C_in refused");
    gbtd_cru_stage bad;
    CHECK_STATUS(gbtd_cru_stage_find(&src, 7, &bad), GBTD_ENOTFOUND, "stage that does not exist");
    gbtd_net_free(&back);
    CHECK_STATUS(gbtd_cru_net_from_spec("resnet-20:input=3x8x8|1,x", &back), GBTD_EINVAL, "bad CRU spec");
    /* groups of 2: three groups with their own shared layers */
    o.groups_of = 2;
    o.rank_in = 8;
    o.rank_out = 8;
    CHECK_OK(gbtd_cru_stage_factor(&src, &st, &o), "factor in groups of 2");
    CHECK(st.ngroups == 3, "6 members in groups of 2: 3 groups");
    gbtd_net g3;
    CHECK_OK(gbtd_cru_build(&src, &st, 1, &g3), "build in groups");
    CHECK(gbtd_net_find(&g3, "layer1.cru2.conv_b.weight") && !gbtd_net_find(&g3, "layer1.cru3.conv_b.weight"),
          "one shared pair per group");
    gbtd_rng_free(rng);
    gbtd_net_free(&g3);
    gbtd_net_free(&back);
    gbtd_net_free(&cru);
    gbtd_cru_stage_free(&st);
    gbtd_net_free(&src);
}

/* Planted shared structure: kernels K_l = G x A x B_l + noise. At equal parameters the
 * collective factorization fits far better than an independent Tucker-2 of each member. */
static void test_collective_wins(void)
{
    gbtd_net src;
    CHECK_OK(gbtd_net_from_spec("resnet-20:input=3x8x8", &src), "resnet-20");
    gbtd_net_init_params(&src, 1);
    gbtd_cru_stage st;
    CHECK_OK(gbtd_cru_stage_find(&src, 3, &st), "stage 3");
    CHECK(st.nmembers == 5 && st.c_in == 64, "stage 3: 5 members (unit 0 conv2, units 1-2)");
    gbtd_rng *rng = NULL;
    gbtd_rng_alloc(9, &rng);
    const int64_t C = 64, r = 12;
    double *A = malloc(sizeof(double) * C * r), *G = malloc(sizeof(double) * 9 * r * r),
           *B = malloc(sizeof(double) * C * r);
    for (int64_t i = 0; i < C * r; i++) A[i] = gbtd_rng_normal(rng);
    for (int64_t i = 0; i < 9 * r * r; i++) G[i] = gbtd_rng_normal(rng);
    for (int m = 0; m < st.nmembers; m++) {
        for (int64_t i = 0; i < C * r; i++) B[i] = gbtd_rng_normal(rng);
        float *w = src.params + src.layers[st.members[m].conv[0]].w;
        for (int64_t o = 0; o < C; o++)
            for (int64_t i = 0; i < C; i++)
                for (int hw = 0; hw < 9; hw++) {
                    double s = 0;
                    for (int64_t a = 0; a < r; a++)
                        for (int64_t b = 0; b < r; b++)
                            s += A[i * r + a] * G[(hw * r + a) * r + b] * B[o * r + b];
                    w[(o * C + i) * 9 + hw] = (float)(s + 0.01 * r * gbtd_rng_normal(rng));
                }
    }
    gbtd_cru_stage_opts o = gbtd_cru_stage_opts_default();
    o.fold_bn = false;
    o.rank_in = r;
    o.rank_out = r;
    CHECK_OK(gbtd_cru_stage_factor(&src, &st, &o), "collective factor");
    CHECK(st.indep_rank > 0 && st.indep_params <= st.params_after, "independent baseline at <= params");
    /* noise 0.01 r per entry against signal ~ r per entry: the collective error ~ 1e-2, while
     * the independent Tucker-2 at the same parameters has rank ~ r / 2 and misses about half */
    CHECK_LE(st.kernel_error, 0.05, "collective error at the noise level");
    CHECK(st.indep_error > 5 * st.kernel_error, "independent Tucker-2 is much worse at equal params");
    gbtd_rng_free(rng);
    free(A);
    free(G);
    free(B);
    gbtd_cru_stage_free(&st);
    gbtd_net_free(&src);
}

/* 64 random 1x8x8 images in 4 balanced classes (the caller frees images and labels). */
static void synthetic_8x8_(gbtd_dataset *d, gbtd_rng *rng)
{
    memset(d, 0, sizeof *d);
    strcpy(d->name, "synthetic");
    d->n = 64;
    d->c = 1;
    d->h = d->w = 8;
    d->classes = 4;
    d->images = malloc(64 * 64);
    d->labels = malloc(64 * sizeof(int32_t));
    for (int i = 0; i < 64 * 64; i++) d->images[i] = (uint8_t)(gbtd_rng_uniform(rng) * 255);
    for (int i = 0; i < 64; i++) d->labels[i] = i % 4;
}

/* Fine-tuning with new_first: only CRU layers move in the first epoch. */
static void test_finetune_frozen(void)
{
    gbtd_net src, cru;
    CHECK_OK(gbtd_net_from_spec("resnet-20:input=1x8x8,classes=4", &src), "resnet-20 1x8x8");
    gbtd_net_init_params(&src, 2);
    gbtd_cru_stage st;
    CHECK_OK(gbtd_cru_stage_find(&src, 2, &st), "stage 2");
    gbtd_cru_stage_opts so = gbtd_cru_stage_opts_default();
    so.rank_in = 8;
    so.rank_out = 16;
    so.extra = true;
    CHECK_OK(gbtd_cru_stage_factor(&src, &st, &so), "factor stage 2");
    CHECK_OK(gbtd_cru_build(&src, &st, 1, &cru), "build with extra 1x1");
    const gbtd_net_entry *ex = gbtd_net_find(&cru, "layer2.1.conv1.cru_c.weight");
    CHECK(ex && gbtd_net_entry_data(&cru, ex)[0] == 1.0f && gbtd_net_entry_data(&cru, ex)[1] == 0.0f,
          "extra 1x1 starts as the identity");
    gbtd_dataset d;
    gbtd_rng *rng = NULL;
    gbtd_rng_alloc(4, &rng);
    synthetic_8x8_(&d, rng);
    float *before = malloc(sizeof(float) * (size_t)cru.nparams);
    memcpy(before, cru.params, sizeof(float) * (size_t)cru.nparams);
    gbtd_cru_finetune_opts fo = gbtd_cru_finetune_opts_default();
    fo.epochs = 1;
    fo.new_first = 1;
    fo.batch = 16;
    fo.teacher = &src;
    gbtd_cru_epoch_info ei;
    CHECK_OK(gbtd_cru_finetune(&cru, &d, &d, &fo, &ei), "finetune new layers with distillation");
    CHECK(ei.epoch == 1 && ei.new_only && isfinite(ei.loss) && ei.test_top1 >= 0, "epoch info");
    int old_moved = 0, new_moved = 0;
    for (int i = 0; i < cru.nentries; i++) {
        const gbtd_net_entry *E = &cru.entries[i];
        if (E->kind == GBTD_ENTRY_BN_MEAN || E->kind == GBTD_ENTRY_BN_VAR) continue;
        int moved = memcmp(before + E->offset, cru.params + E->offset, sizeof(float) * (size_t)E->numel) != 0;
        if (gbtd_cru_entry_is_new(E)) new_moved += moved;
        else old_moved += moved;
    }
    CHECK(old_moved == 0 && new_moved > 0, "new_first: only the CRU layers changed");
    gbtd_dataset wrong = d;
    wrong.h = 7;
    CHECK_STATUS(gbtd_cru_finetune(&cru, &wrong, NULL, &fo, NULL), GBTD_EINVAL,
                 "data image size not matching the network");
    gbtd_rng_free(rng);
    free(before);
    free(d.images);
    free(d.labels);
    gbtd_net_free(&cru);
    gbtd_cru_stage_free(&st);
    gbtd_net_free(&src);
}

/* Layer index by exact name (any kind), -1 when absent. */
static int layer_named(const gbtd_net *net, const char *name)
{
    for (int i = 0; i < net->nlayers; i++)
        if (!strcmp(net->layers[i].name, name)) return i;
    return -1;
}

/* Batch-norm re-estimation (running statistics = those of the data) and the act form (BN-ReLU
 * inside the CRU unit): its wiring, parameter count, spec, and the pass-through start. */
static void test_bn_reestimate_act(void)
{
    gbtd_net src, cru, plain;
    CHECK_OK(gbtd_net_from_spec("resnet-20:input=1x8x8,classes=4", &src), "resnet-20 1x8x8");
    gbtd_net_init_params(&src, 3);
    gbtd_cru_stage st, sp;
    CHECK_OK(gbtd_cru_stage_find(&src, 2, &st), "stage 2");
    CHECK_OK(gbtd_cru_stage_find(&src, 2, &sp), "stage 2 again");
    gbtd_cru_stage_opts so = gbtd_cru_stage_opts_default();
    so.rank_in = 8;
    so.rank_out = 16;
    so.extra = true;
    so.independent = false;
    CHECK_OK(gbtd_cru_stage_factor(&src, &sp, &so), "factor without act");
    so.act = true;
    CHECK_OK(gbtd_cru_stage_factor(&src, &st, &so), "factor with act");
    CHECK_OK(gbtd_cru_build(&src, &sp, 1, &plain), "build without act");
    CHECK_OK(gbtd_cru_build(&src, &st, 1, &cru), "build with act");
    /* two own batch norms (gamma, beta) of R r_out = 16 channels per member */
    CHECK(cru.nparams - plain.nparams == (int64_t)st.nmembers * 2 * 2 * 16,
          "act adds two own BN (gamma, beta) of R r_out channels per member");
    bool wired = true;
    int nbn = 0;
    for (int m = 0; m < st.nmembers; m++) {
        char nm[4][GBTD_NET_NAME_LEN + 16];
        const char *leaf[4] = {"cru_bn_b", "cru_c", "cru_bn_c", "cru_d"};
        int li[4];
        for (int j = 0; j < 4; j++) {
            snprintf(nm[j], sizeof nm[j], "%s.%s", st.members[m].name, leaf[j]);
            li[j] = layer_named(&cru, nm[j]);
        }
        if (li[0] < 0 || li[1] < 0 || li[2] < 0 || li[3] < 0) {
            wired = false;
            break;
        }
        const gbtd_layer *L = cru.layers;
        /* the producer of the own BN's input: this member's instance of the shared conv_b */
        int b = -1;
        for (int i = 0; i < cru.nlayers; i++)
            if (L[i].out == L[li[0]].in) b = i;
        wired = wired && b >= 0 && !strcmp(L[b].name, "layer2.cru0.conv_b") &&
                L[li[0]].kind == GBTD_LAYER_BN && L[li[0]].relu && L[li[2]].relu &&
                L[li[1]].in == L[li[0]].out &&
                L[li[2]].in == L[li[1]].out && L[li[3]].in == L[li[2]].out;
        nbn += 2;
    }
    CHECK(wired, "act: conv_b -> own BN-ReLU -> cru_c -> own BN-ReLU -> cru_d");
    gbtd_net back;
    CHECK_OK(gbtd_cru_net_from_spec(cru.spec, &back), "act CRU-Net from its spec");
    CHECK(back.nparams == cru.nparams && back.nlayers == cru.nlayers, "act spec rebuilds the graph");
    gbtd_net_free(&back);

    /* data: 64 random 1x8x8 images, normalised with mean 0.5, std 0.25 */
    enum { N = 64, P = 64 };
    gbtd_dataset d;
    memset(&d, 0, sizeof d);
    strcpy(d.name, "synthetic");
    d.n = N;
    d.c = 1;
    d.h = d.w = 8;
    d.classes = 4;
    d.images = malloc(N * P);
    d.labels = calloc(N, sizeof(int32_t));
    gbtd_rng *rng = NULL;
    gbtd_rng_alloc(5, &rng);
    for (int i = 0; i < N * P; i++) d.images[i] = (uint8_t)(gbtd_rng_uniform(rng) * 255);
    const float mean = 0.5f, sd = 0.25f;
    float *x = malloc(sizeof(float) * N * P), *before = malloc(sizeof(float) * (size_t)cru.nparams);
    for (int i = 0; i < N * P; i++) x[i] = (float)((d.images[i] / 255.0 - mean) / sd);
    memcpy(before, cru.params, sizeof(float) * (size_t)cru.nparams);
    /* one batch of all 64 images: every running mean / variance becomes the mean / unbiased
     * variance of the layer's input over the data set */
    CHECK_OK(gbtd_cru_bn_reestimate(&cru, &d, 0, N, &mean, &sd, 7), "re-estimate on one batch");
    CHECK(!memcmp(before, cru.params, sizeof(float) * (size_t)cru.nparams),
          "re-estimation changes no parameter");
    bool mom = true;
    for (int i = 0; i < cru.nlayers; i++)
        if (cru.layers[i].kind == GBTD_LAYER_BN) mom = mom && cru.layers[i].momentum == 0.1f;
    CHECK(mom, "batch-norm momenta restored");
    float *rm = malloc(sizeof(float) * (size_t)cru.nstate);
    memcpy(rm, cru.state, sizeof(float) * (size_t)cru.nstate);
    CHECK_OK(gbtd_net_forward(&cru, x, N, true, NULL), "training forward");
    /* compare with each BN input of this forward (training mode: the batch statistics, which
     * are the data set's since the batch is the data set); float sums over <= 64 x 64 values:
     * a relative 1e-4 of the spread is far above their rounding */
    double worst = 0;
    int nbn_all = 0;
    for (int i = 0; i < cru.nlayers; i++) {
        const gbtd_layer *L = &cru.layers[i];
        if (L->kind != GBTD_LAYER_BN) continue;
        nbn_all++;
        const gbtd_value *v = &cru.values[L->in];
        const float *a = gbtd_net_value(&cru, L->in);
        const int64_t hw = (int64_t)v->h * v->w;
        for (int c = 0; c < v->c && a; c++) {
            double s = 0, s2 = 0;
            for (int n = 0; n < N; n++)
                for (int64_t j = 0; j < hw; j++) s += a[((int64_t)n * v->c + c) * hw + j];
            const double mu = s / (double)(N * hw);
            for (int n = 0; n < N; n++)
                for (int64_t j = 0; j < hw; j++) {
                    const double t = a[((int64_t)n * v->c + c) * hw + j] - mu;
                    s2 += t * t;
                }
            const double var = s2 / (double)(N * hw - 1), sdv = sqrt(var);
            const double em = fabs(rm[L->mean + c] - mu) / (sdv + 1e-12),
                         ev = fabs(rm[L->var + c] - var) / (var + 1e-12);
            if (em > worst) worst = em;
            if (ev > worst) worst = ev;
        }
        if (!a) worst = 1;
    }
    CHECK(nbn_all > nbn, "network has batch norms besides the CRU ones");
    CHECK_LE(worst, 1e-4, "running mean and variance = the data's, every batch norm");
    /* two batches of 32: the first batch norm (after the stem conv, whose input does not
     * depend on other batch norms) still gets the data's mean (average of two equal-size
     * batch means) */
    CHECK_OK(gbtd_cru_bn_reestimate(&cru, &d, 0, N / 2, &mean, &sd, 7), "re-estimate on two batches");
    double wm = 1;
    for (int i = 0; i < cru.nlayers; i++) {
        const gbtd_layer *L = &cru.layers[i];
        if (L->kind != GBTD_LAYER_BN) continue;
        wm = 0;
        for (int c = 0; c < L->c_out; c++) {
            const double e = fabs(cru.state[L->mean + c] - rm[L->mean + c]) /
                             (sqrt(rm[L->var + c]) + 1e-12);
            if (e > wm) wm = e;
        }
        break;
    }
    CHECK_LE(wm, 1e-4, "two batches: running mean = the average of the batch means");
    CHECK_OK(gbtd_cru_bn_reestimate(&cru, &d, 0, N, &mean, &sd, 7), "re-estimate again");

    /* pass-through: gamma = sqrt(var + eps), beta = mean + 3 sd */
    int count = 0;
    CHECK_OK(gbtd_cru_act_passthrough(&cru, 3.0, &count), "act pass-through");
    CHECK(count == nbn, "pass-through sets every own BN of the act form");
    /* the first member's own BN: what feeds it does not change with the pass-through */
    char first[GBTD_NET_NAME_LEN + 16];
    snprintf(first, sizeof first, "%s.cru_bn_b", st.members[0].name);
    const int bb = layer_named(&cru, first);
    CHECK(bb >= 0, "the first member's cru_bn_b exists");
    if (bb >= 0) {
        const gbtd_layer *L = &cru.layers[bb];
        double e = 0;
        for (int c = 0; c < L->c_out; c++) {
            const double s = sqrt((double)cru.state[L->var + c] + L->eps);
            e = fmax(e, fabs(cru.params[L->w + c] - s) / s);
            e = fmax(e, fabs(cru.params[L->b + c] - (cru.state[L->mean + c] + 3 * s)) / s);
        }
        CHECK_LE(e, 1e-6, "pass-through gamma and beta from the running statistics");
        /* training forward on the whole set: BN(x) = x + 3 sd up to the biased / unbiased
         * variance ratio, 1 - sqrt(1023 / 1024) ~ 4.9e-4 times |x - mean| / sd (< 20 here), so
         * the ReLU output is max(0, x + 3 sd) within 1e-2 sd */
        CHECK_OK(gbtd_net_forward(&cru, x, N, true, NULL), "forward after pass-through");
        const gbtd_value *v = &cru.values[L->in];
        const float *a = gbtd_net_value(&cru, L->in), *y = gbtd_net_value(&cru, L->out);
        const int64_t hw = (int64_t)v->h * v->w;
        double ey = 0, clipped = 0;
        for (int n = 0; n < N && a && y; n++)
            for (int c = 0; c < v->c; c++) {
                const double s = sqrt((double)cru.state[L->var + c] + L->eps);
                for (int64_t j = 0; j < hw; j++) {
                    const int64_t k = ((int64_t)n * v->c + c) * hw + j;
                    const double want = fmax(0.0, a[k] + 3 * s);
                    ey = fmax(ey, fabs(y[k] - want) / s);
                    clipped += want == 0.0;
                }
            }
        CHECK(a && y, "values kept");
        CHECK_LE(ey, 1e-2, "pass-through BN-ReLU computes max(0, x + 3 sd)");
        /* Cantelli: P(x - mean <= -3 sd) <= 1 / (1 + 3^2) for any distribution */
        CHECK_LE(clipped / (double)(N * v->c * hw), 0.1, "the ReLU clips at most 10 % (Cantelli)");
    }
    gbtd_dataset wrong = d;
    wrong.h = 7;
    CHECK_STATUS(gbtd_cru_bn_reestimate(&cru, &wrong, 0, 0, NULL, NULL, 0), GBTD_EINVAL,
                 "re-estimation: data image size not matching the network");
    CHECK_STATUS(gbtd_cru_bn_reestimate(NULL, &d, 0, 0, NULL, NULL, 0), GBTD_EINVAL,
                 "re-estimation: NULL network");
    CHECK_STATUS(gbtd_cru_act_passthrough(&cru, -1.0, NULL), GBTD_EINVAL,
                 "pass-through: negative shift");

    /* act init for the refit: the new layers set to pass through, every other batch norm's
     * statistics exactly as before (marked values here); without keep_others they move */
    for (int i = 0; i < cru.nlayers; i++) {
        const gbtd_layer *L = &cru.layers[i];
        if (L->kind != GBTD_LAYER_BN || strstr(L->name, ".cru_bn_")) continue;
        for (int c = 0; c < L->c_out; c++) {
            cru.state[L->mean + c] = 0.25f * (float)c;
            cru.state[L->var + c] = 7.0f;
        }
    }
    float *marked = malloc((size_t)cru.nstate * sizeof *marked);
    memcpy(marked, cru.state, (size_t)cru.nstate * sizeof *marked);
    CHECK_OK(gbtd_cru_act_init(&cru, &d, 0, N / 2, &mean, &sd, 3, true), "act init, keep others");
    int kept = 1, through = 1, ncru = 0;
    for (int i = 0; i < cru.nlayers; i++) {
        const gbtd_layer *L = &cru.layers[i];
        if (L->kind != GBTD_LAYER_BN) continue;
        if (!strstr(L->name, ".cru_bn_")) {
            kept &= !memcmp(cru.state + L->mean, marked + L->mean, (size_t)L->c_out * sizeof(float)) &&
                    !memcmp(cru.state + L->var, marked + L->var, (size_t)L->c_out * sizeof(float));
            continue;
        }
        ncru++;
        for (int c = 0; c < L->c_out; c++) {
            const double sdv = sqrt((double)cru.state[L->var + c] + L->eps);
            through &= fabs(cru.params[L->w + c] - sdv) <= 1e-6 * sdv &&
                       fabs(cru.params[L->b + c] - (cru.state[L->mean + c] + 3 * sdv)) <= 1e-5 * sdv;
        }
    }
    CHECK(kept, "act init: the source's batch norms keep their statistics bit for bit");
    CHECK(ncru == nbn && through, "act init: every new BN-ReLU passes its input on");
    CHECK_OK(gbtd_cru_act_init(&cru, &d, 0, N / 2, &mean, &sd, 3, false), "act init, re-estimate all");
    int moved = 0;
    for (int i = 0; i < cru.nlayers; i++) {
        const gbtd_layer *L = &cru.layers[i];
        if (L->kind == GBTD_LAYER_BN && !strstr(L->name, ".cru_bn_"))
            moved += cru.state[L->var] != 7.0f;
    }
    CHECK(moved == nbn_all - nbn, "act init without keep_others: every other batch norm re-estimated");
    free(marked);
    gbtd_rng_free(rng);
    free(x);
    free(before);
    free(rm);
    free(d.images);
    free(d.labels);
    gbtd_net_free(&cru);
    gbtd_net_free(&plain);
    gbtd_cru_stage_free(&st);
    gbtd_cru_stage_free(&sp);
    gbtd_net_free(&src);
}

/* The first layer reading value v, -1 when none. */
static int first_reader(const gbtd_net *net, int v)
{
    for (int i = 0; i < net->nlayers; i++)
        if (net->layers[i].in == v || net->layers[i].in2 == v) return i;
    return -1;
}

/* Stage outputs: the add ending each stage of a ResNet, of its CRU-Net (the same values:
 * lossless factorization), and of a pre-activation CRU-Net preset; stages that do not exist. */
static void test_stage_outputs(void)
{
    gbtd_set_threads(1); /* small nets: threads only wait on each other on a loaded machine */
    gbtd_net src, cru, pre;
    CHECK_OK(gbtd_net_from_spec("resnet-20:input=3x8x8,classes=5", &src), "stage outputs: resnet-20");
    gbtd_net_init_params(&src, 11);
    CHECK(gbtd_cru_net_stages(&src) == 3, "stage outputs: resnet-20 has 3 stages");
    const int widths[3] = {16, 32, 64}, sizes[3] = {8, 4, 2};
    const char *next[3] = {"layer2.0.conv1", "layer3.0.conv1", ""};
    int sv[4] = {-1, -1, -1, -1};
    for (int s = 1; s <= 3; s++) {
        char name[96];
        snprintf(name, sizeof name, "stage outputs: resnet-20 stage %d found", s);
        CHECK_OK(gbtd_cru_stage_output(&src, s, &sv[s]), name);
        const gbtd_value *v = &src.values[sv[s] < 0 ? 0 : sv[s]];
        const int r = sv[s] < 0 ? -1 : first_reader(&src, sv[s]);
        snprintf(name, sizeof name, "stage outputs: resnet-20 stage %d is the add (%dx%dx%d) "
                 "read first by %s", s, widths[s - 1], sizes[s - 1], sizes[s - 1],
                 s < 3 ? next[s - 1] : "the pool");
        CHECK(sv[s] > 0 && src.layers[v->producer].kind == GBTD_LAYER_ADD &&
                  v->c == widths[s - 1] && v->h == sizes[s - 1] && v->w == sizes[s - 1] && r >= 0 &&
                  (s < 3 ? !strcmp(src.layers[r].name, next[s - 1])
                         : src.layers[r].kind == GBTD_LAYER_GAP),
              name);
    }
    int bad = 7;
    CHECK_STATUS(gbtd_cru_stage_output(&src, 4, &bad), GBTD_ENOTFOUND, "stage outputs: stage 4 refused");
    CHECK(bad == -1 && strstr(gbtd_last_error(), "stage 4 does not exist") &&
              strstr(gbtd_last_error(), "1 to 3"),
          "stage outputs: the message names the stage and the stages there are");
    CHECK_STATUS(gbtd_cru_stage_output(&src, 0, &bad), GBTD_ENOTFOUND, "stage outputs: stage 0 refused");
    CHECK_STATUS(gbtd_cru_stage_output(NULL, 1, &bad), GBTD_EINVAL, "stage outputs: NULL net refused");

    /* a lossless CRU-Net of stage 2: its stage outputs are the source's */
    gbtd_cru_stage st;
    CHECK_OK(gbtd_cru_stage_find(&src, 2, &st), "stage outputs: stage 2 members");
    gbtd_cru_stage_opts o = gbtd_cru_stage_opts_default();
    o.rank_in = 32;
    o.rank_out = 160; /* 5 members x 32: the rank of the output unfolding, exact */
    CHECK_OK(gbtd_cru_stage_factor(&src, &st, &o), "stage outputs: factor stage 2 at full rank");
    CHECK_OK(gbtd_cru_build(&src, &st, 1, &cru), "stage outputs: build the CRU-Net");
    gbtd_rng *rng = NULL;
    gbtd_rng_alloc(9, &rng);
    float x[4 * 3 * 64];
    fill_f(x, 4 * 3 * 64, rng, 1);
    float *ref[4] = {NULL};
    CHECK_OK(gbtd_net_forward(&src, x, 4, false, NULL), "stage outputs: source forward");
    for (int s = 1; s <= 3; s++) {
        const int64_t len = 4 * (int64_t)widths[s - 1] * sizes[s - 1] * sizes[s - 1];
        ref[s] = malloc((size_t)len * sizeof(float));
        memcpy(ref[s], gbtd_net_value(&src, sv[s]), (size_t)len * sizeof(float));
    }
    CHECK_OK(gbtd_net_forward(&cru, x, 4, false, NULL), "stage outputs: CRU-Net forward");
    CHECK(gbtd_cru_net_stages(&cru) == 3, "stage outputs: the CRU-Net has 3 stages");
    for (int s = 1; s <= 3; s++) {
        int cv = -1;
        char name[96];
        snprintf(name, sizeof name, "stage outputs: CRU-Net stage %d found", s);
        CHECK_OK(gbtd_cru_stage_output(&cru, s, &cv), name);
        const int64_t len = 4 * (int64_t)widths[s - 1] * sizes[s - 1] * sizes[s - 1];
        const float *a = cv > 0 ? gbtd_net_value(&cru, cv) : NULL;
        double num = 0, den = 0;
        for (int64_t i = 0; a && i < len; i++) {
            num += ((double)a[i] - ref[s][i]) * ((double)a[i] - ref[s][i]);
            den += (double)ref[s][i] * ref[s][i];
        }
        /* float32 through at most 19 layers, the factored convs two GEMMs each: ~1e-6 */
        snprintf(name, sizeof name, "stage outputs: CRU-Net stage %d output = the source's", s);
        CHECK(a && cru.values[cv].c == widths[s - 1] && den > 0 && sqrt(num / den) <= 1e-4, name);
        free(ref[s]);
    }
    /* pre-activation CRU-Net preset (bottleneck and CRU units, final BN before the pool) */
    CHECK_OK(gbtd_net_from_spec("cru-net-35@x14x7-8x4d", &pre), "stage outputs: cru-net-35@x14x7-8x4d builds");
    const int np = gbtd_cru_net_stages(&pre);
    int ok = np == 3;
    for (int s = 1; s <= np && ok; s++) {
        int v = -1;
        ok = gbtd_cru_stage_output(&pre, s, &v) == GBTD_OK &&
             pre.layers[pre.values[v].producer].kind == GBTD_LAYER_ADD;
        const int r = ok ? first_reader(&pre, v) : -1;
        char want[32];
        snprintf(want, sizeof want, "layer%d.0.", s + 1);
        ok = ok && r >= 0 &&
             (s < np ? !strncmp(pre.layers[r].name, want, strlen(want))
                     : !strcmp(pre.layers[r].name, "bn_final"));
    }
    CHECK(ok, "stage outputs: cru-net-35: 3 stages, each an add read by the next stage "
              "(the last by bn_final)");
    gbtd_rng_free(rng);
    gbtd_net_free(&pre);
    gbtd_net_free(&cru);
    gbtd_cru_stage_free(&st);
    gbtd_net_free(&src);
}

/* sum_s |F_s - F_s^T|^2 / |F_s^T|^2 over stages 1-3 on all of d in one batch: the student
 * in training mode (batch statistics, as fine-tuning sees it), the teacher with its running
 * statistics. Computed here from gbtd_cru_stage_output, apart from the fine-tuning's own sum.
 * The student's running statistics move (harmless: only distances are read afterwards). */
static double feat_dist(gbtd_net *stu, gbtd_net *tea, const gbtd_dataset *d)
{
    gbtd_loader_opts lo = gbtd_loader_opts_default();
    lo.batch = (int)d->n;
    lo.shuffle = false;
    gbtd_loader *ld = NULL;
    const float *x;
    const int32_t *y;
    int n = 0;
    double total = 0;
    if (gbtd_loader_create(d, &lo, &ld) || gbtd_loader_start_epoch(ld, 0) ||
        gbtd_loader_next(ld, &x, &y, &n) || gbtd_net_forward(stu, x, n, true, NULL) ||
        gbtd_net_forward(tea, x, n, false, NULL))
        total = NAN;
    for (int s = 1; s <= 3 && !isnan(total); s++) {
        int a = -1, b = -1;
        if (gbtd_cru_stage_output(stu, s, &a) || gbtd_cru_stage_output(tea, s, &b)) {
            total = NAN;
            break;
        }
        const gbtd_value *v = &tea->values[b];
        const int64_t len = (int64_t)n * v->c * v->h * v->w;
        const float *fa = gbtd_net_value(stu, a), *fb = gbtd_net_value(tea, b);
        double num = 0, den = 0;
        for (int64_t i = 0; i < len; i++) {
            num += ((double)fa[i] - fb[i]) * ((double)fa[i] - fb[i]);
            den += (double)fb[i] * fb[i];
        }
        total += num / den;
    }
    gbtd_loader_free(ld);
    return total;
}

typedef struct feat_log {
    double first, last;
    int epochs;
} feat_log;

static int log_epoch(const gbtd_cru_epoch_info *e, void *ctx)
{
    feat_log *l = ctx;
    if (l->epochs++ == 0) l->first = e->feat_dist;
    l->last = e->feat_dist;
    return 0;
}

/* Fine-tuning with feature matching: the same CRU-Net (stage 2 factored losslessly, then its
 * shared 1x1 perturbed) fine-tuned with logit distillation alone and with feat_beta = 1 as well;
 * the second ends far closer to the teacher's stage outputs. Bad options refused. */
static void test_finetune_features(void)
{
    gbtd_net src, a, b;
    CHECK_OK(gbtd_net_from_spec("resnet-20:input=1x8x8,classes=4", &src), "features: resnet-20 1x8x8");
    gbtd_net_init_params(&src, 2);
    gbtd_dataset d;
    gbtd_rng *rng = NULL;
    gbtd_rng_alloc(4, &rng);
    synthetic_8x8_(&d, rng);
    /* the teacher's running statistics from the data, as a trained source has them */
    CHECK_OK(gbtd_cru_bn_reestimate(&src, &d, 0, 16, NULL, NULL, 1), "features: teacher statistics");
    gbtd_cru_stage st;
    CHECK_OK(gbtd_cru_stage_find(&src, 2, &st), "features: stage 2");
    gbtd_cru_stage_opts so = gbtd_cru_stage_opts_default();
    so.rank_in = 32;
    so.rank_out = 160; /* lossless: the CRU-Net starts as the source */
    CHECK_OK(gbtd_cru_stage_factor(&src, &st, &so), "features: factor stage 2");
    CHECK_OK(gbtd_cru_build(&src, &st, 1, &a), "features: CRU-Net a");
    /* then its shared 1x1 is perturbed (relative noise 0.5): stages 2 and 3 move away from the
     * teacher's, and gradient descent can bring them back */
    const gbtd_net_entry *wa = gbtd_net_find(&a, "layer2.cru0.conv_a.weight");
    CHECK(wa != NULL, "features: the shared 1x1 of stage 2");
    if (wa) {
        float *w = gbtd_net_entry_data(&a, wa);
        double ss = 0;
        for (int64_t i = 0; i < wa->numel; i++) ss += (double)w[i] * w[i];
        const double rms = sqrt(ss / (double)wa->numel);
        for (int64_t i = 0; i < wa->numel; i++) w[i] += (float)(0.5 * rms * gbtd_rng_normal(rng));
    }
    CHECK_OK(gbtd_cru_build(&src, &st, 1, &b), "features: CRU-Net b");
    CHECK(a.nparams == b.nparams && a.nstate == b.nstate, "features: a and b alike");
    if (a.nparams == b.nparams) memcpy(b.params, a.params, (size_t)a.nparams * sizeof(float));
    const double d0 = feat_dist(&a, &src, &d);
    memcpy(a.state, b.state, (size_t)a.nstate * sizeof(float)); /* undo the measurement's BN update */

    gbtd_cru_finetune_opts fo = gbtd_cru_finetune_opts_default();
    /* labels i % 4 on noise: cross-entropy would pull the features anywhere, so the baseline is
     * pure logit distillation (alpha = 1); all layers at one rate */
    fo.epochs = 3;
    fo.batch = 16;
    fo.kd_alpha = 1.0;
    fo.lr = 0.02;
    fo.new_lr_scale = 1.0;
    fo.teacher = &src;
    feat_log la = {0, 0, 0}, lb = {0, 0, 0};
    fo.on_epoch = log_epoch;
    fo.ctx = &la;
    gbtd_cru_epoch_info ei;
    CHECK_OK(gbtd_cru_finetune(&a, &d, NULL, &fo, &ei), "features: fine-tune a (logits only)");
    CHECK(la.epochs == 3 && la.first >= 0 && isfinite(la.last) && ei.feat_dist == la.last,
          "features: the distance is reported with a teacher even at feat_beta = 0");
    fo.feat_beta = 1.0;
    fo.ctx = &lb;
    CHECK_OK(gbtd_cru_finetune(&b, &d, NULL, &fo, &ei), "features: fine-tune b (feat_beta = 1)");
    const double da = feat_dist(&a, &src, &d), db = feat_dist(&b, &src, &d);
    printf("features: distance before %.4f; after, logits only %.4f, with feat_beta = 1 %.4f "
           "(epoch means a %.4f -> %.4f, b %.4f -> %.4f)\n", d0, da, db, la.first, la.last,
           lb.first, lb.last);
    CHECK(d0 > 0.05, "features: the perturbed 1x1 moves the stage outputs (distance > 0.05)");
    CHECK(db < 0.7 * d0, "features: feat_beta = 1 cuts the feature distance by more than 30 %");
    CHECK(db < 0.8 * da, "features: and ends more than 20 % below logit distillation alone");
    CHECK(lb.last < lb.first, "features: the reported epoch distance falls with feat_beta = 1");

    /* bad options */
    fo.on_epoch = NULL;
    fo.epochs = 1;
    fo.feat_beta = -0.5;
    CHECK_STATUS(gbtd_cru_finetune(&b, &d, NULL, &fo, NULL), GBTD_EINVAL, "features: beta < 0 refused");
    CHECK(strstr(gbtd_last_error(), "feat_beta") != NULL, "features: the message names feat_beta");
    fo.feat_beta = NAN;
    CHECK_STATUS(gbtd_cru_finetune(&b, &d, NULL, &fo, NULL), GBTD_EINVAL, "features: beta NaN refused");
    fo.feat_beta = 1.0;
    fo.teacher = NULL;
    CHECK_STATUS(gbtd_cru_finetune(&b, &d, NULL, &fo, NULL), GBTD_EINVAL,
                 "features: feature matching without a teacher refused");
    CHECK(strstr(gbtd_last_error(), "teacher") != NULL, "features: the message says teacher");
    fo.teacher = &src;
    fo.feat_stages = GBTD_CRU_STAGE_BIT(2) | GBTD_CRU_STAGE_BIT(4);
    CHECK_STATUS(gbtd_cru_finetune(&b, &d, NULL, &fo, NULL), GBTD_EINVAL,
                 "features: stage 4 (not in resnet-20) refused");
    CHECK(strstr(gbtd_last_error(), "stage 4 does not exist") != NULL,
          "features: the message names stage 4");
    fo.feat_stages = GBTD_CRU_STAGE_BIT(0);
    CHECK_STATUS(gbtd_cru_finetune(&b, &d, NULL, &fo, NULL), GBTD_EINVAL, "features: stage 0 refused");
    fo.feat_stages = GBTD_CRU_STAGE_BIT(3);
    fo.max_steps = 2;
    CHECK_OK(gbtd_cru_finetune(&b, &d, NULL, &fo, &ei), "features: stage 3 alone");
    CHECK(ei.feat_dist >= 0 && isfinite(ei.feat_dist), "features: stage 3 alone reports a distance");

    gbtd_rng_free(rng);
    free(d.images);
    free(d.labels);
    gbtd_net_free(&a);
    gbtd_net_free(&b);
    gbtd_cru_stage_free(&st);
    gbtd_net_free(&src);
}

int main(void)
{
    gbtd_rng *rng = NULL;
    gbtd_rng_alloc(2024, &rng);
    test_unification(rng, 1, "R = 1: fitted BTD reproduces a ResNet bottleneck kernel");
    test_unification(rng, 4, "R = 4: fitted BTD reproduces a ResNeXt (4 x 2d) kernel");
    test_chain_exact("resnet-20:input=3x8x8", 3, 16, 24, 1, false, "basic, R = 1");
    test_chain_exact("resnet-20:input=3x8x8", 2, 8, 8, 2, true, "basic, R = 2, extra 1x1");
    test_chain_exact("custom:block=bottleneck,units=3/3,width=16/32,inner=8/16,groups=1/4,"
                     "input=3x8x8,classes=4", 2, 4, 4, 4, false, "bottleneck units, R = 4");
    test_lossless_net();
    test_collective_wins();
    test_finetune_frozen();
    test_bn_reestimate_act();
    test_stage_outputs();
    test_finetune_features();
    gbtd_rng_free(rng);
    return check_finish();
}
