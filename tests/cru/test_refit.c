/* Tests of the response refit (gbtd_cru_refit): a planted case (a lossless CRU-Net whose own
 * 1x1s were perturbed is restored exactly: the source's logits come back), optimality in a
 * lossy case (the objective, measured here from the networks' values in double, is at a
 * minimum: every perturbation of the solution raises it), and refusals. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cru/build.h"
#include "cru/stage.h"
#include "nn/arch.h"

/* 96 random 3x8x8 images in 4 classes (the caller frees images and labels). */
static void images_(gbtd_dataset *d, gbtd_rng *rng)
{
    memset(d, 0, sizeof *d);
    strcpy(d->name, "synthetic");
    d->n = 96;
    d->c = 3;
    d->h = d->w = 8;
    d->classes = 4;
    d->images = malloc(96 * 3 * 64);
    d->labels = malloc(96 * sizeof(int32_t));
    for (int i = 0; i < 96 * 3 * 64; i++) d->images[i] = (uint8_t)(gbtd_rng_uniform(rng) * 255);
    for (int i = 0; i < 96; i++) d->labels[i] = i % 4;
}

/* The source network with running statistics from the data (a trained network has them). */
static void source_(gbtd_net *src, const gbtd_dataset *d)
{
    CHECK_OK(gbtd_net_from_spec("resnet-20:input=3x8x8,classes=4", src), "refit: resnet-20 8x8");
    gbtd_net_init_params(src, 3);
    CHECK_OK(gbtd_cru_bn_reestimate(src, d, 0, 32, NULL, NULL, 1), "refit: source statistics");
}

/* Normalised images of d, as the refit sees them (data-set statistics, no augmentation). */
static float *normalised_(const gbtd_dataset *d)
{
    float m[4], s[4];
    gbtd_dataset_stats(d, m, s);
    const int64_t img = (int64_t)d->c * d->h * d->w;
    float *x = malloc((size_t)(d->n * img) * sizeof *x);
    for (int64_t i = 0; i < d->n; i++)
        for (int c = 0; c < d->c; c++)
            for (int p = 0; p < d->h * d->w; p++) {
                const int64_t j = i * img + (int64_t)c * d->h * d->w + p;
                x[j] = ((float)d->images[j] / 255.0f - m[c]) / s[c];
            }
    return x;
}

static void perturb_(gbtd_net *net, const char *name, double rel, gbtd_rng *rng)
{
    const gbtd_net_entry *e = gbtd_net_find(net, name);
    CHECK(e != NULL, name);
    if (!e) return;
    float *w = gbtd_net_entry_data(net, e);
    double ss = 0;
    for (int64_t i = 0; i < e->numel; i++) ss += (double)w[i] * w[i];
    const double rms = sqrt(ss / (double)e->numel);
    for (int64_t i = 0; i < e->numel; i++) w[i] += (float)(rel * rms * gbtd_rng_normal(rng));
}

static double rel_logit_error_(gbtd_net *a, gbtd_net *b, const float *x, int n)
{
    const float *la, *lb;
    if (gbtd_net_forward(a, x, n, false, &la)) return INFINITY;
    const int k = a->classes;
    float *keep = malloc((size_t)n * k * sizeof *keep);
    memcpy(keep, la, (size_t)n * k * sizeof *keep);
    double num = 0, den = 0;
    if (!gbtd_net_forward(b, x, n, false, &lb))
        for (int i = 0; i < n * k; i++) {
            num += ((double)keep[i] - lb[i]) * ((double)keep[i] - lb[i]);
            den += (double)keep[i] * keep[i];
        }
    else
        num = INFINITY;
    free(keep);
    return sqrt(num / den);
}

/* A source network, its stage `stage` factored with R = terms, ranks (ri, ro), and the
 * CRU-Net built from it, over 96 random images. */
typedef struct fixture_ {
    gbtd_rng *rng;
    gbtd_dataset d;
    gbtd_net src, cru;
    gbtd_cru_stage st;
} fixture_;

static void fixture_make_(fixture_ *f, uint64_t seed, int stage, int terms, int64_t ri, int64_t ro,
                          const char *what)
{
    char label[96];
    gbtd_rng_alloc(seed, &f->rng);
    images_(&f->d, f->rng);
    source_(&f->src, &f->d);
    snprintf(label, sizeof label, "%s: stage %d", what, stage);
    CHECK_OK(gbtd_cru_stage_find(&f->src, stage, &f->st), label);
    gbtd_cru_stage_opts so = gbtd_cru_stage_opts_default();
    so.terms = terms;
    so.rank_in = ri;
    so.rank_out = ro;
    so.independent = false;
    snprintf(label, sizeof label, "%s: factor", what);
    CHECK_OK(gbtd_cru_stage_factor(&f->src, &f->st, &so), label);
    snprintf(label, sizeof label, "%s: build", what);
    CHECK_OK(gbtd_cru_build(&f->src, &f->st, 1, &f->cru), label);
}

