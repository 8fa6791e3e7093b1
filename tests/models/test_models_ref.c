/* models vs PyTorch: torchvision ResNet-18/50, ResNeXt-50 and a Keras-layout ResNet-50 (files
 * and float64 reference logits written by make_models.py), the pretrained CIFAR ResNets
 * (predictions on the first 1000 test images equal PyTorch's), exports loaded back by
 * torchvision (strict) and by python/gbtd_torch.py (a CRU-Net) giving gbtd's outputs.
 *
 * usage: test_models_ref GENDIR DATADIR BUILDDIR PYTHON CHECK_SCRIPT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "models/models.h"
#include "nn/arch.h"
#include "nn/data.h"
#include "nn/train.h"

static const char *gen, *data, *bdir, *py, *script;

/* Tolerance of a float32 forward against a float64 reference, relative to max|ref|: a ResNet
 * of depth L runs L dot products of length K <= 3*3*512 = 4608 in sequence; each adds a
 * relative rounding error of about sqrt(K) * 2^-24 (random-sign accumulation) ~ 4e-6, and BN
 * layers keep errors from growing faster than additively, so L = 50 gives ~2e-4. */
#define FWD_RTOL 2e-4

static double max_abs_(const double *a, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

static int ref_tensor_(const gbtd_tensor_set *ref, const char *name, double *out, int64_t n)
{
    const gbtd_named_tensor *t = gbtd_tensor_set_find(ref, name);
    if (!t || gbtd_named_tensor_numel(t) != n) return GBTD_ENOTFOUND;
    return gbtd_dtype_to_double(t->dtype, t->data, n, out);
}

/* gbtd forward of x (n images) compared with the reference logits "logits.<name>". */
static void compare_forward_(gbtd_net *net, const gbtd_tensor_set *ref, const char *name, int n,
                             const float *x, double rtol)
{
    char label[160], key[96];
    const float *logits = NULL;
    snprintf(label, sizeof label, "%s: forward runs", name);
    CHECK_OK(gbtd_net_forward(net, x, n, false, &logits), label);
    if (!logits) return;
    int64_t m = (int64_t)n * net->classes;
    double *r = calloc((size_t)m, sizeof(double));
    snprintf(key, sizeof key, "logits.%s", name);
    snprintf(label, sizeof label, "%s: reference logits present", name);
    CHECK_OK(ref_tensor_(ref, key, r, m), label);
    double err = 0;
    for (int64_t i = 0; i < m; i++) {
        double d = fabs(logits[i] - r[i]);
        err = d > err ? d : err;
    }
    double scale = max_abs_(r, m);
    snprintf(label, sizeof label, "%s: max |gbtd - torch| / max |torch| <= %.0e (scale %.3g)",
             name, rtol, scale);
    CHECK_LE(scale > 0 ? err / scale : 1.0, rtol, label);
    free(r);
}

static void torchvision_models_(const gbtd_tensor_set *ref, const float *x)
{
    const char *names[3] = {"resnet18", "resnet50", "resnext50_32x4d"};
    const int groups[3] = {1, 1, 32}, units1[3] = {2, 3, 3};
    for (int i = 0; i < 3; i++) {
        char path[1024], label[160];
        snprintf(path, sizeof path, "%s/tv_%s.safetensors", gen, names[i]);
        gbtd_model_opts o = gbtd_model_opts_default();
        o.in_h = o.in_w = 64;
        gbtd_net net;
        gbtd_model_info info;
        snprintf(label, sizeof label, "%s: recognised and loaded", names[i]);
        CHECK_OK(gbtd_model_load(path, &o, &net, &info), label);
        snprintf(label, sizeof label, "%s: layout torchvision, family '%s'", names[i], info.family);
        CHECK(info.layout == GBTD_MODEL_TORCHVISION && !strcmp(info.family, names[i]), label);
        snprintf(label, sizeof label, "%s: 4 stages, groups %d, %d units in stage 1", names[i],
                 groups[i], units1[i]);
        CHECK(info.arch.nstages == 4 && info.arch.groups[0] == groups[i] &&
                  info.arch.units[0] == units1[i] && info.arch.classes == 1000, label);
        snprintf(label, sizeof label, "%s: num_batches_tracked ignored (%d)", names[i],
                 info.ignored);
        CHECK(info.ignored > 0, label);
        if (net.finalized) compare_forward_(&net, ref, names[i], 2, x, FWD_RTOL);
        if (i == 1 && net.finalized) {
            /* export with torchvision names; gbtd reads it back bit-exact, torchvision loads it
             * strictly and computes the same logits (checked by the Python script) */
            char out[1024], io[1024], cmd[4096];
            snprintf(out, sizeof out, "%s/export_resnet50.safetensors", bdir);
            CHECK_OK(gbtd_model_export(&net, out, NULL), "resnet50: exported");
            gbtd_net back;
            gbtd_model_info bi;
            CHECK_OK(gbtd_model_load(out, &o, &back, &bi), "resnet50 export: loads back");
            CHECK(bi.layout == GBTD_MODEL_GBTD && back.nparams == net.nparams &&
                      !memcmp(back.params, net.params, (size_t)net.nparams * sizeof(float)) &&
                      !memcmp(back.state, net.state, (size_t)net.nstate * sizeof(float)),
                  "resnet50 export: parameters and running statistics bit-exact");
            gbtd_net_free(&back);
            const float *lg;
            gbtd_net_forward(&net, x, 2, false, &lg);
            gbtd_tensor_set s;
            memset(&s, 0, sizeof s);
            int64_t xs[4] = {2, 3, 64, 64}, ls[2] = {2, 1000};
            gbtd_tensor_set_add(&s, "x", GBTD_DTYPE_F32, 4, xs, x);
            gbtd_tensor_set_add(&s, "logits", GBTD_DTYPE_F32, 2, ls, lg);
            snprintf(io, sizeof io, "%s/export_resnet50_io.safetensors", bdir);
            CHECK_OK(gbtd_safetensors_write(io, &s), "resnet50 export: io file written");
            gbtd_tensor_set_free(&s);
            snprintf(cmd, sizeof cmd, "'%s' '%s' torchvision:resnet50 '%s' '%s' %g", py, script,
                     out, io, FWD_RTOL);
            CHECK(system(cmd) == 0, "resnet50 export: torchvision load_state_dict(strict=True) "
                                    "and its logits equal gbtd's");
        }
        gbtd_net_free(&net);
    }
}

static void keras_model_(const gbtd_tensor_set *ref, const float *x)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/keras_resnet50.h5", gen);
    gbtd_model_opts o = gbtd_model_opts_default();
    o.in_h = o.in_w = 64;
    gbtd_net net;
    gbtd_model_info info;
    CHECK_OK(gbtd_model_load(path, &o, &net, &info), "keras ResNet50: recognised and loaded");
    CHECK(info.layout == GBTD_MODEL_KERAS && info.stride_on_1x1 && info.conv_bias &&
              !strcmp(info.family, "keras-resnet50"),
          "keras ResNet50: layout keras, stride on the 1x1, conv biases");
    CHECK(!strncmp(info.spec, "v1:", 3), "keras ResNet50: spec marks the v1 graph");
    if (net.finalized) compare_forward_(&net, ref, "keras_resnet50", 2, x, FWD_RTOL);
    /* round trip through gbtd's own export keeps the v1 graph */
    char out[1024];
    snprintf(out, sizeof out, "%s/export_keras50.safetensors", bdir);
    CHECK_OK(gbtd_model_export(&net, out, NULL), "keras ResNet50: exported");
    gbtd_net back;
    gbtd_model_info bi;
    CHECK_OK(gbtd_model_load(out, &o, &back, &bi), "keras ResNet50 export: loads back");
    CHECK(bi.stride_on_1x1 && back.nparams == net.nparams &&
              !memcmp(back.params, net.params, (size_t)net.nparams * sizeof(float)),
          "keras ResNet50 export: v1 graph and parameters bit-exact");
    if (back.finalized) compare_forward_(&back, ref, "keras_resnet50", 2, x, FWD_RTOL);
    gbtd_net_free(&back);
    gbtd_net_free(&net);
}

