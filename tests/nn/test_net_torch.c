/* Whole networks against PyTorch: a CIFAR ResNet (option-A shortcuts), a bottleneck ResNet, a
 * ResNeXt (groups 8) and a CRU-Net (shared 1x1 + depthwise 3x3 across units, the 'down' unit's
 * projection used at two strides) built by gbtd from spec strings and by tests/nn/torch_net.py
 * as ordinary torch.nn modules (shared weights = the same module reused), on the same weights
 * and inputs. Checked: logits of a training-mode forward, the input gradient and every
 * parameter gradient for a given d loss / d logits, the running statistics after the step, and
 * eval-mode logits. The reference runs in float64. ReLU kinks: gbtd's masks of its training
 * forward go to the reference, whose backward takes them for pre-activations within 1e-4 of 0
 * (a float32 rounding can put such a value on the other side; one such element moves a bias
 * gradient by ~1e-2) and must match them everywhere else (torch_net.py, "ReLU kinks").
 *
 * usage: test_net_torch PYTHON SCRIPT [SHARED_DATA_DIR]   (exit 77 when PyTorch is missing) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../check.h"
#include "nn/arch.h"
#include "nn/net.h"
#include "nn/train.h"

/* ||got - ref|| / ||ref|| over n values */
static double rel_err_(const float *got, const double *ref, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The exchange with torch_net.py: BASE.txt lists "name ndim d0 d1 ..." per tensor, BASE.bin
 * holds the values back to back (float32 to Python, float64 back). */
typedef struct ref_set {
    int count;
    char names[4096][96];
    int64_t off[4096], numel[4096];
    double *data;
} ref_set;

static void put_(FILE *txt, FILE *bin, const char *name, int ndim, const int64_t *shape,
                 const float *v)
{
    int64_t n = 1;
    fprintf(txt, "%s %d", name, ndim);
    for (int i = 0; i < ndim; i++) {
        fprintf(txt, " %lld", (long long)shape[i]);
        n *= shape[i];
    }
    fprintf(txt, "\n");
    fwrite(v, sizeof(float), (size_t)n, bin);
}

static int ref_read_(const char *base, ref_set *s)
{
    char p[600], line[512];
    memset(s, 0, sizeof *s);
    snprintf(p, sizeof p, "%s.txt", base);
    FILE *t = fopen(p, "r");
    if (!t) return -1;
    int64_t total = 0;
    while (fgets(line, sizeof line, t) && s->count < 4096) {
        int nd, used;
        char *q = line;
        if (sscanf(q, "%95s %d%n", s->names[s->count], &nd, &used) != 2) break;
        q += used;
        int64_t n = 1;
        for (int i = 0; i < nd; i++) {
            long long d;
            if (sscanf(q, "%lld%n", &d, &used) != 1) break;
            q += used;
            n *= d;
        }
        s->off[s->count] = total;
        s->numel[s->count++] = n;
        total += n;
    }
    fclose(t);
    snprintf(p, sizeof p, "%s.bin", base);
    FILE *b = fopen(p, "rb");
    s->data = malloc((size_t)total * sizeof(double) + 8);
    int ok = b && s->data && fread(s->data, sizeof(double), (size_t)total, b) == (size_t)total;
    if (b) fclose(b);
    return ok ? 0 : -1;
}

static const double *ref_get_(const ref_set *s, const char *name, int64_t n, double **buf)
{
    for (int i = 0; i < s->count; i++)
        if (!strcmp(s->names[i], name)) {
            if (s->numel[i] != n) return NULL;
            *buf = s->data + s->off[i];
            return *buf;
        }
    return NULL;
}

/* gbtd's ReLU masks of the last training forward (1 where the pre-activation was > 0: the
 * output is > 0), one tensor "mask.<key>" per ReLU, key = the batch norm's module name or
 * "layerS.U.add" for the ReLU after a unit's residual add. Returns the number written, -1 when
 * a ReLU's output was not kept. */
static int put_masks_(const gbtd_net *net, int batch, FILE *ft, FILE *fb)
{
    int count = 0;
    for (int i = 0; i < net->nlayers; i++) {
        const gbtd_layer *l = &net->layers[i];
        if (!l->relu || (l->kind != GBTD_LAYER_BN && l->kind != GBTD_LAYER_ADD)) continue;
        char key[GBTD_NET_NAME_LEN + 8];
        if (l->kind == GBTD_LAYER_BN) {
            snprintf(key, sizeof key, "mask.%s", l->name);
        } else {
            /* the unit: the first two components of the name of a layer feeding the add */
            const int pa = net->values[l->in].producer, pb = net->values[l->in2].producer;
            const char *nm = pa >= 0 && net->layers[pa].name[0] ? net->layers[pa].name
                             : pb >= 0 ? net->layers[pb].name : "";
            const char *dot = strchr(nm, '.');
            dot = dot ? strchr(dot + 1, '.') : NULL;
            if (!dot) return -1;
            snprintf(key, sizeof key, "mask.%.*s.add", (int)(dot - nm), nm);
        }
        const gbtd_value *v = &net->values[l->out];
        const int64_t n = (int64_t)batch * v->c * v->h * v->w;
        const float *y = gbtd_net_value(net, l->out);
        if (!y) return -1;
        float *m = malloc((size_t)n * sizeof(float));
        for (int64_t j = 0; j < n; j++) m[j] = y[j] > 0.0f ? 1.0f : 0.0f;
        put_(ft, fb, key, 1, &n, m);
        free(m);
        count++;
    }
    return count;
}

static int run_case_(const char *python, const char *script, const char *spec, int batch)
{
    char dir[] = "/tmp/gbtd_net_torch_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    gbtd_net net;
    char label[256];
    snprintf(label, sizeof label, "%s: build", spec);
    CHECK_OK(gbtd_net_from_spec(spec, &net), label);
    gbtd_net_init_params(&net, 7);
    /* non-trivial BN affine parameters and running statistics, so that they are tested */
    gbtd_rng *rng;
    gbtd_rng_alloc(11, &rng);
    for (int i = 0; i < net.nentries; i++) {
        const gbtd_net_entry *e = &net.entries[i];
        float *p = gbtd_net_entry_data(&net, e);
        for (int64_t j = 0; j < e->numel; j++) {
            if (e->kind == GBTD_ENTRY_BN_WEIGHT) p[j] = (float)(0.5 + gbtd_rng_uniform(rng));
            if (e->kind == GBTD_ENTRY_BN_BIAS) p[j] = (float)(0.2 * gbtd_rng_normal(rng));
            if (e->kind == GBTD_ENTRY_BN_MEAN) p[j] = (float)(0.1 * gbtd_rng_normal(rng));
            if (e->kind == GBTD_ENTRY_BN_VAR) p[j] = (float)(0.5 + gbtd_rng_uniform(rng));
        }
    }
    const int64_t nin = (int64_t)batch * net.in_c * net.in_h * net.in_w;
    const int64_t nout = (int64_t)batch * net.classes;
    float *x = malloc((size_t)nin * sizeof(float)), *dl = malloc((size_t)nout * sizeof(float));
    for (int64_t i = 0; i < nin; i++) x[i] = (float)gbtd_rng_normal(rng);
    for (int64_t i = 0; i < nout; i++) dl[i] = (float)gbtd_rng_normal(rng);
    gbtd_rng_free(rng);
    char path[512], cmd[2048];
    int64_t xs[4] = {batch, net.in_c, net.in_h, net.in_w}, ls[2] = {batch, net.classes};
    snprintf(path, sizeof path, "%s/in.txt", dir);
    FILE *ft = fopen(path, "w");
    snprintf(path, sizeof path, "%s/in.bin", dir);
    FILE *fb = fopen(path, "wb");
    if (!ft || !fb) return 1;
    for (int i = 0; i < net.nentries; i++) {
        const gbtd_net_entry *e = &net.entries[i];
        put_(ft, fb, e->name, e->ndim, e->shape, gbtd_net_entry_data(&net, e));
    }
    put_(ft, fb, "x", 4, xs, x);
    put_(ft, fb, "dlogits", 2, ls, dl);

    /* gbtd's training forward first (its ReLU masks go to the reference, torch_net.py) */
    gbtd_net_want_input_grad(&net, true);
    const float *lg = NULL;
    CHECK_OK(gbtd_net_forward(&net, x, batch, true, &lg), "forward (training)");
    float *lg_copy = malloc((size_t)nout * sizeof(float));
    memcpy(lg_copy, lg, (size_t)nout * sizeof(float));
    int masks = put_masks_(&net, batch, ft, fb);
    snprintf(label, sizeof label, "%s: every ReLU's mask read (%d)", spec, masks);
    CHECK(masks > 0, label);
    fclose(ft);
    fclose(fb);
    /* torch's import prints NumPy-ABI warnings on stderr: kept in a file, shown on failure */
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s' '%s' 2>'%s/stderr.txt' || { cat '%s/stderr.txt'; "
             "exit 1; }", python, script, spec, dir, dir, dir);
    int sys = system(cmd);
    snprintf(label, sizeof label, "%s: PyTorch reference ran (names and shapes match)", spec);
    CHECK(sys == 0, label);

    /* gbtd: backward of the same dlogits */
    gbtd_net_zero_grad(&net);
    CHECK_OK(gbtd_net_set_dlogits(&net, dl), "set dlogits");
    CHECK_OK(gbtd_net_backward(&net), "backward");
    const float *dx = gbtd_net_input_grad(&net);

    static ref_set ref;
    snprintf(path, sizeof path, "%s/ref", dir);
    if (sys == 0 && ref_read_(path, &ref) == 0) {
        double *r;
        /* Tolerances. gbtd computes in float32 (unit roundoff u = 6e-8); a dot product of
         * length K has a relative error of about sqrt(K) u for random data (K <= 1152 here),
         * and a layer adds that much to the relative error of its output. Batch norm rescales
         * each channel by 1/sigma, which keeps relative errors from growing with depth in the
         * forward pass, but its backward subtracts the projections on 1 and x-hat, which
         * cancels: on a batch of only a few images the gradient norms shrink by up to ~5x
         * relative to the terms that carry the rounding. Forward: ~10 layers' worth of
         * sqrt(1152) * 6e-8 = 2e-6 -> 2e-5; gradients: 5x that -> 1e-4 (observed: <= 1e-5). */
        const double tol_fwd = 2e-5, tol_grad = 1e-4;
        snprintf(label, sizeof label, "%s: ReLU masks equal the reference's outside the kink "
                 "band (%s)", spec, "torch_net.py");
        const int kinks_ok = ref_get_(&ref, "kinks", 2, &r) != NULL;
        CHECK(kinks_ok && r[1] == 0, label);
        if (kinks_ok)
            printf("%s: %.0f pre-activation(s) within 1e-4 of the kink on the other side in "
                   "float32, %.0f outside\n", spec, r[0], r[1]);
        snprintf(label, sizeof label, "%s: logits (train mode) rel. error", spec);
        CHECK_LE(ref_get_(&ref, "logits", nout, &r) ? rel_err_(lg_copy, r, nout) : 1e9, tol_fwd,
                 label);
        snprintf(label, sizeof label, "%s: input gradient rel. error", spec);
        CHECK_LE(dx && ref_get_(&ref, "dx", nin, &r) ? rel_err_(dx, r, nin) : 1e9, tol_grad, label);
        double worst = 0, worst_rs = 0;
        char worst_name[128] = "", worst_rs_name[128] = "";
        int missing = 0;
        for (int i = 0; i < net.nentries; i++) {
            const gbtd_net_entry *e = &net.entries[i];
            bool st = e->kind == GBTD_ENTRY_BN_MEAN || e->kind == GBTD_ENTRY_BN_VAR;
            char nm[160];
            snprintf(nm, sizeof nm, "%s%s", st ? "" : "grad.", e->name);
            if (!ref_get_(&ref, nm, e->numel, &r)) {
                missing++;
                continue;
            }
            const float *got = st ? gbtd_net_entry_data(&net, e) : net.grads + e->offset;
            double er = rel_err_(got, r, e->numel);
            if (st && er > worst_rs) {
                worst_rs = er;
                snprintf(worst_rs_name, sizeof worst_rs_name, "%s", e->name);
            } else if (!st && er > worst) {
                worst = er;
                snprintf(worst_name, sizeof worst_name, "%s", e->name);
            }
        }
        /* the shared weights of the CRU net, one line each */
        static const char *const shared[] = {"layer2.0.conv_a.weight", "layer2.0.conv_b.weight",
                                             "layer2.0.proj.conv.weight",
                                             "layer3.0.conv_a.weight", NULL};
        for (int k = 0; strstr(spec, "cru") && shared[k]; k++) {
            const gbtd_net_entry *e = gbtd_net_find(&net, shared[k]);
            char nm[160];
            snprintf(nm, sizeof nm, "grad.%s", shared[k]);
            double er = e && ref_get_(&ref, nm, e->numel, &r)
                            ? rel_err_(net.grads + e->offset, r, e->numel) : 1e9;
            snprintf(label, sizeof label, "%s: gradient of shared %s (sum over its uses) %.2g",
                     spec, shared[k], er);
            CHECK_LE(er, tol_grad, label);
        }
        snprintf(label, sizeof label, "%s: every parameter and statistic has a reference", spec);
        CHECK(missing == 0, label);
        snprintf(label, sizeof label, "%s: worst parameter gradient rel. error %.2g (%s)", spec,
                 worst, worst_name);
        CHECK_LE(worst, tol_grad, label);
        snprintf(label, sizeof label, "%s: worst running statistic rel. error %.2g (%s)", spec,
                 worst_rs, worst_rs_name);
        CHECK_LE(worst_rs, tol_fwd, label);
        CHECK_OK(gbtd_net_forward(&net, x, batch, false, &lg), "forward (eval)");
        snprintf(label, sizeof label, "%s: logits (eval mode, updated statistics) rel. error", spec);
        CHECK_LE(ref_get_(&ref, "eval_logits", nout, &r) ? rel_err_(lg, r, nout) : 1e9, tol_fwd,
                 label);
    } else {
        CHECK(0, "read the PyTorch reference");
    }
    free(ref.data);
    ref.data = NULL;
    free(x);
    free(dl);
    free(lg_copy);
    gbtd_net_free(&net);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return 0;
}

