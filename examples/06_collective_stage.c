/* 06: collective factorization of the stages of a trained network (the CRU of the paper).
 * The pretrained CIFAR ResNet-20 has three stages; in each, the 3x3 convolutions whose input and
 * output widths agree (5 or 6 per stage) have kernels of one shape kh x kw x C x C. Stacked along
 * the output mode they form X+ (3 x 3 x C x L C), factored jointly: one input factor and one core
 * shared by the stage, one output factor per convolution. At the same parameter budget, the
 * usual alternative factors every convolution on its own (independent Tucker-2). This prints,
 * per stage and for both, the parameters kept and the relative kernel error (batch-norm scales
 * folded in, so the error measures what the network sees).
 *
 *     06_collective_stage [WEIGHTS]   (default ../shared/data/models/resnet20-cifar10.safetensors)
 */
#include <stdio.h>
#include <stdlib.h>

#include "gbtd.h"

static int fail(const char *what)
{
    fprintf(stderr, "06_collective_stage: %s: %s\n", what, gbtd_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "../shared/data/models/resnet20-cifar10.safetensors";
    gbtd_net net;
    /* a CIFAR ResNet in safetensors (PyTorch names); 0, 0, 0: the CIFAR image shape 3x32x32 */
    if (gbtd_cru_load_net(path, 0, 0, 0, &net)) return fail("cannot load the network");
    printf("network %s, %lld parameters\n", net.spec, (long long)net.nparams);
    printf("budget: half of each stage's shared convolutions' parameters\n\n");
    printf("stage  kernels  shape         ranks  params before -> after   collective error"
           "   independent rank, params, error\n");
    for (int s = 1; s <= 3; s++) {
        gbtd_cru_stage st;
        if (gbtd_cru_stage_find(&net, s, &st)) return fail("stage");
        gbtd_cru_stage_opts o = gbtd_cru_stage_opts_default();
        o.terms = 1;        /* R = 1: the collective Tucker-2 */
        o.budget = 0.5;     /* ranks: the largest whose count fits half the parameters */
        o.independent = true;
        if (gbtd_cru_stage_factor(&net, &st, &o)) return fail("factor");
        char shape[32], ranks[16];
        snprintf(shape, sizeof shape, "%lldx%lldx%lldx%lld", (long long)st.kh, (long long)st.kw,
                 (long long)st.c_in, (long long)st.c_out);
        snprintf(ranks, sizeof ranks, "%lld,%lld", (long long)st.rank_in, (long long)st.rank_out);
        printf("%5d  %7d  %-12s  %-5s  %6lld -> %-6lld          %.4f             %lld, %lld, %.4f\n",
               st.stage, st.nmembers, shape, ranks, (long long)st.params_before,
               (long long)st.params_after, st.kernel_error, (long long)st.indep_rank,
               (long long)st.indep_params, st.indep_error);
        printf("       per kernel (collective):");
        for (int m = 0; m < st.nmembers; m++) printf(" %.3f", st.member_error[m]);
        printf("\n");
        gbtd_cru_stage_free(&st);
    }
    gbtd_net_free(&net);
    return 0;
}
