/* gbtd eval WEIGHTS_OR_CHECKPOINT --data ...: top-1, top-5, loss, confusion matrix. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cru/build.h"
#include "gbtd.h"
#include "io/io.h"
#include "nn/arch.h"
#include "nn/train.h"
#include "nn_cli.h"

static void usage_(FILE *f)
{
    fprintf(f,
            "usage: gbtd eval FILE --data fashion-mnist|cifar10 [options]\n"
            "FILE is a gbtd checkpoint (.h5, the network is read from it) or any weights file\n"
            "whose network gbtd recognises (gbtd info FILE shows it: torchvision/timm or CIFAR\n"
            "ResNets, Keras ResNet50, gbtd exports); --arch SPEC forces a network on a\n"
            "safetensors file with PyTorch state_dict names.\n"
            "  --data-dir DIR    data folder        --arch SPEC   network of a safetensors file\n"
            "  --norm N          data (default: the data set's mean/std) or imagenet\n"
            "                    (mean 0.485 0.456 0.406, std 0.229 0.224 0.225)\n"
            "  --limit N         first N test images only\n"
            "  --batch N         200                --threads N   1\n"
            "  --confusion       print the confusion matrix (rows: true class)\n"
            "  --json            results as JSON on stdout\n");
}

int cmd_eval(int argc, char **argv)
{
    const char *file = NULL, *data = NULL, *dir = NULL, *arch = NULL, *norm = "data";
    long long limit = 0, batch = 200, threads = 1;
    bool json = false, confusion = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = !strcmp(a, "--data") || !strcmp(a, "--data-dir") || !strcmp(a, "--arch") ||
                     !strcmp(a, "--norm") || !strcmp(a, "--limit") || !strcmp(a, "--batch") ||
                     !strcmp(a, "--threads");
        if (takes && !v) return cli_usage_error("eval", "%s needs a value", a);
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage_(stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--data")) data = argv[++i];
        else if (!strcmp(a, "--data-dir")) dir = argv[++i];
        else if (!strcmp(a, "--arch")) arch = argv[++i];
        else if (!strcmp(a, "--norm")) norm = argv[++i];
        else if (!strcmp(a, "--limit")) {
            if (!cli_parse_int("eval", a, argv[++i], 1, (long long)1 << 40, &limit)) return EXIT_USAGE;
        } else if (!strcmp(a, "--batch")) {
            if (!cli_parse_int("eval", a, argv[++i], 1, 65536, &batch)) return EXIT_USAGE;
        } else if (!strcmp(a, "--threads")) {
            if (!cli_parse_int("eval", a, argv[++i], 1, 1024, &threads)) return EXIT_USAGE;
        } else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--confusion")) confusion = true;
        else if (a[0] == '-') return cli_usage_error("eval", "unknown option '%s'", a);
        else if (file) return cli_usage_error("eval", "more than one FILE");
        else file = a;
    }
    if (!file) return cli_usage_error("eval", "missing FILE");
    if (!data) return cli_usage_error("eval", "missing --data fashion-mnist|cifar10");
    if (strcmp(norm, "data") && strcmp(norm, "imagenet"))
        return cli_usage_error("eval", "--norm %s (data or imagenet)", norm);
    gbtd_set_threads((int)threads);
    gbtd_file_format fmt;
    int rc = gbtd_file_format_detect(file, &fmt);
    if (rc) return cli_fail("eval", rc, "cannot read the weights");
    if (fmt == GBTD_FORMAT_NPY || fmt == GBTD_FORMAT_UNKNOWN)
        return cli_usage_error("eval", "%s: %s files hold no network (a gbtd .h5 checkpoint, "
                               "safetensors, .npz or HDF5 weights)", file, gbtd_file_format_name(fmt));
    gbtd_dataset te;
    rc = nn_cli_load_data("eval", data, dir, NULL, &te);
    if (rc) return rc;
    if (limit > 0 && limit < te.n) gbtd_dataset_truncate(&te, limit);
    char spec[256], full[256];
    rc = GBTD_OK;
    /* without --arch, any weights file whose network gbtd recognises (lib/models) */
    bool ckpt = fmt == GBTD_FORMAT_HDF5 && gbtd_checkpoint_spec(file, spec, sizeof spec) == GBTD_OK;
    bool recognise = !ckpt && !arch;
    if (!ckpt && arch) snprintf(spec, sizeof spec, "%s", arch);
    gbtd_net net;
    memset(&net, 0, sizeof net);
    if (recognise) {
        gbtd_model_opts mo = {te.c, te.h, te.w, true};
        rc = gbtd_model_load(file, &mo, &net, NULL);
        snprintf(full, sizeof full, "%s", net.spec);
    } else if (!ckpt && fmt != GBTD_FORMAT_SAFETENSORS) {
        rc = gbtd_error(GBTD_EINVAL, "%s: --arch is for safetensors files", file);
    } else {
        nn_cli_spec_for_data(spec, &te, full, sizeof full);
        /* CRU-Net checkpoints carry "source spec|stage layout|..." (cru/build.h) */
        rc = ckpt ? gbtd_cru_net_from_spec(full, &net) : gbtd_net_from_spec(full, &net);
    }
    if (!rc && !recognise) rc = ckpt ? gbtd_checkpoint_load(file, &net, NULL, NULL)
                                     : gbtd_net_load_safetensors(&net, file);
    gbtd_eval_result r;
    memset(&r, 0, sizeof r);
    const float in_m[3] = {0.485f, 0.456f, 0.406f}, in_s[3] = {0.229f, 0.224f, 0.225f};
    bool imnet = !strcmp(norm, "imagenet");
    if (!rc && imnet && te.c != 3) rc = gbtd_error(GBTD_EINVAL, "--norm imagenet needs RGB data");
    double t0 = cli_now();
    if (!rc) rc = gbtd_evaluate(&net, &te, imnet ? in_m : NULL, imnet ? in_s : NULL, (int)batch, &r);
    double secs = cli_now() - t0;
    int status = EXIT_OK;
    if (rc) {
        status = cli_fail("eval", rc, "evaluation failed");
    } else if (json) {
        printf("{\"file\": ");
        cli_json_string(stdout, file);
        printf(", \"spec\": ");
        cli_json_string(stdout, full);
        printf(", \"images\": %lld, \"top1\": %.4f, \"top5\": %.4f, \"loss\": %.6f, "
               "\"params\": %lld, \"seconds\": %.3f", (long long)r.n, 100 * r.top1, 100 * r.top5,
               r.loss, (long long)net.nparams, secs);
        if (confusion) {
            printf(", \"confusion\": [");
            for (int i = 0; i < te.classes; i++) {
                printf("%s[", i ? ", " : "");
                for (int j = 0; j < te.classes; j++)
                    printf("%s%lld", j ? ", " : "", (long long)r.confusion[i * r.classes + j]);
                printf("]");
            }
            printf("]");
        }
        printf("}\n");
    } else {
        printf("network   %s (%lld parameters)\n", full, (long long)net.nparams);
        printf("images    %lld\ntop-1     %.2f %%\ntop-5     %.2f %%\nloss      %.4f\n",
               (long long)r.n, 100 * r.top1, 100 * r.top5, r.loss);
        if (confusion) {
            printf("confusion (rows: true class, columns: predicted)\n");
            for (int i = 0; i < te.classes; i++) {
                for (int j = 0; j < te.classes; j++)
                    printf("%6lld", (long long)r.confusion[i * r.classes + j]);
                printf("\n");
            }
        }
    }
    gbtd_eval_result_free(&r);
    gbtd_net_free(&net);
    gbtd_dataset_free(&te);
    return status;
}