/* The pretrained CIFAR ResNet-20 on the first 1,000 test images: gbtd's predictions equal
 * PyTorch's (float64 reference); the published full-test accuracy is 91.73 %. */
static void pretrained_(const char *python, const char *script, const char *data)
{
    char w[1024], b[1024], out[] = "/tmp/gbtd_pred_XXXXXX", cmd[4096];
    snprintf(w, sizeof w, "%s/models/resnet20-cifar10.safetensors", data);
    snprintf(b, sizeof b, "%s/cifar-10-batches-bin/test_batch.bin", data);
    FILE *probe = fopen(w, "rb");
    if (!probe) {
        printf("skip pretrained ResNet-20: %s missing\n", w);
        return;
    }
    fclose(probe);
    int fd = mkstemp(out);
    if (fd < 0) return;
    close(fd);
    const int n = 1000;
    snprintf(cmd, sizeof cmd, "'%s' '%s' --pretrained '%s' '%s' %d '%s' 2>/dev/null", python,
             script, w, b, n, out);
    CHECK(system(cmd) == 0, "pretrained: PyTorch reference predictions");
    gbtd_net net;
    gbtd_dataset d;
    memset(&d, 0, sizeof d);
    CHECK_OK(gbtd_net_from_spec("resnet-20", &net), "pretrained: build resnet-20");
    CHECK_OK(gbtd_net_load_safetensors(&net, w), "pretrained: load the safetensors weights "
             "(every name and shape matches)");
    CHECK_OK(gbtd_dataset_load_cifar_file(b, &d), "pretrained: read test_batch.bin");
    CHECK_OK(gbtd_dataset_truncate(&d, n), "pretrained: first 1000 images");
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    gbtd_eval_result r;
    CHECK_OK(gbtd_evaluate(&net, &d, mean, std, 100, &r), "pretrained: evaluate");
    FILE *f = fopen(out, "r");
    int same = 0, read = 0, p;
    while (f && read < n && fscanf(f, "%d", &p) == 1) {
        same += r.pred && r.pred[read] == p;
        read++;
    }
    if (f) fclose(f);
    char label[128];
    snprintf(label, sizeof label, "pretrained: %d of %d predictions equal PyTorch's", same, n);
    CHECK(read == n && same == n, label);
    snprintf(label, sizeof label, "pretrained: top-1 on the first 1000 images %.1f %% (published "
             "91.73 %% on all 10000)", 100 * r.top1);
    CHECK(r.top1 > 0.88 && r.top1 < 0.96, label);
    gbtd_eval_result_free(&r);
    gbtd_dataset_free(&d);
    gbtd_net_free(&net);
    remove(out);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_net_torch PYTHON SCRIPT\n");
        return 2;
    }
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' -c 'import torch' 2>/dev/null", argv[1]);
    if (system(cmd) != 0) {
        printf("PyTorch not available: skipped\n");
        return 77;
    }
    gbtd_set_threads(2);
    run_case_(argv[1], argv[2], "resnet-20:input=3x16x16", 4);
    run_case_(argv[1], argv[2], "bottleneck-29:input=3x16x16", 4);
    run_case_(argv[1], argv[2], "resnext-29-8x4d:input=1x16x16", 4);
    run_case_(argv[1], argv[2], "cru-net-35@x14x7-8x4d:input=3x16x16", 4);
    if (argc > 3) pretrained_(argv[1], argv[2], argv[3]);
    return check_finish();
}
