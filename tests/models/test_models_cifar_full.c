/* The four pretrained CIFAR ResNets of ../shared/data/models, recognised and loaded by
 * gbtd_model_load, reproduce their published top-1 accuracy on the full test_batch.bin
 * (10,000 images; data/README.md: 91.73 / 92.63 / 93.10 / 93.39 %). Exact: the counts of
 * correct images must equal 9173 / 9263 / 9310 / 9339. Suite 'slow' (minutes on 2 threads).
 * usage: test_models_cifar_full DATADIR */
#include <stdio.h>

#include "check.h"
#include "models/models.h"
#include "nn/data.h"
#include "nn/train.h"

int main(int argc, char **argv)
{
    const char *data = argc > 1 ? argv[1] : "../shared/data";
    char path[1024];
    snprintf(path, sizeof path, "%s/cifar-10-batches-bin", data);
    gbtd_dataset te;
    if (gbtd_dataset_load_cifar10(path, false, &te)) {
        printf("skip: %s\n", gbtd_last_error());
        return 77;
    }
    gbtd_set_threads(2);
    const int depth[4] = {20, 32, 44, 56}, correct[4] = {9173, 9263, 9310, 9339};
    const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    for (int k = 0; k < 4; k++) {
        char label[128];
        snprintf(path, sizeof path, "%s/models/resnet%d-cifar10.safetensors", data, depth[k]);
        gbtd_net net;
        gbtd_eval_result r;
        snprintf(label, sizeof label, "resnet%d: loaded", depth[k]);
        CHECK_OK(gbtd_model_load(path, NULL, &net, NULL), label);
        if (!net.finalized) continue;
        CHECK_OK(gbtd_evaluate(&net, &te, mean, sd, 500, &r), "evaluated");
        int got = (int)(r.top1 * (double)r.n + 0.5);
        snprintf(label, sizeof label, "resnet%d: %d of 10000 correct (%.2f %%), published %.2f %%",
                 depth[k], got, 100.0 * r.top1, correct[k] / 100.0);
        CHECK(r.n == 10000 && got == correct[k], label);
        gbtd_eval_result_free(&r);
        gbtd_net_free(&net);
    }
    gbtd_dataset_free(&te);
    return check_finish();
}
