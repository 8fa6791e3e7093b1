/* 07: from a trained network to a fine-tuned CRU-Net through the library API.
 *   1. load the pretrained CIFAR ResNet-20 and CIFAR-10;
 *   2. factor stages 2 and 3 collectively (R = 4 block terms) to 30 % of their convolution
 *      parameters;
 *   3. build the CRU-Net from the factors (shared 1x1 + 3x3 per stage, own 1x1 per unit);
 *   4. re-estimate the batch-norm running statistics on training images (the factored
 *      convolutions feed their batch norms other statistics than the source's);
 *   5. fine-tune briefly with distillation from the source network;
 * and print the test top-1 after each step. A short run (a few seconds): real fine-tuning
 * takes epochs (gbtd finetune, bench/cru).
 *
 *     07_cru_finetune [WEIGHTS [CIFAR_DIR]]
 *     (defaults ../shared/data/models/resnet20-cifar10.safetensors, ../shared/data/cifar-10-batches-bin)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gbtd.h"
#include "nn/train.h" /* gbtd_evaluate */

/* these networks were trained on RGB in [0, 1] normalised with the ImageNet constants */
static const float MEAN[3] = {0.485f, 0.456f, 0.406f}, STD[3] = {0.229f, 0.224f, 0.225f};
enum { TEST_IMAGES = 500 };

static int fail(const char *what)
{
    fprintf(stderr, "07_cru_finetune: %s: %s\n", what, gbtd_last_error());
    return 1;
}

static double top1(gbtd_net *net, const gbtd_dataset *test)
{
    gbtd_eval_result r;
    memset(&r, 0, sizeof r);
    double t = gbtd_evaluate(net, test, MEAN, STD, 250, &r) ? -1.0 : r.top1;
    gbtd_eval_result_free(&r);
    return 100 * t;
}

int main(int argc, char **argv)
{
    const char *weights = argc > 1 ? argv[1] : "../shared/data/models/resnet20-cifar10.safetensors";
    const char *dir = argc > 2 ? argv[2] : "../shared/data/cifar-10-batches-bin";
    gbtd_set_threads(1); /* one thread: the printed numbers do not depend on the thread count */
    gbtd_net src, cru;
    gbtd_dataset train, test;
    if (gbtd_cru_load_net(weights, 0, 0, 0, &src)) return fail("cannot load the network");
    if (gbtd_dataset_load_cifar10(dir, true, &train) || gbtd_dataset_load_cifar10(dir, false, &test))
        return fail("cannot load CIFAR-10");
    gbtd_dataset_truncate(&test, TEST_IMAGES);
    printf("source %s: %lld parameters, test top-1 %.2f %% (first %d test images)\n", src.spec,
           (long long)src.nparams, top1(&src, &test), TEST_IMAGES);

    /* 2. collective factorization of stages 2 and 3 */
    gbtd_cru_stage st[2];
    for (int s = 0; s < 2; s++) {
        gbtd_cru_stage_opts o = gbtd_cru_stage_opts_default();
        o.budget = 0.3;
        o.terms = 4;
        o.btd.max_iter = 50; /* ALS sweeps: enough for this example */
        o.independent = false;
        if (gbtd_cru_stage_find(&src, s + 2, &st[s]) || gbtd_cru_stage_factor(&src, &st[s], &o))
            return fail("factor");
        printf("stage %d: %d convolutions share ranks (%lld, %lld), conv parameters %lld -> %lld, "
               "kernel error %.4f\n", st[s].stage, st[s].nmembers, (long long)st[s].rank_in,
               (long long)st[s].rank_out, (long long)st[s].params_before,
               (long long)st[s].params_after, st[s].kernel_error);
    }
    /* 3. the CRU-Net; its spec rebuilds the graph (checkpoints store it) */
    if (gbtd_cru_build(&src, st, 2, &cru)) return fail("build");
    printf("CRU-Net %s: %lld parameters\n", cru.spec, (long long)cru.nparams);
    printf("  test top-1 as built:                 %6.2f %%\n", top1(&cru, &test));

    /* 4. batch-norm statistics from 1000 training images */
    if (gbtd_cru_bn_reestimate(&cru, &train, 1000, 100, MEAN, STD, 1)) return fail("bn");
    printf("  after batch-norm re-estimation:      %6.2f %%\n", top1(&cru, &test));

    /* 5. 20 SGD steps of 64 images: the new layers alone (at new_lr_scale = 0.1 times the
     *    rate, see cru/build.h), distilled from the source */
    gbtd_cru_finetune_opts fo = gbtd_cru_finetune_opts_default();
    fo.epochs = 1;
    fo.new_first = 1;
    fo.max_steps = 20;
    fo.batch = 64;
    fo.lr = 0.002;
    fo.teacher = &src;
    fo.mean = MEAN;
    fo.std = STD;
    fo.seed = 1;
    gbtd_cru_epoch_info ei;
    if (gbtd_cru_finetune(&cru, &train, NULL, &fo, &ei)) return fail("finetune");
    printf("  after %d steps of fine-tuning:       %6.2f %% (training loss %.3f)\n",
           (int)fo.max_steps, top1(&cru, &test), ei.loss);

    gbtd_net_free(&cru);
    for (int s = 0; s < 2; s++) gbtd_cru_stage_free(&st[s]);
    gbtd_net_free(&src);
    gbtd_dataset_free(&train);
    gbtd_dataset_free(&test);
    return 0;
}