static void fixture_free_(fixture_ *f)
{
    free(f->d.images);
    free(f->d.labels);
    gbtd_net_free(&f->cru);
    gbtd_cru_stage_free(&f->st);
    gbtd_net_free(&f->src);
    gbtd_rng_free(f->rng);
}

/* The refit on all 96 images without ridge (the plain least-squares solution). */
static void refit_exact_(fixture_ *f, int batch, gbtd_cru_refit_info *info, const char *label)
{
    gbtd_cru_refit_opts ro = gbtd_cru_refit_opts_default();
    ro.images = 96;
    ro.batch = batch;
    ro.ridge = 0;
    CHECK_OK(gbtd_cru_refit(&f->cru, &f->src, &f->d, &ro, info), label);
}

/* Lossless factorization of stage 2, then every member's cru_d perturbed by 30 %: the CRU-Net
 * is far from the source; the refit (ridge 0, all 96 images) restores its logits. */
static void test_planted(void)
{
    fixture_ f;
    fixture_make_(&f, 8, 2, 1, 32, 160, "planted"); /* r_out 160 = 5 members x 32: lossless */
    CHECK_LE(f.st.kernel_error, 1e-6, "planted: lossless factorization");
    float *x = normalised_(&f.d);
    const double e0 = rel_logit_error_(&f.src, &f.cru, x, 96);
    for (int m = 0; m < f.st.nmembers; m++) {
        char nm[GBTD_NET_NAME_LEN + 16];
        snprintf(nm, sizeof nm, "%s.cru_d.weight", f.st.members[m].name);
        perturb_(&f.cru, nm, 0.3, f.rng);
    }
    const double e1 = rel_logit_error_(&f.src, &f.cru, x, 96);
    gbtd_cru_refit_info info;
    refit_exact_(&f, 32, &info, "planted: refit");
    const double e2 = rel_logit_error_(&f.src, &f.cru, x, 96);
    printf("planted: logits rel. error lossless %.2e, perturbed %.2e, refitted %.2e; response "
           "error %.3e -> %.3e over %d members\n", e0, e1, e2, info.error_before,
           info.error_after, info.members);
    CHECK(info.members == 5 && info.images == 96, "planted: 5 members refitted on 96 images");
    CHECK(e1 > 0.05, "planted: the perturbation moves the logits (> 5 %)");
    CHECK_LE(e2, 1e-3, "planted: the refit restores the source's logits");
    CHECK(info.error_before > 0.01 && info.error_after < 1e-5,
          "planted: response error from > 1e-2 to < 1e-5");
    free(x);
    fixture_free_(&f);
}

/* Sum over the images of |cru_d output - source response|^2 for one member, in double. */
static double objective_(gbtd_net *cru, gbtd_net *src, const float *x, int n, int layer,
                         int target)
{
    if (gbtd_net_forward(src, x, n, false, NULL) || gbtd_net_forward(cru, x, n, false, NULL))
        return INFINITY;
    const gbtd_value *v = &src->values[target];
    const int64_t len = (int64_t)n * v->c * v->h * v->w;
    const float *a = gbtd_net_value(cru, cru->layers[layer].out), *b = gbtd_net_value(src, target);
    double s = 0;
    for (int64_t i = 0; i < len; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return s;
}

static int layer_named_(const gbtd_net *net, const char *name)
{
    for (int i = 0; i < net->nlayers; i++)
        if (!strcmp(net->layers[i].name, name)) return i;
    return -1;
}

/* The intercept objective sum |W z + b - y|^2 of one member, measured after the batch norms:
 * the CRU-Net's BN (running mean shifted by -b) and the source's (the same gamma, variance and
 * original mean) differ by (W z + b - y) gamma / sd per channel. */
static double objective_bn_(gbtd_net *cru, gbtd_net *src, const float *x, int n, int bn_cru,
                            int bn_src)
{
    if (gbtd_net_forward(src, x, n, false, NULL) || gbtd_net_forward(cru, x, n, false, NULL))
        return INFINITY;
    const gbtd_layer *L = &src->layers[bn_src];
    const gbtd_value *v = &src->values[L->out];
    const int64_t P = (int64_t)v->h * v->w;
    const float *a = gbtd_net_value(cru, cru->layers[bn_cru].out), *b = gbtd_net_value(src, L->out);
    double s = 0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < v->c; c++) {
            const double sd = sqrt((double)src->state[L->var + c] + L->eps);
            const double k = sd / (double)src->params[L->w + c];
            for (int64_t p = 0; p < P; p++) {
                const int64_t j = ((int64_t)i * v->c + c) * P + p;
                const double d = ((double)a[j] - b[j]) * k;
                s += d * d;
            }
        }
    return s;
}

