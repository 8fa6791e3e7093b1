/* Unit tests of the network builder, data readers, optimiser, checkpoints and a short
 * training run. usage: test_net [SHARED_DATA_DIR] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../check.h"
#include "io/io.h"
#include "nn/arch.h"
#include "nn/train.h"

static void counts_(void)
{
    /* exact counts of the graphs in PAPER.md (docs/networks.md explains the columns) */
    static const struct { const char *spec; long long params, weights, mib; double gmacs; } c[] = {
        {"resnet-50", 25557032, 25503912, 98, 4.09},
        {"resnext-50-32x4d", 25028904, 24960680, 96, 4.23},
        {"cru-net-56@x14-32x4d", 25609384, 25539880, 98, 5.63},
        {"cru-net-56@x14-136x1d", 25474144, 25403520, 98, 5.65},
        {"cru-net-116@x28x14-32x4d", 43656136, 43519304, 168, 12.65},
        {"resnet-20", 269722, 268346, 2, 0.04},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        gbtd_arch a;
        gbtd_net n;
        char label[160];
        memset(&n, 0, sizeof n);
        int rc = gbtd_arch_parse(c[i].spec, &a);
        if (!rc) rc = gbtd_arch_build(&a, &n);
        int64_t bn = 0;
        for (int k = 0; k < n.nlayers; k++)
            if (n.layers[k].kind == GBTD_LAYER_BN) bn += n.layers[k].params;
        snprintf(label, sizeof label, "%s: %lld parameters", c[i].spec, c[i].params);
        CHECK(rc == 0 && n.nparams == c[i].params, label);
        snprintf(label, sizeof label, "%s: %lld weights without batch norm", c[i].spec,
                 c[i].weights);
        CHECK(rc == 0 && n.nparams - bn == c[i].weights, label);
        snprintf(label, sizeof label, "%s: %lld MiB float32 file incl. running statistics",
                 c[i].spec, c[i].mib);
        CHECK(rc == 0 && (gbtd_net_file_bytes(&n) + (1 << 20) - 1) >> 20 == c[i].mib, label);
        snprintf(label, sizeof label, "%s: %.2f G multiply-adds", c[i].spec, c[i].gmacs);
        CHECK_CLOSE(gbtd_net_macs(&n) / 1e9, c[i].gmacs, 0.005, 0, label);
        gbtd_net_free(&n);
    }
    /* the paper's rounding: ResNeXt-50 25.0 M, CRU-Net-116 43.7 M (all parameters);
     * ResNet-50 25.5 M and CRU-Net-56 25.5 M (weights without batch norm) */
    gbtd_net n;
    CHECK_OK(gbtd_net_from_spec("resnet-20:input=1x28x28", &n), "resnet-20 on 28x28 builds");
    CHECK(n.classes == 10 && gbtd_net_find(&n, "layer3.2.bn2.running_var") &&
              gbtd_net_find(&n, "linear.weight"),
          "resnet-20 uses the PyTorch CIFAR names");
    gbtd_net_free(&n);
    /* sharing: one weight per group */
    CHECK_OK(gbtd_net_from_spec("cru-net-35@x14x7-8x4d", &n), "cru-net-35 builds");
    int shared = 0;
    for (int k = 0; k < n.nlayers; k++) shared += n.layers[k].shared_with >= 0;
    /* stages 2 and 3: conv_a and conv_b reused by units 1 and 2 (4 each), W_p at stride 2 (1) */
    CHECK(shared == 10 && !gbtd_net_find(&n, "layer2.1.conv_a.weight") &&
              gbtd_net_find(&n, "layer2.0.conv_a.weight"),
          "cru-net-35: 10 layers reuse a weight, no duplicate tensors");
    gbtd_net_free(&n);
    /* explicit form */
    CHECK_OK(gbtd_net_from_spec("custom:block=bottleneck,act=pre,units=2/2,width=32/64,"
                                "inner=16/32,groups=4/32,share=0/2,input=1x12x12,classes=5", &n),
             "custom spec with units, widths, groups and sharing");
    CHECK(n.classes == 5 && n.in_h == 12, "custom spec: classes and input");
    gbtd_net_free(&n);
    gbtd_arch a;
    CHECK_STATUS(gbtd_arch_parse("resnet-19", &a), GBTD_EINVAL, "unknown depth refused");
    CHECK_STATUS(gbtd_arch_parse("resnet-20:units=3/x", &a), GBTD_EINVAL, "bad list refused");
    CHECK_STATUS(gbtd_arch_parse("resnet-20:width=16/32", &a), GBTD_EINVAL,
                 "list length != stages refused");
    CHECK_STATUS(gbtd_arch_parse("resnet-20:colour=red", &a), GBTD_EINVAL, "unknown key refused");
    CHECK_STATUS(gbtd_arch_parse("bottleneck-29:groups=3/3/3", &a), GBTD_EINVAL,
                 "groups not dividing the width refused");
    CHECK_STATUS(gbtd_arch_parse("resnet-20:share=0/2/0", &a), GBTD_EINVAL,
                 "CRU stage in a post-activation net refused");
}

static void write_file_(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(buf, 1, len, f);
        fclose(f);
    }
}

