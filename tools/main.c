/* gbtd: the command-line tool. Thin: parses arguments and calls the library. */
#include <gsl/gsl_errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "gbtd.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

/* One line per command; keep alphabetical. */
static const struct command commands[] = {
    {"arch", cmd_arch, "layer table, parameters and multiply-adds of a network spec"},
    {"compress", cmd_compress, "factor stages of a network collectively into a CRU-Net"},
    {"decompose", cmd_decompose, "Tucker, CP or BTD of a tensor (.npy / .h5) into an .h5 of factors"},
    {"demo", cmd_demo, "run the main job on the default data and print its table"},
    {"eval", cmd_eval, "top-1/top-5, loss and confusion matrix of a trained network"},
    {"export", cmd_export, "write a recognised network as safetensors for PyTorch"},
    {"finetune", cmd_finetune, "fine-tune a CRU-Net (new layers first, distillation)"},
    {"info", cmd_info, "list the tensors of a file and the network they hold"},
    {"sweep", cmd_sweep, "kernel error per (terms, rank) of a stage at fixed budgets"},
    {"train", cmd_train, "train a network on Fashion-MNIST or CIFAR-10 (SGD, checkpoints)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: gbtd <command> [options]   (gbtd <command> --help for details)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

/* OpenMP's default wait policy lets idle worker threads spin between parallel regions; the
 * kernels alternate OpenMP regions with OpenBLAS's own threads, and on a small or shared
 * machine the spinning threads take the cores BLAS needs (measured under load: ResNet-8
 * training at 142 img/s with the default policy, 239 with a passive one). libgomp reads the
 * policy once, at load time, so the tool sets it and re-executes itself once. A policy set by
 * the user is kept. */
static void prefer_passive_openmp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") != NULL) return;
    if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
    execv("/proc/self/exe", argv); /* returns only on failure: then run as we are */
}

int main(int argc, char **argv)
{
    prefer_passive_openmp(argv);
    /* GSL's default handler aborts; the library reports errors through status codes. */
    gsl_set_error_handler_off();
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("gbtd %s\n", gbtd_version());
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "gbtd: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
}