/* An objective of fixture f on its 96 images x; ids: the two layers or values it reads. */
typedef double (*objective_fn_)(fixture_ *f, const float *x, const int *ids);

static double obj_plain_(fixture_ *f, const float *x, const int *ids)
{
    return objective_(&f->cru, &f->src, x, 96, ids[0], ids[1]);
}

static double obj_bn_(fixture_ *f, const float *x, const int *ids)
{
    return objective_bn_(&f->cru, &f->src, x, 96, ids[0], ids[1]);
}

/* How many of `tries` random perturbations of layer3.2.conv2.cru_d (the first half by 1 %, the
 * rest by 0.1 %) raise obj above ref; the weights are restored after each (0: no such layer). */
static int raised_by_perturbing_(fixture_ *f, const float *x, int tries, double ref,
                                 objective_fn_ obj, const int *ids)
{
    static const char *const name = "layer3.2.conv2.cru_d.weight";
    const gbtd_net_entry *e = gbtd_net_find(&f->cru, name);
    if (!e) return 0;
    float *w = gbtd_net_entry_data(&f->cru, e);
    float *keep = malloc((size_t)e->numel * sizeof *keep);
    memcpy(keep, w, (size_t)e->numel * sizeof *keep);
    int raised = 0;
    for (int t = 0; t < tries; t++) {
        perturb_(&f->cru, name, t < tries / 2 ? 1e-2 : 1e-3, f->rng);
        if (obj(f, x, ids) > ref) raised++;
        memcpy(w, keep, (size_t)e->numel * sizeof *keep);
    }
    free(keep);
    return raised;
}

/* Lossy stage 3 (R = 2, small ranks): after the refit with ridge 0 on all images, the last
 * member's objective is at its minimum (it is the last refitted, so nothing after it moved its
 * input): random perturbations of its weights, of 1 % and 0.1 %, all raise it, and the
 * objective fell from before. */
static void test_optimal(void)
{
    fixture_ f;
    fixture_make_(&f, 9, 3, 2, 4, 6, "optimal");
    float *x = normalised_(&f.d);
    const gbtd_cru_member *mb = &f.st.members[f.st.nmembers - 1];
    char nm[GBTD_NET_NAME_LEN + 16];
    snprintf(nm, sizeof nm, "%s.cru_d", mb->name);
    const int layer = layer_named_(&f.cru, nm), target = f.src.layers[mb->conv[0]].out;
    CHECK(layer >= 0, "optimal: the last member's cru_d");
    gbtd_cru_refit_info info;
    refit_exact_(&f, 96, &info, "optimal: refit");
    const double f0 = objective_(&f.cru, &f.src, x, 96, layer, target);
    CHECK(layer >= 0 && !strcmp(mb->name, "layer3.2.conv2"), "optimal: the last member is layer3.2.conv2");
    const int ids[2] = {layer, target}, tries = 6;
    const int raised = raised_by_perturbing_(&f, x, tries, f0, obj_plain_, ids);
    printf("optimal: objective %.6e; %d of %d perturbations raise it; response error %.4f -> "
           "%.4f\n", f0, raised, tries, info.error_before, info.error_after);
    CHECK(raised == tries, "optimal: every perturbation of the solution raises the objective");
    CHECK(info.error_after < info.error_before, "optimal: the mean response error falls");
    free(x);
    fixture_free_(&f);
}

/* The same lossy case with an intercept: its objective (measured through the batch norm the
 * constant was folded into) is at most the plain refit's minimum, and perturbing the weights or
 * the constant raises it. */