static void data_errors_(void)
{
    char dir[] = "/tmp/gbtd_data_XXXXXX", p[512], q[512];
    if (!mkdtemp(dir)) return;
    gbtd_dataset d;
    memset(&d, 0, sizeof d);
    uint8_t rec[2 * 3073];
    memset(rec, 7, sizeof rec);
    rec[0] = 3;
    rec[3073] = 9;
    snprintf(p, sizeof p, "%s/ok.bin", dir);
    write_file_(p, rec, sizeof rec);
    CHECK_OK(gbtd_dataset_load_cifar_file(p, &d), "cifar: two valid records");
    CHECK(d.n == 2 && d.labels[0] == 3 && d.labels[1] == 9 && d.images[5] == 7,
          "cifar: labels and pixels");
    gbtd_dataset_free(&d);
    snprintf(p, sizeof p, "%s/short.bin", dir);
    write_file_(p, rec, 3073 + 100);
    CHECK_STATUS(gbtd_dataset_load_cifar_file(p, &d), GBTD_EFORMAT, "cifar: truncated refused");
    CHECK(strstr(gbtd_last_error(), "short.bin") != NULL, "cifar: message names the file");
    rec[3073] = 10;
    snprintf(p, sizeof p, "%s/label.bin", dir);
    write_file_(p, rec, sizeof rec);
    CHECK_STATUS(gbtd_dataset_load_cifar_file(p, &d), GBTD_EFORMAT, "cifar: label 10 refused");
    CHECK(d.n == 0 && d.images == NULL, "cifar: nothing left behind");
    snprintf(p, sizeof p, "%s/none.bin", dir);
    CHECK_STATUS(gbtd_dataset_load_cifar_file(p, &d), GBTD_EIO, "cifar: missing file refused");
    /* IDX: 2 images 2x2 + labels */
    uint8_t img[16 + 8] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t lab[8 + 2] = {0, 0, 8, 1, 0, 0, 0, 2, 4, 9};
    snprintf(p, sizeof p, "%s/img", dir);
    snprintf(q, sizeof q, "%s/lab", dir);
    write_file_(p, img, sizeof img);
    write_file_(q, lab, sizeof lab);
    CHECK_OK(gbtd_dataset_load_idx(p, q, 10, &d), "idx: valid (uncompressed) files");
    CHECK(d.n == 2 && d.h == 2 && d.labels[1] == 9 && d.images[7] == 8, "idx: contents");
    gbtd_dataset_free(&d);
    write_file_(p, img, sizeof img - 1);
    CHECK_STATUS(gbtd_dataset_load_idx(p, q, 10, &d), GBTD_EFORMAT, "idx: truncated refused");
    img[3] = 1;
    write_file_(p, img, sizeof img);
    CHECK_STATUS(gbtd_dataset_load_idx(p, q, 10, &d), GBTD_EFORMAT, "idx: wrong magic refused");
    CHECK(strstr(gbtd_last_error(), "magic") != NULL, "idx: message says magic");
    img[3] = 3;
    write_file_(p, img, sizeof img);
    lab[9] = 10;
    write_file_(q, lab, sizeof lab);
    CHECK_STATUS(gbtd_dataset_load_idx(p, q, 10, &d), GBTD_EFORMAT, "idx: label 10 refused");
    snprintf(q, sizeof q, "rm -rf '%s'", dir);
    if (system(q) != 0) printf("could not remove %s\n", dir);
}

static void loader_(void)
{
    gbtd_dataset d;
    memset(&d, 0, sizeof d);
    d.n = 10;
    d.c = 1;
    d.h = d.w = 4;
    d.classes = 10;
    snprintf(d.name, sizeof d.name, "toy");
    d.images = gbtd_malloc(160);
    d.labels = gbtd_malloc(10 * sizeof(int32_t));
    for (int i = 0; i < 160; i++) d.images[i] = (uint8_t)(i % 16 * 16);
    for (int i = 0; i < 10; i++) d.labels[i] = i;
    float sums[2][10];
    for (int run = 0; run < 2; run++) {
        gbtd_loader_opts o = gbtd_loader_opts_default();
        o.batch = 4;
        o.shuffle = o.flip = true;
        o.crop_pad = 1;
        o.seed = 5;
        o.mean[0] = 0;
        o.std[0] = 1;
        o.prefetch = run == 0; /* same batches with and without the thread */
        gbtd_loader *l;
        CHECK_OK(gbtd_loader_create(&d, &o, &l), "loader: create");
        gbtd_loader_start_epoch(l, 3);
        const float *x;
        const int32_t *y;
        int n, k = 0, total = 0, seen = 0;
        while (gbtd_loader_next(l, &x, &y, &n) == GBTD_OK && n > 0) {
            for (int i = 0; i < n; i++) {
                float s = 0;
                for (int j = 0; j < 16; j++) s += x[i * 16 + j];
                sums[run][k++] = s + 1000.0f * (float)y[i];
                seen |= 1 << y[i];
            }
            total += n;
        }
        CHECK(total == 10 && seen == 1023, "loader: an epoch visits every image once");
        gbtd_loader_free(l);
    }
    CHECK(!memcmp(sums[0], sums[1], sizeof sums[0]),
          "loader: batches depend on (seed, epoch) only, not on the prefetch thread");
    gbtd_dataset_free(&d);
}

