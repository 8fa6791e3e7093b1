/* models unit tests: BN folding (closed form vs conv -> BN in double), spec strings of the
 * torchvision families (parameter counts as torchvision publishes them), recognition from
 * names and shapes (every layout, prefixes, refusals with reasons), export/read round trips in
 * every dtype and container, hostile files, allocation failures.
 *
 * usage: test_models BUILDDIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "models/models.h"
#include "nn/arch.h"
#include "nn/train.h"

static const char *bdir;
static float zeros_[8 << 20];

static char *path_(const char *leaf)
{
    static char buf[4][1024];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", bdir, leaf);
    return buf[k];
}

/* ---- BN folding ------------------------------------------------------------------------- */

static void test_fold(void)
{
    /* conv 4 -> 6 channels, 3x3, groups 2, on a 2 x 4 x 5 x 5 input, with a bias */
    gbtd_conv2d_shape s = gbtd_conv2d_shape_make(2, 4, 5, 5, 6, 3, 1, 1, 2);
    gbtd_conv2d_shape_init(&s);
    const int64_t per = 2 * 9, nw = 6 * per, nx = 2 * 4 * 25, ny = 2 * 6 * 25;
    float w[6 * 18], b[6], g[6], be[6], m[6], v[6], x[200], wf[6 * 18], bf[6];
    double wd[6 * 18], bd[6], xd[200], y1[300], y2[300], wfd[6 * 18], bfd[6];
    gbtd_rng *r;
    gbtd_rng_alloc(5, &r);
    for (int i = 0; i < nw; i++) wd[i] = w[i] = (float)gbtd_rng_normal(r);
    for (int i = 0; i < nx; i++) xd[i] = x[i] = (float)gbtd_rng_normal(r);
    for (int o = 0; o < 6; o++) {
        bd[o] = b[o] = (float)gbtd_rng_normal(r);
        g[o] = (float)(0.5 + gbtd_rng_uniform(r));
        be[o] = (float)gbtd_rng_normal(r);
        m[o] = (float)gbtd_rng_normal(r);
        v[o] = (float)(0.1 + gbtd_rng_uniform(r));
    }
    gbtd_rng_free(r);
    const float eps = 1e-5f;
    CHECK_OK(gbtd_bn_fold(6, per, w, b, g, be, m, v, eps, wf, bf), "fold: runs");
    /* reference: conv then BN(eval) in double */
    gbtd_conv2d_forward_refd(&s, xd, wd, bd, y1);
    for (int64_t i = 0; i < ny; i++) {
        int o = (int)((i / 25) % 6);
        y1[i] = g[o] * (y1[i] - m[o]) / sqrt((double)v[o] + eps) + be[o];
    }
    for (int i = 0; i < nw; i++) wfd[i] = wf[i];
    for (int o = 0; o < 6; o++) bfd[o] = bf[o];
    gbtd_conv2d_forward_refd(&s, xd, wfd, bfd, y2);
    /* the folded weights and bias are rounded to float once (relative 2^-24 each); the sum of
     * 18 products then deviates by at most 2^-24 (sum |w'x| + |b'|) per output */
    double worst = 0;
    for (int64_t i = 0; i < ny; i++) {
        int o = (int)((i / 25) % 6);
        double bound = ldexp(1.0, -24) * (fabs(bfd[o]) + 18 * 40.0 * 4.0) + 1e-300;
        double q = fabs(y2[i] - y1[i]) / bound;
        worst = q > worst ? q : worst;
    }
    CHECK_LE(worst, 1.0, "fold: conv(x, w') + b' == BN_eval(conv(x, w) + b) within rounding");
    /* aliasing in place gives the same numbers; NULL gamma / beta / bias mean 1 / 0 / 0 */
    float w2[6 * 18], b2[6];
    memcpy(w2, w, sizeof w2);
    memcpy(b2, b, sizeof b2);
    CHECK_OK(gbtd_bn_fold(6, per, w2, b2, g, be, m, v, eps, w2, b2), "fold: in place");
    CHECK(!memcmp(w2, wf, sizeof wf) && !memcmp(b2, bf, sizeof bf), "fold: in place == out of place");
    CHECK_OK(gbtd_bn_fold(6, per, w, NULL, NULL, NULL, m, v, eps, w2, b2), "fold: defaults");
    CHECK_CLOSE(b2[0], -m[0] / sqrt((double)v[0] + eps), 0, 1e-6, "fold: bias = -mean / sqrt(var + eps)");
    float bad[6];
    memcpy(bad, v, sizeof bad);
    bad[2] = -1.0f;
    CHECK_STATUS(gbtd_bn_fold(6, per, w, b, g, be, m, bad, eps, w2, b2), GBTD_ENONFINITE,
                 "fold: negative variance refused");
    CHECK_STATUS(gbtd_bn_fold(6, per, w, b, g, be, m, v, 0.0f, w2, b2), GBTD_EINVAL,
                 "fold: eps 0 refused");
    CHECK_STATUS(gbtd_bn_fold(6, per, NULL, b, g, be, m, v, eps, w2, b2), GBTD_EINVAL,
                 "fold: NULL refused");
    CHECK_STATUS(gbtd_bn_fold(0, per, w, b, g, be, m, v, eps, w2, b2), GBTD_EINVAL,
                 "fold: size 0 refused");

    /* on a network: ResNet-20's stem conv -> bn1 */
    gbtd_net net;
    CHECK_OK(gbtd_net_from_spec("resnet-20", &net), "fold net: resnet-20");
    float *wn = malloc(16 * 27 * sizeof(float)), *bn = malloc(16 * sizeof(float));
    float *wr = malloc(16 * 27 * sizeof(float)), *br = malloc(16 * sizeof(float));
    for (int i = 0; i < 16; i++) net.state[net.layers[1].var + i] = 0.5f + i; /* non-trivial */
    CHECK_OK(gbtd_net_fold_bn(&net, 0, wn, bn), "fold net: conv1 + bn1");
    const gbtd_layer *B = &net.layers[1];
    gbtd_bn_fold(16, 27, net.params + net.layers[0].w, NULL, net.params + B->w,
                 net.params + B->b, net.state + B->mean, net.state + B->var, B->eps, wr, br);
    CHECK(!memcmp(wn, wr, 16 * 27 * sizeof(float)) && !memcmp(bn, br, 16 * sizeof(float)),
          "fold net: equals the raw fold of the layer's slabs");
    CHECK_STATUS(gbtd_net_fold_bn(&net, 1, wn, bn), GBTD_EINVAL, "fold net: BN layer refused");
    gbtd_net_free(&net);
    CHECK_OK(gbtd_net_from_spec("custom:act=pre,units=1/1,width=8/16", &net), "fold net: pre-act");
    int conv = -1;
    for (int l = net.nlayers - 1; l >= 0; l--)
        if (net.layers[l].kind == GBTD_LAYER_CONV) {
            conv = l;
            break;
        }
    CHECK_STATUS(gbtd_net_fold_bn(&net, conv, wn, bn), GBTD_ENOTFOUND,
                 "fold net: pre-activation conv (no BN after it) refused");
    gbtd_net_free(&net);
    free(wn);
    free(bn);
    free(wr);
    free(br);
}

