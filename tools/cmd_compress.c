/* gbtd compress: collective factorization of chosen stages into a CRU-Net. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_cru.h"
#include "gbtd.h"
#include "nn_cli.h"

static void usage_(FILE *f)
{
    fprintf(f,
            "usage: gbtd compress WEIGHTS --stages S[,S...] (--terms R --ranks RIN,ROUT | --budget F)\n"
            "                     [--terms R] [--groups-of N] [--extra] [--act] [--no-fold]\n"
            "                     [--data fashion-mnist|cifar10 --data-dir DIR --limit N]\n"
            "                     [--refit N [--intercept]] [--bn-images N] [--iters N]\n"
            "                     [--norm data|imagenet] [--json] [--quiet]\n"
            "                     [--threads N] -o OUT\n\n"
            "WEIGHTS is a gbtd checkpoint (.h5) or a CIFAR ResNet in safetensors (PyTorch names).\n"
            "Each stage's equal-shape kernels are stacked along the output mode and factored\n"
            "jointly: R terms of rank (RIN, ROUT), shared input factor and core, one output factor\n"
            "per member; --budget F picks the largest ranks whose conv parameters are <= F times\n"
            "the stage's. --groups-of N shares within groups of N members. --extra adds the own\n"
            "1x1 of the improved form (identity at start), --act BN-ReLU inside the unit.\n"
            "--refit N re-solves each member's own 1x1 (least squares, ridge) so that it\n"
            "reproduces the source convolution's response on N training images (the kernel fit\n"
            "ignores the data; this fits what the network computes; needs --data; 1024 is\n"
            "plenty). It runs before --bn-images. --intercept also fits a constant per output\n"
            "channel (folded into the running mean of the batch norm after the member). With\n"
            "--act, the new BN-ReLU layers are first set to pass their input on (statistics\n"
            "from the refit images; the source's batch norms keep theirs).\n"
            "--bn-images N re-estimates every batch norm's running statistics on N training\n"
            "images after building (recommended: 2000 or more; needs --data). --iters N caps\n"
            "the ALS sweeps of the BTD for R > 1 (default 200).\n"
            "OUT: .h5 (gbtd checkpoint, for gbtd finetune / eval) or .safetensors (PyTorch).\n"
            "Prints per stage: members shared, conv parameters before/after, relative kernel\n"
            "error, and the independent per-member Tucker-2 at no more parameters.\n");
}

int cmd_compress(int argc, char **argv)
{
    cru_cli_opts o;
    cru_cli_opts_default(&o);
    const char *file = NULL, *outp = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage_(stdout);
            return EXIT_OK;
        }
        int used = cru_cli_parse("compress", argc, argv, &i, &o);
        if (used < 0) return EXIT_USAGE;
        if (used) continue;
        if (!strcmp(a, "-o") && i + 1 < argc) outp = argv[++i];
        else if (a[0] == '-') return cli_usage_error("compress", "unknown option '%s'", a);
        else if (!file) file = a;
        else return cli_usage_error("compress", "more than one weights file ('%s')", a);
    }
    if (!file) return cli_usage_error("compress", "no weights file (gbtd compress --help)");
    if (!outp) return cli_usage_error("compress", "no output file (-o OUT.h5 or OUT.safetensors)");
    if (o.nstages == 0) return cli_usage_error("compress", "no stages (--stages 2,3)");
    const size_t ol = strlen(outp);
    const bool st_out = ol > 12 && !strcmp(outp + ol - 12, ".safetensors");
    if (!st_out && !(ol > 3 && !strcmp(outp + ol - 3, ".h5")))
        return cli_usage_error("compress", "%s: output must end in .h5 or .safetensors", outp);
    gbtd_set_threads(o.threads);
    cru_run r;
    int status = cru_cli_compress("compress", file, &o, &r);
    if (status) return status;
    int rc = st_out ? gbtd_net_save_safetensors(&r.cru, outp)
                    : gbtd_checkpoint_save(outp, &r.cru, NULL, NULL);
    if (rc) status = cli_fail("compress", rc, "cannot write the output");
    if (!status) cru_cli_print(&o, &r, file, outp, NULL);
    cru_run_free(&r);
    return status;
}