static void optim_(void)
{
    gbtd_net n;
    CHECK_OK(gbtd_net_from_spec("custom:units=1,width=4,stem-width=4,input=1x4x4,classes=2", &n),
             "tiny net");
    gbtd_sgd_opts so = {0.9, 0.1, true, false};
    gbtd_sgd s;
    CHECK_OK(gbtd_sgd_init(&s, &n, &so), "sgd init");
    const gbtd_net_entry *w = gbtd_net_find(&n, "conv1.weight"), *g = gbtd_net_find(&n, "bn1.weight");
    float *pw = gbtd_net_entry_data(&n, w), *pg = gbtd_net_entry_data(&n, g);
    float w0 = pw[0], g0 = pg[0];
    for (int64_t i = 0; i < n.nparams; i++) n.grads[i] = 0.5f;
    gbtd_sgd_step(&s, n.params, n.grads, 0.1);
    gbtd_sgd_step(&s, n.params, n.grads, 0.1);
    /* closed form in double for two Nesterov steps: d = g + wd p; v = mu v + d;
     * p -= lr (d + mu v) */
    double p = w0, v = 0, q = g0, u = 0;
    for (int k = 0; k < 2; k++) {
        double d = 0.5 + 0.1 * p;
        v = 0.9 * v + d;
        p -= 0.1 * (d + 0.9 * v);
        double e = 0.5; /* no decay on batch norm */
        u = 0.9 * u + e;
        q -= 0.1 * (e + 0.9 * u);
    }
    CHECK_CLOSE(pw[0], p, 1e-6, 1e-6, "sgd: Nesterov with weight decay on a conv weight");
    CHECK_CLOSE(pg[0], q, 1e-6, 1e-6, "sgd: no weight decay on batch-norm gamma");
    gbtd_lr_schedule sch = {GBTD_LR_COSINE, 1.0, 110, 10, 0, {0}, 0.1};
    CHECK_CLOSE(gbtd_lr_at(&sch, 0), 0.1, 1e-12, 0, "warm-up: first step base/10");
    CHECK_CLOSE(gbtd_lr_at(&sch, 60), 0.5, 1e-12, 0, "cosine: half way = base/2");
    CHECK_CLOSE(gbtd_lr_at(&sch, 110), 0.0, 1e-12, 0, "cosine: end = 0");
    gbtd_lr_schedule st = {GBTD_LR_STEP, 1.0, 0, 0, 2, {10, 20}, 0.1};
    CHECK_CLOSE(gbtd_lr_at(&st, 15), 0.1, 1e-12, 0, "step: after one milestone");
    CHECK_CLOSE(gbtd_lr_at(&st, 25), 0.01, 1e-12, 0, "step: after two milestones");

    /* checkpoint round trip and version check */
    char path[] = "/tmp/gbtd_ckpt_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    gbtd_train_state ts = {3, 42, 7}, back;
    CHECK_OK(gbtd_checkpoint_save(path, &n, &s, &ts), "checkpoint: save");
    float keep = pw[1], kv = s.velocity[1];
    pw[1] = 99;
    s.velocity[1] = 99;
    char spec[128];
    CHECK_OK(gbtd_checkpoint_spec(path, spec, sizeof spec), "checkpoint: spec");
    CHECK(!strcmp(spec, n.spec), "checkpoint: spec recorded");
    CHECK_OK(gbtd_checkpoint_load(path, &n, &s, &back), "checkpoint: load");
    CHECK(pw[1] == keep && s.velocity[1] == kv && back.epoch == 3 && back.step == 42 &&
              back.seed == 7,
          "checkpoint: parameters, velocity and position restored exactly");
    gbtd_attr_list at;
    memset(&at, 0, sizeof at);
    gbtd_attr_list_set_int(&at, "version", 99);
    gbtd_h5 *f;
    if (gbtd_h5_open_append(path, &f) == GBTD_OK) {
        gbtd_h5_write_attrs(f, "/", &at);
        gbtd_h5_close(f);
    }
    gbtd_attr_list_free(&at);
    CHECK_STATUS(gbtd_checkpoint_load(path, &n, &s, &back), GBTD_EUNSUPPORTED,
                 "checkpoint: unknown version refused");
    CHECK(strstr(gbtd_last_error(), "hint") != NULL, "checkpoint: refusal carries a hint");
    gbtd_net other;
    gbtd_net_from_spec("resnet-8", &other);
    gbtd_checkpoint_save(path, &other, NULL, NULL);
    CHECK_STATUS(gbtd_checkpoint_load(path, &n, NULL, NULL), GBTD_ESHAPE,
                 "checkpoint: another network's file refused");
    gbtd_net_free(&other);
    remove(path);
    gbtd_sgd_free(&s);
    gbtd_net_free(&n);
}

static int quiet_epoch_(const gbtd_epoch_info *e, void *ctx)
{
    *(gbtd_epoch_info *)ctx = *e;
    return 0;
}

/* ---- progress inside an epoch (gbtd_train_opts.on_step) -------------------------------------
 * A synthetic set of 40 images 1x8x8 (3 classes), batch 8: 5 steps per epoch, 2 epochs. The
 * callback must see every step once, in order, with the epoch's step count restarting, a running
 * loss equal to the epoch's mean at its last step, and stop the run when it returns non-zero. */
typedef struct step_log {
    int calls, bad, stop_after;
    gbtd_step_info last;
    gbtd_epoch_info epoch;
    double epoch1_step_loss;
} step_log;

static int log_step_(const gbtd_step_info *si, void *ctx)
{
    step_log *l = ctx;
    l->calls++;
    const int64_t expect_in_epoch = (l->calls - 1) % 5 + 1;
    l->bad += si->step != l->calls || si->epoch_step != expect_in_epoch || si->epoch_steps != 5 ||
              si->steps != 10 || si->epoch != (l->calls - 1) / 5 + 1 || si->epochs != 2 ||
              !isfinite(si->loss) || si->loss <= 0 || si->top1 < 0 || si->top1 > 1 ||
              !(si->images_per_s > 0) || si->eta_s < 0;
    if (si->step == 5) l->epoch1_step_loss = si->loss;
    l->last = *si;
    return l->stop_after && l->calls == l->stop_after;
}

static int log_epoch_(const gbtd_epoch_info *e, void *ctx)
{
    step_log *l = ctx;
    if (e->epoch == 1) l->epoch = *e;
    return 0;
}