/* ---- spec strings ----------------------------------------------------------------------- */

static int64_t params_of_(const char *spec)
{
    gbtd_arch a;
    gbtd_net n;
    if (gbtd_arch_parse(spec, &a) || gbtd_arch_build(&a, &n)) return -1;
    int64_t p = n.nparams;
    gbtd_net_free(&n);
    return p;
}

static void test_specs(void)
{
    /* torchvision's published parameter counts (torchvision.models docs) */
    struct {
        const char *spec, *name;
        int64_t params;
    } tv[] = {
        {"resnet-18", "resnet18", 11689512},
        {"resnet-50", "resnet50", 25557032},
        {"resnet-152", "resnet152", 60192808},
        {"resnext-50-32x4d", "resnext50_32x4d", 25028904},
        {"resnext-101-32x4d:inner=256/512/1024/2048", "resnext101_32x8d", 88791336},
        {"resnet-50:inner=128/256/512/1024", "wide_resnet50_2", 68883240},
    };
    for (size_t i = 0; i < sizeof tv / sizeof tv[0]; i++) {
        char label[160];
        snprintf(label, sizeof label, "spec: %s has torchvision's %lld parameters", tv[i].name,
                 (long long)tv[i].params);
        CHECK(params_of_(tv[i].spec) == tv[i].params, label);
    }
    /* every preset and some variants come back from their generated spec */
    const char *const *pre = gbtd_arch_presets();
    int bad = 0, n = 0;
    const char *extra[] = {"resnet-50:inner=128/256/512/1024", "resnet-20:input=1x28x28,classes=7",
                           "custom:block=bottleneck,units=2/2,width=64/128,inner=16/32,eps=0.001",
                           "resnet-50:eps=1.001e-05,momentum=0.01", "cru-net-116@x28x14-32x4d",
                           NULL};
    for (int pass = 0; pass < 2; pass++) {
        const char *const *list = pass ? extra : pre;
        for (int i = 0; list[i]; i++) {
            gbtd_arch a, b;
            char spec[128];
            n++;
            if (gbtd_arch_parse(list[i], &a) || gbtd_model_arch_spec(&a, spec, sizeof spec) ||
                gbtd_arch_parse(spec, &b) || params_of_(spec) != params_of_(list[i]) ||
                a.bn_eps != b.bn_eps || a.in_h != b.in_h || a.classes != b.classes) {
                printf("  spec round trip failed: %s -> %s\n", list[i], spec);
                bad++;
            }
        }
    }
    char label[96];
    snprintf(label, sizeof label, "spec: %d presets and variants round-trip", n);
    CHECK(bad == 0, label);
    gbtd_arch a;
    char spec[128];
    gbtd_arch_parse("resnet-50:inner=128/256/512/1024", &a);
    gbtd_model_arch_spec(&a, spec, sizeof spec);
    printf("  wide_resnet50_2 spec: %s\n", spec);
    CHECK(strlen(spec) <= strlen("resnet-50:inner=128/256/512/1024"), "spec: shortest form chosen");
    CHECK_STATUS(gbtd_model_arch_spec(&a, spec, 12), GBTD_EINVAL, "spec: too short a buffer");
}