static void cifar_models_(const gbtd_tensor_set *ref)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/cifar-10-batches-bin/test_batch.bin", data);
    gbtd_dataset d;
    if (gbtd_dataset_load_cifar_file(path, &d)) {
        printf("skip cifar: %s\n", gbtd_last_error());
        return;
    }
    const int n = 1000;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    float *x = malloc((size_t)n * 3072 * sizeof(float));
    for (int64_t i = 0; i < (int64_t)n * 3072; i++) {
        int c = (int)((i / 1024) % 3);
        x[i] = (d.images[i] / 255.0f - mean[c]) / sd[c];
    }
    const int depth[4] = {20, 32, 44, 56};
    const int64_t params[4] = {269722, 464154, 658586, 853018}; /* data/README.md */
    for (int k = 0; k < 4; k++) {
        char label[160], key[64];
        snprintf(path, sizeof path, "%s/models/resnet%d-cifar10.safetensors", data, depth[k]);
        gbtd_net net;
        gbtd_model_info info;
        snprintf(label, sizeof label, "resnet%d-cifar10: recognised and loaded", depth[k]);
        CHECK_OK(gbtd_model_load(path, NULL, &net, &info), label);
        snprintf(label, sizeof label, "resnet%d-cifar10: layout cifar, %lld parameters",
                 depth[k], (long long)params[k]);
        CHECK(info.layout == GBTD_MODEL_CIFAR && info.params == params[k] &&
                  info.arch.units[0] == (depth[k] - 2) / 6 && info.arch.shortcut_a,
              label);
        if (!net.finalized) continue;
        int64_t *pred = malloc((size_t)n * sizeof(int64_t));
        double *rp = malloc((size_t)n * sizeof(double));
        for (int b = 0; b < n; b += 200) {
            const float *lg;
            gbtd_net_forward(&net, x + (int64_t)b * 3072, 200, false, &lg);
            for (int i = 0; i < 200; i++) {
                int best = 0;
                for (int c = 1; c < 10; c++)
                    if (lg[i * 10 + c] > lg[i * 10 + best]) best = c;
                pred[b + i] = best;
            }
        }
        snprintf(key, sizeof key, "cifar_pred.resnet%d", depth[k]);
        int same = 0;
        if (ref_tensor_(ref, key, rp, n) == GBTD_OK)
            for (int i = 0; i < n; i++) same += pred[i] == (int64_t)rp[i];
        snprintf(label, sizeof label, "resnet%d-cifar10: %d of 1000 predictions equal PyTorch's",
                 depth[k], same);
        CHECK(same == n, label);
        free(pred);
        free(rp);
        gbtd_net_free(&net);
    }
    free(x);
    gbtd_dataset_free(&d);
}