static void step_progress_(void)
{
    gbtd_dataset d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "synthetic");
    d.n = 40;
    d.c = 1;
    d.h = d.w = 8;
    d.classes = 3;
    d.images = gbtd_malloc(40 * 64);
    d.labels = gbtd_malloc(40 * sizeof(int32_t));
    for (int i = 0; i < 40 * 64; i++) d.images[i] = (uint8_t)((i * 37) % 251);
    for (int i = 0; i < 40; i++) d.labels[i] = i % 3;
    for (int stop = 0; stop <= 1; stop++) {
        gbtd_net n;
        gbtd_sgd s;
        CHECK_OK(gbtd_net_from_spec("resnet-8:input=1x8x8,classes=3", &n),
                 "progress: resnet-8 8x8");
        CHECK_OK(gbtd_net_init_params(&n, 1), "progress: init");
        gbtd_train_opts o = gbtd_train_opts_default();
        o.epochs = 2;
        o.batch = 8;
        o.lr = 0.01;
        o.prefetch = false;
        step_log log;
        memset(&log, 0, sizeof log);
        log.stop_after = stop ? 7 : 0;
        o.on_step = log_step_;
        o.on_epoch = log_epoch_;
        o.ctx = &log;
        gbtd_train_state st = {0, 0, 0};
        CHECK_OK(gbtd_sgd_init(&s, &n, &o.sgd), "progress: sgd");
        const int rc = gbtd_train_run(&n, &s, &st, &d, NULL, &o);
        if (!stop) {
            CHECK_OK(rc, "progress: 2 epochs of 5 steps run");
            CHECK(log.calls == 10 && log.bad == 0,
                  "progress: on_step once per step, in order, with the epoch's step count, "
                  "totals and a finite running loss");
            CHECK(fabs(log.epoch1_step_loss - log.epoch.loss) <= 1e-12 * (1 + log.epoch.loss),
                  "progress: the running loss at an epoch's last step is the epoch's mean loss");
            CHECK(log.last.eta_s == 0 && st.step == 10, "progress: ETA 0 at the last step");
        } else {
            CHECK_STATUS(rc, GBTD_ECANCELLED, "progress: a non-zero return stops the run");
            CHECK(log.calls == 7 && st.step == 7, "progress: stopped right after that step");
        }
        gbtd_sgd_free(&s);
        gbtd_net_free(&n);
    }
    gbtd_dataset_free(&d);
}

static void short_training_(void)
{
    gbtd_dataset tr, te;
    if (gbtd_dataset_load_fashion_mnist(NULL, true, &tr) != GBTD_OK) {
        printf("skip training: Fashion-MNIST not installed (%s)\n", gbtd_last_error());
        return;
    }
    CHECK_OK(gbtd_dataset_load_fashion_mnist(NULL, false, &te), "fashion-mnist test set");
    gbtd_dataset_truncate(&te, 1000);
    gbtd_net n;
    CHECK_OK(gbtd_net_from_spec("resnet-8:input=1x28x28", &n), "resnet-8 for Fashion-MNIST");
    gbtd_sgd s;
    gbtd_train_opts o = gbtd_train_opts_default();
    o.epochs = 1;
    o.batch = 32;
    o.lr = 0.05;
    o.max_steps = 300;
    o.prefetch = true;
    gbtd_epoch_info last;
    memset(&last, 0, sizeof last);
    o.on_epoch = quiet_epoch_;
    o.ctx = &last;
    gbtd_train_state st = {0, 0, 0};
    CHECK_OK(gbtd_sgd_init(&s, &n, &o.sgd), "sgd for the training run");
    CHECK_OK(gbtd_train_run(&n, &s, &st, &tr, &te, &o), "300 steps of SGD");
    /* chance level is ln 10 = 2.30 and 10 %; 300 steps of batch 32 reach ~0.9 / ~75 % */
    CHECK_LE(last.loss, 1.2, "training loss over the 300 steps below 1.2 (chance 2.30)");
    CHECK(last.test_top1 > 0.65, "test top-1 after 300 steps above 65 % (chance 10 %)");
    printf("short run: loss %.3f, train %.1f %%, test %.1f %% on 1000 images\n", last.loss,
           100 * last.top1, 100 * last.test_top1);
    gbtd_sgd_free(&s);
    gbtd_net_free(&n);
    gbtd_dataset_free(&tr);
    gbtd_dataset_free(&te);
}

/* ---- extra gradients on intermediate values (gbtd_net_add_value_grad) ----------------------
 * A small smooth net (no ReLU, so central differences see no kinks):
 *   x (2x6x6) -> c1 conv 3x3 -> v1 -> bn1 (batch statistics) -> v2 -> c2 conv 3x3 -> v3
 *   v4 = v3 + v2 -> gap -> fc -> logits
 * v2 is read by two layers (c2 and the add), so its extra gradient must enter after both. */
typedef struct vg_net {
    gbtd_net n;
    int v2, v3;
} vg_net;

static int vg_build_(vg_net *g, bool dead)
{
    int v;
    memset(g, 0, sizeof *g);
    int rc = gbtd_net_init(&g->n, 2, 6, 6);
    if (!rc) rc = gbtd_net_add_conv(&g->n, "c1", 0, 4, 3, 1, 1, 1, -1, &v);
    if (!rc) rc = gbtd_net_add_bn(&g->n, "bn1", v, false, 1e-5f, 0.1f, &g->v2);
    if (!rc && dead) rc = gbtd_net_add_relu(&g->n, g->v2, &v); /* read by nothing */
    if (!rc) rc = gbtd_net_add_conv(&g->n, "c2", g->v2, 4, 3, 1, 1, 1, -1, &g->v3);
    if (!rc) rc = gbtd_net_add_add(&g->n, g->v3, g->v2, false, &v);
    if (!rc) rc = gbtd_net_add_gap(&g->n, v, &v);
    if (!rc) rc = gbtd_net_add_linear(&g->n, "fc", v, 3, &v);
    if (!rc) {
        g->n.classes = 3;
        rc = gbtd_net_finalize(&g->n);
    }
    if (!rc) rc = gbtd_net_init_params(&g->n, 5);
    return rc;
}