/* ---- recognition ------------------------------------------------------------------------- */

/* A tensor set with the network's names and shapes, data pointing at a zero buffer (no copy). */
static int set_from_spec_(const char *spec, const char *prefix, gbtd_tensor_set *s)
{
    gbtd_arch a;
    gbtd_net n;
    memset(s, 0, sizeof *s);
    if (gbtd_arch_parse(spec, &a) || gbtd_arch_build(&a, &n)) return -1;
    const int64_t one = 1;
    char nm[160];
    for (int i = 0; i < n.nentries; i++) {
        const gbtd_net_entry *e = &n.entries[i];
        snprintf(nm, sizeof nm, "%s%s", prefix, e->name);
        gbtd_tensor_set_add(s, nm, GBTD_DTYPE_F32, 1, &one, zeros_);
        gbtd_named_tensor *t = &s->items[s->count - 1];
        gbtd_free(t->data);
        t->data = zeros_;
        t->owned = false;
        t->ndim = e->ndim;
        memcpy(t->shape, e->shape, sizeof e->shape);
        t->nbytes = (size_t)e->numel * 4;
    }
    gbtd_net_free(&n);
    return 0;
}

static void test_recognize(void)
{
    struct {
        const char *spec, *prefix, *family;
        gbtd_model_layout layout;
    } cases[] = {
        {"resnet-18", "", "resnet18", GBTD_MODEL_TORCHVISION},
        {"resnet-101", "module.", "resnet101", GBTD_MODEL_TORCHVISION},
        {"resnext-101-32x4d:inner=256/512/1024/2048", "", "resnext101_32x8d",
         GBTD_MODEL_TORCHVISION},
        {"resnet-50:inner=128/256/512/1024", "", "wide_resnet50_2", GBTD_MODEL_TORCHVISION},
        {"resnet-110", "", "resnet110-cifar", GBTD_MODEL_CIFAR},
        {"cru-net-35@x14x7-8x4d", "", "cru-net-35", GBTD_MODEL_GBTD},
        {"cru-net-116@x28x14-32x4d", "", "cru-net-116", GBTD_MODEL_GBTD},
        {"custom:act=pre,block=bottleneck,units=2/2,width=32/64,inner=8/16,groups=2/4", "",
         "preact-resnet-14", GBTD_MODEL_GBTD},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gbtd_tensor_set s;
        gbtd_model_info info;
        char label[200];
        set_from_spec_(cases[i].spec, cases[i].prefix, &s);
        snprintf(label, sizeof label, "recognise %s%s", cases[i].prefix, cases[i].spec);
        CHECK_OK(gbtd_model_recognize(&s, "set", &info), label);
        gbtd_arch a;
        gbtd_arch_parse(cases[i].spec, &a);
        bool same = info.arch.nstages == a.nstages && info.params == params_of_(cases[i].spec) &&
                    !strcmp(info.prefix, cases[i].prefix);
        for (int k = 0; same && k < a.nstages; k++)
            same = info.arch.units[k] == a.units[k] && info.arch.width[k] == a.width[k] &&
                   info.arch.share[k] == a.share[k];
        snprintf(label, sizeof label, "recognise %s: layout %s, family %s (got %s, %s), stages "
                 "and parameters", cases[i].spec, gbtd_model_layout_name(cases[i].layout),
                 cases[i].family, gbtd_model_layout_name(info.layout), info.family);
        CHECK(same && info.layout == cases[i].layout && !strcmp(info.family, cases[i].family),
              label);
        gbtd_tensor_set_free(&s);
    }
    /* refusals, each with its reason */
    gbtd_tensor_set s;
    gbtd_model_info info;
    const int64_t sh[2] = {3, 4};
    memset(&s, 0, sizeof s);
    gbtd_tensor_set_add(&s, "encoder.weight", GBTD_DTYPE_F32, 2, sh, zeros_);
    CHECK_STATUS(gbtd_model_recognize(&s, "x.safetensors", &info), GBTD_EFORMAT,
                 "refuse: unrelated names");
    CHECK(strstr(gbtd_last_error(), "x.safetensors: no known network layout") &&
              strstr(info.why, "conv1.weight") && strstr(info.why, "conv1_conv/kernel:0"),
          "refuse: message names the file and each layout's reason");
    gbtd_tensor_set_free(&s);

    set_from_spec_("resnet-20", "", &s);
    gbtd_tensor_set_add(&s, "extra.weight", GBTD_DTYPE_F32, 2, sh, zeros_);
    CHECK_STATUS(gbtd_model_recognize(&s, "set", &info), GBTD_EFORMAT, "refuse: extra tensor");
    CHECK(strstr(info.why, "'extra.weight' has no place") != NULL, "refuse: extra tensor named");
    gbtd_tensor_set_free(&s);

    set_from_spec_("resnet-20", "", &s);
    gbtd_named_tensor *t = (gbtd_named_tensor *)gbtd_tensor_set_find(&s, "layer2.1.conv2.weight");
    t->shape[1] = 16;
    t->nbytes /= 2;
    CHECK_STATUS(gbtd_model_recognize(&s, "set", &info), GBTD_EFORMAT, "refuse: wrong shape");
    CHECK(strstr(info.why, "'layer2.1.conv2.weight' has shape (32, 16, 3, 3)") != NULL,
          "refuse: wrong shape named with both shapes");
    t = (gbtd_named_tensor *)gbtd_tensor_set_find(&s, "layer2.1.conv2.weight");
    t->shape[1] = 32;
    t->nbytes *= 2;
    t = (gbtd_named_tensor *)gbtd_tensor_set_find(&s, "linear.bias");
    t->dtype = GBTD_DTYPE_I32;
    CHECK_STATUS(gbtd_model_recognize(&s, "set", &info), GBTD_EFORMAT, "refuse: integer weights");
    CHECK(strstr(info.why, "is int32, not a float type") != NULL, "refuse: dtype named");
    t->dtype = GBTD_DTYPE_F32;
    gbtd_attr_list_set_string(&s.meta, "gbtd.spec", "resnet-19");
    /* metadata that does not parse: the names decide */
    CHECK_OK(gbtd_model_recognize(&s, "set", &info), "recognise: bad metadata spec, names match");
    CHECK(info.layout == GBTD_MODEL_CIFAR && strstr(info.why, "") && info.arch.units[0] == 3,
          "recognise: bad metadata spec falls back to the names");
    gbtd_attr_list_free(&s.meta);
    CHECK_OK(gbtd_model_recognize(&s, "set", &info), "recognise: restored set");
    gbtd_tensor_set_free(&s);
}