static void test_intercept(void)
{
    fixture_ f, g;
    fixture_make_(&f, 9, 3, 2, 4, 6, "intercept");
    fixture_make_(&g, 9, 3, 2, 4, 6, "intercept");
    float *x = normalised_(&f.d);
    const int layer = layer_named_(&f.cru, "layer3.2.conv2.cru_d");
    const int bn_c = layer_named_(&g.cru, "layer3.2.bn2"), bn_s = layer_named_(&g.src, "layer3.2.bn2");
    const int target = layer_named_(&f.src, "layer3.2.conv2");
    CHECK(layer >= 0 && bn_c >= 0 && bn_s >= 0 && target >= 0, "intercept: layers found");
    if (layer < 0 || bn_c < 0 || bn_s < 0 || target < 0) return;
    refit_exact_(&f, 96, NULL, "intercept: plain refit");
    const double f0 = objective_(&f.cru, &f.src, x, 96, layer, f.src.layers[target].out);
    gbtd_cru_refit_opts ro = gbtd_cru_refit_opts_default();
    ro.images = 96;
    ro.batch = 48;
    ro.ridge = 0;
    ro.intercept = true;
    gbtd_cru_refit_info info;
    CHECK_OK(gbtd_cru_refit(&g.cru, &g.src, &g.d, &ro, &info), "intercept: refit");
    const double fi = objective_bn_(&g.cru, &g.src, x, 96, bn_c, bn_s);
    const gbtd_layer *B = &g.cru.layers[bn_c];
    double shift = 0;
    for (int c = 0; c < B->c_out; c++)
        shift += fabs((double)g.cru.state[B->mean + c] - g.src.state[g.src.layers[bn_s].mean + c]);
    const int ids[2] = {bn_c, bn_s};
    int tries = 4, raised = raised_by_perturbing_(&g, x, tries, fi, obj_bn_, ids);
    float *mean = g.cru.state + B->mean;
    for (int t = 0; t < 2; t++, tries++) { /* the constant of one channel, either way */
        const float m0 = mean[t];
        mean[t] += t ? 1e-2f : -1e-2f;
        if (objective_bn_(&g.cru, &g.src, x, 96, bn_c, bn_s) > fi) raised++;
        mean[t] = m0;
    }
    printf("intercept: objective %.6e (plain refit %.6e), mean |b| %.3e; %d of %d perturbations "
           "raise it\n", fi, f0, shift / B->c_out, raised, tries);
    CHECK(fi <= f0 * (1 + 1e-5), "intercept: no worse than the plain least squares");
    CHECK(shift > 0, "intercept: a constant was folded into the batch norm");
    CHECK(raised == tries && tries == 6, "intercept: every perturbation raises the objective");
    free(x);
    fixture_free_(&f);
    fixture_free_(&g);
}

static int stop_(const char *layer, int i, int n, double before, double after, void *ctx)
{
    (void)layer, (void)n, (void)before, (void)after, (void)ctx;
    return i >= 2;
}

static void test_refusals(void)
{
    fixture_ f;
    fixture_make_(&f, 10, 2, 1, 8, 8, "refusals");
    gbtd_cru_refit_opts ro = gbtd_cru_refit_opts_default();
    ro.images = 32;
    CHECK_STATUS(gbtd_cru_refit(&f.src, &f.src, &f.d, &ro, NULL), GBTD_ENOTFOUND,
                 "refusals: a network without CRU members");
    ro.ridge = -1;
    CHECK_STATUS(gbtd_cru_refit(&f.cru, &f.src, &f.d, &ro, NULL), GBTD_EINVAL, "refusals: negative ridge");
    ro.ridge = 1e-3;
    ro.images = 0;
    CHECK_STATUS(gbtd_cru_refit(&f.cru, &f.src, &f.d, &ro, NULL), GBTD_EINVAL, "refusals: no images");
    ro.images = 32;
    gbtd_dataset wrong = f.d;
    wrong.h = wrong.w = 4;
    CHECK_STATUS(gbtd_cru_refit(&f.cru, &f.src, &wrong, &ro, NULL), GBTD_EINVAL,
                 "refusals: images of another size");
    gbtd_net other;
    CHECK_OK(gbtd_net_from_spec("custom:block=bottleneck,units=2/2,width=16/32,inner=8/16,"
                                "input=3x8x8,classes=4", &other), "refusals: a bottleneck net");
    CHECK_STATUS(gbtd_cru_refit(&f.cru, &other, &f.d, &ro, NULL), GBTD_EINVAL,
                 "refusals: a source without the member's convolution shape");
    gbtd_net_free(&other);
    ro.on_member = stop_;
    CHECK_STATUS(gbtd_cru_refit(&f.cru, &f.src, &f.d, &ro, NULL), GBTD_ECANCELLED,
                 "refusals: the callback stops it");
    ro.on_member = NULL;
    /* in a member's own source convolution (upstream, a ReLU would turn NaN into 0) */
    const gbtd_net_entry *e = gbtd_net_find(&f.src, "layer2.1.conv1.weight");
    if (e) gbtd_net_entry_data(&f.src, e)[0] = NAN;
    CHECK_STATUS(gbtd_cru_refit(&f.cru, &f.src, &f.d, &ro, NULL), GBTD_ENONFINITE,
                 "refusals: NaN in the source's weights");
    fixture_free_(&f);
}

int main(void)
{
    test_planted();
    test_optimal();
    test_intercept();
    test_refusals();
    return check_finish();
}