/* The combined loss in double from a training forward: mean cross-entropy
 * + sum_e q_e v2_e + (s / 2) sum_e (v3_e - t_e)^2. */
static double vg_loss_(vg_net *g, const float *x, int nb, const int32_t *y, const float *q,
                       const float *t, double s)
{
    const float *lg;
    if (gbtd_net_forward(&g->n, x, nb, true, &lg)) return NAN;
    double l = 0;
    for (int i = 0; i < nb; i++) {
        double mx = lg[i * 3], se = 0;
        for (int j = 1; j < 3; j++) mx = fmax(mx, lg[i * 3 + j]);
        for (int j = 0; j < 3; j++) se += exp(lg[i * 3 + j] - mx);
        l += mx + log(se) - lg[i * 3 + y[i]];
    }
    l /= nb;
    const float *a = gbtd_net_value(&g->n, g->v2), *b = gbtd_net_value(&g->n, g->v3);
    for (int e = 0; e < nb * 4 * 36; e++) l += (double)q[e] * a[e];
    for (int e = 0; e < nb * 4 * 36; e++)
        l += 0.5 * s * ((double)b[e] - t[e]) * ((double)b[e] - t[e]);
    return l;
}

static void value_grad_(void)
{
    check_alloc_install();
    const long live0 = check_alloc_live();
    enum { NB = 4, LEN = NB * 4 * 36 };
    const double s = 0.1;
    vg_net g;
    CHECK_OK(vg_build_(&g, false), "value grad: small net builds");
    gbtd_rng *rng = NULL;
    gbtd_rng_alloc(11, &rng);
    float x[NB * 72], q[LEN], t[LEN], diff[LEN];
    int32_t y[NB] = {0, 2, 1, 2};
    for (int i = 0; i < NB * 72; i++) x[i] = (float)gbtd_rng_normal(rng);
    for (int i = 0; i < LEN; i++) q[i] = (float)(0.5 * gbtd_rng_normal(rng));
    for (int i = 0; i < LEN; i++) t[i] = (float)gbtd_rng_normal(rng);
    const int64_t P = g.n.nparams;
    float *grad = malloc((size_t)P * sizeof *grad), *grad0 = malloc((size_t)P * sizeof *grad0),
          *p0 = malloc((size_t)P * sizeof *p0);
    double *dir = malloc((size_t)P * sizeof *dir);
    memcpy(p0, g.n.params, (size_t)P * sizeof *p0);

    CHECK_STATUS(gbtd_net_add_value_grad(&g.n, g.v2, q, 1.0f), GBTD_EINVAL,
                 "value grad: refused before any forward");
    CHECK_OK(gbtd_net_forward(&g.n, x, NB, false, NULL), "value grad: eval forward");
    CHECK_STATUS(gbtd_net_add_value_grad(&g.n, g.v2, q, 1.0f), GBTD_EINVAL,
                 "value grad: refused after an evaluation forward");

    /* analytic: d CE / d logits from gbtd_net_loss, the two extra terms injected */
    CHECK_OK(gbtd_net_forward(&g.n, x, NB, true, NULL), "value grad: training forward");
    CHECK_OK(gbtd_net_loss(&g.n, y, 0.0f, NULL, NULL), "value grad: loss");
    const float *b3 = gbtd_net_value(&g.n, g.v3);
    for (int e = 0; e < LEN; e++) diff[e] = b3[e] - t[e];
    CHECK_OK(gbtd_net_add_value_grad(&g.n, g.v2, q, 1.0f), "value grad: add at v2 (two readers)");
    CHECK_OK(gbtd_net_add_value_grad(&g.n, g.v3, diff, (float)s), "value grad: add at v3");
    CHECK_STATUS(gbtd_net_add_value_grad(&g.n, 0, q, 1.0f), GBTD_EINVAL,
                 "value grad: the input value refused");
    CHECK_STATUS(gbtd_net_add_value_grad(&g.n, g.n.nvalues, q, 1.0f), GBTD_EINVAL,
                 "value grad: value out of range refused");
    CHECK_STATUS(gbtd_net_add_value_grad(&g.n, g.v2, NULL, 1.0f), GBTD_EINVAL,
                 "value grad: NULL gradient refused");
    CHECK_STATUS(gbtd_net_add_value_grad(&g.n, g.v2, q, NAN), GBTD_EINVAL,
                 "value grad: NaN scale refused");
    gbtd_net_zero_grad(&g.n);
    CHECK_OK(gbtd_net_backward(&g.n), "value grad: backward");
    memcpy(grad, g.n.grads, (size_t)P * sizeof *grad);
    /* the same step without extra terms: the record was dropped by the backward */
    CHECK_OK(gbtd_net_forward(&g.n, x, NB, true, NULL), "value grad: forward again");
    CHECK_OK(gbtd_net_loss(&g.n, y, 0.0f, NULL, NULL), "value grad: loss again");
    gbtd_net_zero_grad(&g.n);
    CHECK_OK(gbtd_net_backward(&g.n), "value grad: backward without extra terms");
    memcpy(grad0, g.n.grads, (size_t)P * sizeof *grad0);

    /* Central differences of the combined loss along a random unit direction and along three
     * weights of c1 (upstream of both terms). The loss is summed in double from float
     * activations: its rounding noise is ~1e-6 (a float forward, ~600 terms of size ~1), so
     * ~5e-5 after dividing by 2h; the truncation error h^2 |L'''| / 6 is ~2e-5 for third
     * derivatives of size ~1; tolerance 1e-3 (1 + |ref|). */
    const double h = 1e-2;
    double nd = 0, gd = 0, gd0 = 0;
    for (int64_t i = 0; i < P; i++) {
        dir[i] = gbtd_rng_normal(rng);
        nd += dir[i] * dir[i];
    }
    nd = sqrt(nd);
    for (int64_t i = 0; i < P; i++) {
        dir[i] /= nd;
        gd += grad[i] * dir[i];
        gd0 += grad0[i] * dir[i];
    }
    double lp, lm;
    for (int64_t i = 0; i < P; i++) g.n.params[i] = (float)(p0[i] + h * dir[i]);
    lp = vg_loss_(&g, x, NB, y, q, t, s);
    for (int64_t i = 0; i < P; i++) g.n.params[i] = (float)(p0[i] - h * dir[i]);
    lm = vg_loss_(&g, x, NB, y, q, t, s);
    memcpy(g.n.params, p0, (size_t)P * sizeof *p0);
    const double fd = (lp - lm) / (2 * h);
    printf("value grad: directional %.6g, central difference %.6g, without the terms %.6g\n", gd,
           fd, gd0);
    CHECK_CLOSE(gd, fd, 1e-3, 1e-3, "value grad: directional derivative = central difference");
    CHECK(fabs(gd - gd0) > 0.1 * (1 + fabs(fd)),
          "value grad: the extra terms change it by more than 100x that tolerance");
    const gbtd_net_entry *w1 = gbtd_net_find(&g.n, "c1.weight");
    CHECK(w1 != NULL, "value grad: c1.weight");
    for (int k = 0; w1 && k < 3; k++) {
        const int64_t i = w1->offset + 17 * k + 3;
        g.n.params[i] = p0[i] + (float)h;
        lp = vg_loss_(&g, x, NB, y, q, t, s);
        g.n.params[i] = p0[i] - (float)h;
        lm = vg_loss_(&g, x, NB, y, q, t, s);
        g.n.params[i] = p0[i];
        const double ref = (lp - lm) / ((double)(p0[i] + (float)h) - (double)(p0[i] - (float)h));
        char name[96];
        snprintf(name, sizeof name, "value grad: d L / d c1.weight[%lld] = central difference",
                 (long long)(i - w1->offset));
        printf("value grad: c1.weight[%lld]: %.6g, central difference %.6g, without the terms "
               "%.6g\n", (long long)(i - w1->offset), grad[i], ref, grad0[i]);
        CHECK_CLOSE(grad[i], ref, 1e-3, 1e-3, name);
    }

    /* a value no layer reads has no gradient slot */
    vg_net dg;
    CHECK_OK(vg_build_(&dg, true), "value grad: net with an unread value builds");
    CHECK_OK(gbtd_net_forward(&dg.n, x, NB, true, NULL), "value grad: its training forward");
    CHECK_STATUS(gbtd_net_add_value_grad(&dg.n, dg.v2 + 1, q, 1.0f), GBTD_EINVAL,
                 "value grad: a value read by no layer refused");
    check_alloc_fail_after(0);
    const int rc = gbtd_net_add_value_grad(&dg.n, dg.v2, q, 1.0f);
    check_alloc_fail_after(-1);
    CHECK_STATUS(rc, GBTD_ENOMEM, "value grad: allocation failure reported");
    gbtd_net_free(&dg.n);
    gbtd_net_free(&g.n);
    gbtd_rng_free(rng);
    free(grad);
    free(grad0);
    free(p0);
    free(dir);
    CHECK(check_alloc_live() == live0, "value grad: no gbtd allocation left");
    gbtd_set_allocator(NULL);
}