/* ---- export and read round trips --------------------------------------------------------- */

static void randomise_(gbtd_net *net, uint64_t seed)
{
    gbtd_net_init_params(net, seed);
    gbtd_rng *r;
    gbtd_rng_alloc(seed + 1, &r);
    for (int64_t i = 0; i < net->nstate; i++) net->state[i] = (float)(0.5 + gbtd_rng_uniform(r));
    gbtd_rng_free(r);
}

static void test_roundtrip(void)
{
    gbtd_net net, back;
    gbtd_model_info info;
    CHECK_OK(gbtd_net_from_spec("resnet-20", &net), "rt: resnet-20");
    randomise_(&net, 11);
    const gbtd_dtype dts[4] = {GBTD_DTYPE_F32, GBTD_DTYPE_F64, GBTD_DTYPE_F16, GBTD_DTYPE_BF16};
    for (int k = 0; k < 4; k++) {
        char label[128];
        gbtd_export_opts o = gbtd_export_opts_default();
        o.dtype = dts[k];
        snprintf(label, sizeof label, "rt %s: export", gbtd_dtype_name(dts[k]));
        CHECK_OK(gbtd_model_export(&net, path_("rt.safetensors"), &o), label);
        snprintf(label, sizeof label, "rt %s: load", gbtd_dtype_name(dts[k]));
        CHECK_OK(gbtd_model_load(path_("rt.safetensors"), NULL, &back, &info), label);
        int64_t diff = 0;
        for (int64_t i = 0; back.params && i < net.nparams; i++) {
            float p = net.params[i], q = back.params[i];
            float want = dts[k] == GBTD_DTYPE_F16    ? gbtd_f16_to_float(gbtd_float_to_f16(p))
                         : dts[k] == GBTD_DTYPE_BF16 ? gbtd_bf16_to_float(gbtd_float_to_bf16(p))
                                                     : p;
            diff += q != want;
        }
        snprintf(label, sizeof label, "rt %s: every parameter is the exactly rounded value "
                 "(%lld differ)", gbtd_dtype_name(dts[k]), (long long)diff);
        CHECK(back.params && diff == 0 && info.layout == GBTD_MODEL_GBTD, label);
        gbtd_net_free(&back);
    }
    gbtd_tensor_set s;
    CHECK_OK(gbtd_safetensors_read(path_("rt.safetensors"), &s), "rt: reread");
    const gbtd_named_tensor *nb = gbtd_tensor_set_find(&s, "layer1.0.bn1.num_batches_tracked");
    CHECK(nb && nb->dtype == GBTD_DTYPE_I64 && nb->ndim == 0, "rt: num_batches_tracked int64 scalar");
    const gbtd_attr *sp = gbtd_attr_list_find(&s.meta, "gbtd.spec");
    const gbtd_attr *ar = gbtd_attr_list_find(&s.meta, "gbtd.arch");
    CHECK(sp && !strcmp(sp->strs[0], "resnet-20") && ar && strstr(ar->strs[0], "\"shortcut\": \"a\""),
          "rt: metadata has gbtd.spec and gbtd.arch");
    /* the same tensors without metadata, as .npz: recognised from the names */
    gbtd_tensor_set_free(&s);
    gbtd_model_export(&net, path_("rt.safetensors"), NULL);
    gbtd_safetensors_read(path_("rt.safetensors"), &s);
    gbtd_attr_list_free(&s.meta);
    CHECK_OK(gbtd_npz_write(path_("rt.npz"), &s, true), "rt npz: written");
    CHECK_OK(gbtd_model_load(path_("rt.npz"), NULL, &back, &info), "rt npz: loads");
    CHECK(info.layout == GBTD_MODEL_CIFAR && info.format == GBTD_FORMAT_NPZ && back.params &&
              !memcmp(back.params, net.params, (size_t)net.nparams * 4) &&
              !memcmp(back.state, net.state, (size_t)net.nstate * 4),
          "rt npz: CIFAR layout, bit-exact");
    gbtd_net_free(&back);
    gbtd_tensor_set_free(&s);
    /* gbtd checkpoint */
    CHECK_OK(gbtd_checkpoint_save(path_("rt_ckpt.h5"), &net, NULL, NULL), "rt ckpt: saved");
    CHECK_OK(gbtd_model_load(path_("rt_ckpt.h5"), NULL, &back, &info), "rt ckpt: loads");
    CHECK(info.layout == GBTD_MODEL_GBTD && back.params &&
              !memcmp(back.params, net.params, (size_t)net.nparams * 4),
          "rt ckpt: spec from the checkpoint, bit-exact");
    gbtd_net_free(&back);
    /* plain HDF5 with one dataset per tensor ("/conv1/weight") */
    gbtd_h5 *h;
    gbtd_h5_create(path_("rt_plain.h5"), &h);
    for (int i = 0; i < net.nentries; i++) {
        char nm[128];
        snprintf(nm, sizeof nm, "/%s", net.entries[i].name);
        for (char *p = nm; *p; p++)
            if (*p == '.') *p = '/';
        gbtd_h5_write_float(h, nm, net.entries[i].ndim, net.entries[i].shape,
                            gbtd_net_entry_data(&net, &net.entries[i]));
    }
    gbtd_h5_close(h);
    CHECK_OK(gbtd_model_load(path_("rt_plain.h5"), NULL, &back, &info), "rt plain h5: loads");
    CHECK(info.layout == GBTD_MODEL_CIFAR && back.params &&
              !memcmp(back.params, net.params, (size_t)net.nparams * 4),
          "rt plain h5: bit-exact");
    gbtd_net_free(&back);
    /* input shape override and its refusal */
    gbtd_model_opts mo = gbtd_model_opts_default();
    mo.in_h = mo.in_w = 16;
    CHECK_OK(gbtd_model_load(path_("rt.npz"), &mo, &back, &info), "rt: 16x16 input");
    CHECK(back.in_h == 16 && strstr(back.spec, "input=3x16x16"), "rt: spec records the input");
    gbtd_net_free(&back);
    mo.in_c = 1;
    CHECK_STATUS(gbtd_model_load(path_("rt.npz"), &mo, &back, &info), GBTD_ESHAPE,
                 "rt: wrong input channels refused");
    /* export errors */
    gbtd_export_opts eo = gbtd_export_opts_default();
    eo.dtype = GBTD_DTYPE_I32;
    CHECK_STATUS(gbtd_model_export(&net, path_("bad.safetensors"), &eo), GBTD_EINVAL,
                 "export: integer dtype refused");
    CHECK_STATUS(gbtd_model_export(&net, "/nonexistent-dir/x.safetensors", NULL), GBTD_EIO,
                 "export: unwritable folder refused");
    /* assign into another network */
    gbtd_net other;
    gbtd_net_from_spec("resnet-32", &other);
    gbtd_tensor_set s2;
    gbtd_model_read(path_("rt.npz"), &s2, NULL);
    gbtd_model_recognize(&s2, "rt.npz", &info);
    CHECK_STATUS(gbtd_model_assign(&info, &s2, "rt.npz", &other), GBTD_ENOTFOUND,
                 "assign: another network refused");
    gbtd_tensor_set_free(&s2);
    gbtd_net_free(&other);
    gbtd_net_free(&net);
}