/* A CRU-Net with random weights and batch-norm statistics, exported and run by gbtd_torch. */
static void cru_export_(void)
{
    gbtd_net net;
    CHECK_OK(gbtd_net_from_spec("cru-net-35@x14x7-8x4d", &net), "cru: built");
    if (!net.finalized) return;
    gbtd_net_init_params(&net, 7);
    gbtd_rng *rng;
    gbtd_rng_alloc(3, &rng);
    for (int i = 0; i < net.nentries; i++) {
        const gbtd_net_entry *e = &net.entries[i];
        float *p = gbtd_net_entry_data(&net, e);
        for (int64_t j = 0; j < e->numel; j++) {
            double u = gbtd_rng_uniform(rng);
            if (e->kind == GBTD_ENTRY_BN_WEIGHT) p[j] = (float)(0.5 + u);
            if (e->kind == GBTD_ENTRY_BN_BIAS) p[j] = (float)(0.2 * (u - 0.5));
            if (e->kind == GBTD_ENTRY_BN_MEAN) p[j] = (float)(0.2 * (u - 0.5));
            if (e->kind == GBTD_ENTRY_BN_VAR) p[j] = (float)(0.5 + u);
        }
    }
    const int n = 2;
    float *x = malloc((size_t)n * 3 * 32 * 32 * sizeof(float));
    for (int i = 0; i < n * 3 * 32 * 32; i++) x[i] = (float)(2 * gbtd_rng_uniform(rng) - 1);
    gbtd_rng_free(rng);
    const float *lg = NULL;
    CHECK_OK(gbtd_net_forward(&net, x, n, false, &lg), "cru: forward");
    char out[1024], io[1024], cmd[4096];
    snprintf(out, sizeof out, "%s/export_cru.safetensors", bdir);
    snprintf(io, sizeof io, "%s/export_cru_io.safetensors", bdir);
    CHECK_OK(gbtd_model_export(&net, out, NULL), "cru: exported");
    gbtd_tensor_set s;
    memset(&s, 0, sizeof s);
    int64_t xs[4] = {n, 3, 32, 32}, ls[2] = {n, net.classes};
    gbtd_tensor_set_add(&s, "x", GBTD_DTYPE_F32, 4, xs, x);
    gbtd_tensor_set_add(&s, "logits", GBTD_DTYPE_F32, 2, ls, lg);
    CHECK_OK(gbtd_safetensors_write(io, &s), "cru: io file written");
    gbtd_tensor_set_free(&s);
    /* the CRU-Net is 35 layers deep with K <= 9 * 256: the same bound as FWD_RTOL */
    snprintf(cmd, sizeof cmd, "'%s' '%s' gbtd '%s' '%s' %g", py, script, out, io, FWD_RTOL);
    CHECK(system(cmd) == 0, "cru: gbtd_torch builds it, loads it strictly, same logits");
    /* and gbtd reads its own export back */
    gbtd_net back;
    gbtd_model_info bi;
    CHECK_OK(gbtd_model_load(out, NULL, &back, &bi), "cru export: loads back");
    CHECK(bi.layout == GBTD_MODEL_GBTD && back.nparams == net.nparams &&
              !memcmp(back.params, net.params, (size_t)net.nparams * sizeof(float)),
          "cru export: parameters bit-exact");
    gbtd_net_free(&back);
    free(x);
    gbtd_net_free(&net);
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: test_models_ref GENDIR DATADIR BUILDDIR PYTHON SCRIPT\n");
        return 2;
    }
    gen = argv[1], data = argv[2], bdir = argv[3], py = argv[4], script = argv[5];
    gbtd_set_threads(2);
    char path[1024];
    snprintf(path, sizeof path, "%s/ref.safetensors", gen);
    gbtd_tensor_set ref;
    CHECK_OK(gbtd_safetensors_read(path, &ref), "reference file read");
    const gbtd_named_tensor *xt = gbtd_tensor_set_find(&ref, "x");
    CHECK(xt && xt->dtype == GBTD_DTYPE_F32 && gbtd_named_tensor_numel(xt) == 2 * 3 * 64 * 64,
          "reference input 2 x 3 x 64 x 64");
    if (xt) {
        const float *x = xt->data;
        torchvision_models_(&ref, x);
        keras_model_(&ref, x);
    }
    cifar_models_(&ref);
    cru_export_();
    gbtd_tensor_set_free(&ref);
    return check_finish();
}