/* A layer whose output nothing reads (a dangling branch) passes no gradient, and the input
 * gradient it would have started in the backward order starts at zero for the other readers: the
 * gradients equal those of the same net without the branch (same weights copied by name). */
static int dangling_build_(gbtd_net *n, bool branch)
{
    int v1, vg, va, lg;
    GBTD_CHECK(gbtd_net_init(n, 2, 6, 6));
    GBTD_CHECK(gbtd_net_add_conv(n, "b", 0, 4, 3, 1, 1, 1, -1, &v1));
    GBTD_CHECK(gbtd_net_add_gap(n, v1, &vg));
    if (branch) GBTD_CHECK(gbtd_net_add_conv(n, "a", v1, 3, 3, 1, 1, 1, -1, &va));
    GBTD_CHECK(gbtd_net_add_linear(n, "fc", vg, 3, &lg));
    return gbtd_net_finalize(n);
}

static void dangling_(void)
{
    gbtd_net with, without;
    CHECK_OK(dangling_build_(&with, true), "dangling branch: net with it builds");
    CHECK_OK(dangling_build_(&without, false), "dangling branch: net without it builds");
    static const char *names[] = {"b.weight", "fc.weight", "fc.bias"};
    for (int k = 0; k < 3; k++) {
        const gbtd_net_entry *e1 = gbtd_net_find(&with, names[k]), *e0 = gbtd_net_find(&without, names[k]);
        if (e1 && e0)
            memcpy(gbtd_net_entry_data(&with, e1), gbtd_net_entry_data(&without, e0),
                   (size_t)e0->numel * sizeof(float));
    }
    float x[3 * 72];
    int32_t y[3] = {0, 1, 2};
    for (int i = 0; i < 3 * 72; i++) x[i] = (float)sin(0.37 * i);
    gbtd_net *nets[2] = {&with, &without};
    /* two passes: the second finds the first's gradient left in the slot */
    for (int k = 0; k < 2; k++)
        for (int pass = 0; pass < 2; pass++) {
            CHECK_OK(gbtd_net_forward(nets[k], x, 3, true, NULL), "dangling branch: training forward");
            CHECK_OK(gbtd_net_loss(nets[k], y, 0.0f, NULL, NULL), "dangling branch: loss");
            gbtd_net_zero_grad(nets[k]);
            CHECK_OK(gbtd_net_backward(nets[k]), "dangling branch: backward");
        }
    double worst = 0.0;
    for (int k = 0; k < 3; k++) {
        const gbtd_net_entry *e1 = gbtd_net_find(&with, names[k]), *e0 = gbtd_net_find(&without, names[k]);
        if (!e1 || !e0) {
            worst = INFINITY;
            continue;
        }
        for (int64_t i = 0; i < e0->numel; i++) {
            const double d = fabs((double)with.grads[e1->offset + i] - without.grads[e0->offset + i]);
            if (!(d <= worst)) worst = d;
        }
    }
    /* the same float operations in the same order on both nets: equal */
    CHECK(worst == 0.0, "dangling branch: gradients equal the net without the branch");
    gbtd_net_free(&with);
    gbtd_net_free(&without);
}