/* ---- hostile and unsupported files -------------------------------------------------------- */

static void write_bytes_(const char *p, const void *d, size_t n)
{
    FILE *f = fopen(p, "wb");
    fwrite(d, 1, n, f);
    fclose(f);
}

static void test_hostile(void)
{
    gbtd_net net;
    gbtd_model_info info;
    CHECK_STATUS(gbtd_model_load(path_("missing.safetensors"), NULL, &net, &info), GBTD_EIO,
                 "hostile: missing file");
    write_bytes_(path_("garbage.bin"), "hello world, not weights", 24);
    int rc = gbtd_model_load(path_("garbage.bin"), NULL, &net, &info);
    CHECK(rc == GBTD_EFORMAT || rc == GBTD_EUNSUPPORTED, "hostile: garbage refused");
    CHECK(strstr(gbtd_last_error(), "garbage.bin") != NULL, "hostile: message names the file");
    /* truncated export */
    gbtd_net_from_spec("resnet-20", &net);
    gbtd_model_export(&net, path_("full.safetensors"), NULL);
    gbtd_net_free(&net);
    FILE *f = fopen(path_("full.safetensors"), "rb");
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    write_bytes_(path_("trunc.safetensors"), buf, n / 2);
    CHECK_STATUS(gbtd_model_load(path_("trunc.safetensors"), NULL, &net, &info), GBTD_EFORMAT,
                 "hostile: truncated safetensors");
    /* a header that lies about a shape: same bytes, recognised layout refuses */
    float one[6] = {0};
    int64_t sh[1] = {6};
    gbtd_npy_save_float(path_("one.npy"), 1, sh, one);
    CHECK_STATUS(gbtd_model_load(path_("one.npy"), NULL, &net, &info), GBTD_EUNSUPPORTED,
                 "hostile: .npy is not a weights file");
    CHECK_STATUS(gbtd_model_load(NULL, NULL, &net, &info), GBTD_EINVAL, "hostile: NULL path");
}

static void test_alloc_failures(void)
{
    /* every allocation of a load, failed in turn: ENOMEM (or the error it becomes), no leak */
    check_alloc_install();
    gbtd_net net;
    gbtd_model_info info;
    int fails = 0, leaks = 0, k;
    for (k = 0; k < 2000; k++) {
        long live = check_alloc_live();
        check_alloc_fail_after(k);
        int rc = gbtd_model_load(path_("full.safetensors"), NULL, &net, &info);
        check_alloc_fail_after(-1);
        if (rc == GBTD_OK) {
            gbtd_net_free(&net);
            if (check_alloc_live() != live) leaks++;
            break;
        }
        fails += rc != GBTD_ENOMEM;
        if (check_alloc_live() != live) leaks++;
    }
    char label[128];
    snprintf(label, sizeof label, "alloc: %d failure points all give ENOMEM", k);
    CHECK(fails == 0 && k > 10 && k < 2000, label);
    CHECK(leaks == 0, "alloc: nothing leaked");
}

int main(int argc, char **argv)
{
    bdir = argc > 1 ? argv[1] : ".";
    test_fold();
    test_specs();
    test_recognize();
    test_roundtrip();
    test_hostile();
    test_alloc_failures();
    return check_finish();
}