/* A forward up to a layer computes exactly what the full forward computes there. */
static void forward_until_(void)
{
    gbtd_net n;
    CHECK_OK(gbtd_net_from_spec("resnet-20:input=3x8x8,classes=4", &n), "until: resnet-20");
    float x[2 * 3 * 64];
    for (int i = 0; i < 2 * 3 * 64; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    const int mid = n.nlayers / 2, v = n.layers[mid].out;
    const int64_t len = 2LL * n.values[v].c * n.values[v].h * n.values[v].w;
    float *full = malloc((size_t)len * sizeof *full);
    CHECK_OK(gbtd_net_forward(&n, x, 2, false, NULL), "until: full forward");
    memcpy(full, gbtd_net_value(&n, v), (size_t)len * sizeof *full);
    /* overwrite the value, then the partial forward must write it again */
    memset((float *)gbtd_net_value(&n, v), 0, (size_t)len * sizeof *full);
    CHECK_OK(gbtd_net_forward_until(&n, x, 2, mid), "until: forward to the middle layer");
    CHECK(!memcmp(full, gbtd_net_value(&n, v), (size_t)len * sizeof *full),
          "until: the middle value equals the full forward's");
    CHECK_STATUS(gbtd_net_forward_until(&n, x, 2, n.nlayers), GBTD_EINVAL, "until: layer past the end");
    CHECK_STATUS(gbtd_net_forward_until(&n, x, 2, -1), GBTD_EINVAL, "until: negative layer");
    CHECK_STATUS(gbtd_net_backward(&n), GBTD_EINVAL, "until: no backward after it");
    free(full);
    gbtd_net_free(&n);
}

/* Two networks of one spec with the same initial parameters (seed), for comparisons of two
 * ways of running them. */
static void twin_nets_(const char *spec, uint64_t seed, const char *tag, gbtd_net *a, gbtd_net *b)
{
    char name[160];
    snprintf(name, sizeof name, "%s: net %s", tag, spec);
    CHECK_OK(gbtd_net_from_spec(spec, a), name);
    CHECK_OK(gbtd_net_from_spec(spec, b), name);
    gbtd_net_init_params(a, seed);
    gbtd_net_init_params(b, seed);
}

/* Batch norms run inside their residual add (the default) against the separate layers
 * (GBTD_NN_NO_FUSE=1): the same logits, gradients and running statistics, bit for bit, in
 * training and evaluation, and the deferred outputs computed on request equal the written ones. */
static void bn_add_fusion_(void)
{
    static const char *spec = "custom:block=bottleneck,units=2/2,width=16/32,inner=8/16,"
                              "input=3x8x8,classes=4";
    gbtd_net a, b;
    twin_nets_(spec, 11, "fusion", &a, &b);
    enum { N = 6 };
    float x[N * 3 * 64];
    int32_t y[N];
    for (int i = 0; i < N * 3 * 64; i++) x[i] = (float)((i * 53) % 97) / 40.0f - 1.2f;
    for (int i = 0; i < N; i++) y[i] = i % 4;
    gbtd_set_threads(2);
    gbtd_net *nets[2] = {&a, &b};
    for (int k = 0; k < 2; k++) {
        if (k) setenv("GBTD_NN_NO_FUSE", "1", 1); /* read when b's buffers are allocated */
        CHECK_OK(gbtd_net_forward(nets[k], x, N, true, NULL), "fusion: training forward");
        CHECK_OK(gbtd_net_loss(nets[k], y, 0.0f, NULL, NULL), "fusion: loss");
        gbtd_net_zero_grad(nets[k]);
        CHECK_OK(gbtd_net_backward(nets[k]), "fusion: backward");
    }
    unsetenv("GBTD_NN_NO_FUSE");
    int bn_add = 0; /* batch norms without ReLU read by an add only: bn3 and the projections */
    for (int i = 0; i < a.nlayers; i++)
        if (a.layers[i].kind == GBTD_LAYER_BN && !a.layers[i].relu) bn_add++;
    printf("fusion: %d of %d batch norms ran inside their add (%d without fusion)\n",
           gbtd_net_fused_bn(&a), bn_add, gbtd_net_fused_bn(&b));
    CHECK(gbtd_net_fused_bn(&a) == bn_add && bn_add >= 5 && gbtd_net_fused_bn(&b) == 0,
          "fusion: every bn3 and projection BN ran in its add; none with GBTD_NN_NO_FUSE");
    CHECK(!memcmp(a.grads, b.grads, (size_t)a.nparams * sizeof(float)),
          "fusion: gradients equal bit for bit");
    CHECK(!memcmp(a.state, b.state, (size_t)a.nstate * sizeof(float)),
          "fusion: running statistics equal bit for bit");
    int same = 0, deferred = 0;
    for (int i = 0; i < a.nlayers; i++) {
        if (a.layers[i].kind != GBTD_LAYER_BN || a.layers[i].relu) continue;
        const gbtd_value *v = &a.values[a.layers[i].out];
        const size_t len = (size_t)N * v->c * v->h * v->w * sizeof(float);
        deferred++;
        same += !memcmp(gbtd_net_value(&a, a.layers[i].out), gbtd_net_value(&b, b.layers[i].out), len);
    }
    CHECK(same == deferred, "fusion: deferred batch-norm outputs, computed on request, equal");
    /* a gradient injected on a deferred output (gbtd_net_add_value_grad): the same gradients as
     * without fusion */
    int first = -1;
    for (int i = 0; i < a.nlayers && first < 0; i++)
        if (a.layers[i].kind == GBTD_LAYER_BN && !a.layers[i].relu) first = a.layers[i].out;
    const gbtd_value *fv = &a.values[first];
    const int64_t flen = (int64_t)N * fv->c * fv->h * fv->w;
    float *inj = malloc((size_t)flen * sizeof *inj);
    for (int64_t e = 0; e < flen; e++) inj[e] = (float)((e * 29) % 31) / 31.0f - 0.5f;
    for (int k = 0; k < 2; k++) {
        CHECK_OK(gbtd_net_forward(nets[k], x, N, true, NULL), "fusion: training forward");
        CHECK_OK(gbtd_net_loss(nets[k], y, 0.0f, NULL, NULL), "fusion: loss");
        gbtd_net_zero_grad(nets[k]);
        CHECK_OK(gbtd_net_add_value_grad(nets[k], first, inj, 0.5f), "fusion: injected gradient");
        CHECK_OK(gbtd_net_backward(nets[k]), "fusion: backward");
    }
    CHECK(!memcmp(a.grads, b.grads, (size_t)a.nparams * sizeof(float)),
          "fusion: with a gradient injected on a deferred output, gradients equal bit for bit");
    free(inj);
    const float *la, *lb;
    CHECK_OK(gbtd_net_forward(&a, x, N, false, &la), "fusion: evaluation forward");
    CHECK_OK(gbtd_net_forward(&b, x, N, false, &lb), "fusion: evaluation forward");
    CHECK(gbtd_net_fused_bn(&a) == bn_add, "fusion: also in evaluation");
    CHECK(!memcmp(la, lb, (size_t)N * 4 * sizeof(float)), "fusion: evaluation logits equal");
    gbtd_set_threads(1);
    gbtd_net_free(&a);
    gbtd_net_free(&b);
}

/* A network whose 3x3 convolutions take Winograd (64 channels on 12x12) against the same network
 * with GBTD_NN_NO_WINOGRAD=1: two float32 computations of the same step with different roundings.
 * Each convolution differs from the float64 value by ~5e-7 relative either way (measured, see
 * ops.h); through two units, forward and backward, with batch normalisation dividing by standard
 * deviations of order 1, the step's results stay within 1e-5 relative (measured 1e-7 for the
 * logits, 5e-7 for the gradients; a coefficient of a transform off by 0.1 % shows as 1e-3).
 * They must also differ, or Winograd did not run. */
static double rel_diff_(const float *a, const float *b, size_t n)
{
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - (double)b[i]) * ((double)a[i] - (double)b[i]);
        r += (double)b[i] * (double)b[i];
    }
    return r > 0.0 ? sqrt(d / r) : sqrt(d);
}

static void winograd_net_(void)
{
    static const char *spec = "custom:block=bottleneck,units=2,width=128,inner=64,"
                              "input=3x12x12,classes=4";
    gbtd_net a, b;
    twin_nets_(spec, 5, "winograd net (64 channels on 12x12)", &a, &b);
    enum { N = 8, IN = 3 * 144 };
    float x[N * IN];
    int32_t y[N];
    for (int i = 0; i < N * IN; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    for (int i = 0; i < N; i++) y[i] = i % 4;
    gbtd_set_threads(2);
    gbtd_net *nets[2] = {&a, &b};
    double loss[2] = {0, 0};
    const float *logits[2] = {NULL, NULL};
    float la[N * 4];
    for (int k = 0; k < 2; k++) {
        if (k) setenv("GBTD_NN_NO_WINOGRAD", "1", 1); /* read by every convolution call */
        CHECK_OK(gbtd_net_forward(nets[k], x, N, true, &logits[k]), "winograd net: forward");
        if (k == 0) memcpy(la, logits[0], sizeof la);
        CHECK_OK(gbtd_net_loss(nets[k], y, 0.0f, &loss[k], NULL), "winograd net: loss");
        gbtd_net_zero_grad(nets[k]);
        CHECK_OK(gbtd_net_backward(nets[k]), "winograd net: backward");
    }
    unsetenv("GBTD_NN_NO_WINOGRAD");
    const double dl = rel_diff_(la, logits[1], N * 4);
    const double dg = rel_diff_(a.grads, b.grads, (size_t)a.nparams);
    printf("winograd net: logits differ by %.2e, gradients by %.2e (relative 2-norm)\n", dl, dg);
    CHECK_LE(dl, 1e-5, "winograd net: logits = direct path's (relative 2-norm, 1e-5)");
    CHECK_LE(fabs(loss[0] - loss[1]), 1e-5 * fabs(loss[1]),
             "winograd net: loss = direct path's (1e-5 relative)");
    CHECK_LE(dg, 1e-5, "winograd net: gradients = direct path's (relative 2-norm, 1e-5)");
    CHECK(dg > 0.0, "winograd net: the gradients differ at all (Winograd ran)");
    gbtd_set_threads(1);
    gbtd_net_free(&a);
    gbtd_net_free(&b);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    gbtd_set_threads(1);
    counts_();
    data_errors_();
    loader_();
    optim_();
    value_grad_();
    dangling_();
    forward_until_();
    bn_add_fusion_();
    winograd_net_();
    step_progress_();
    if (!getenv("GBTD_SKIP_TRAINING")) short_training_();
    return check_finish();
}
