/* gbtd arch SPEC: the layer table of a network (output shapes, parameters, multiply-adds). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "gbtd.h"
#include "nn/arch.h"

static const char *kind_name_(const gbtd_layer *L)
{
    switch (L->kind) {
    case GBTD_LAYER_CONV: return L->groups == 1 ? "conv" : L->groups == L->c_in ? "conv-dw" : "conv-g";
    case GBTD_LAYER_BN: return L->relu ? "bn-relu" : "bn";
    case GBTD_LAYER_RELU: return "relu";
    case GBTD_LAYER_MAXPOOL: return "maxpool";
    case GBTD_LAYER_GAP: return "avgpool";
    case GBTD_LAYER_LINEAR: return "linear";
    case GBTD_LAYER_ADD: return L->relu ? "add-relu" : "add";
    case GBTD_LAYER_SHORTCUT_A: return "shortcut-a";
    }
    return "?";
}

static void usage_(FILE *f)
{
    fprintf(f, "usage: gbtd arch SPEC [--json] [--summary]\n"
               "       gbtd arch --list\n"
               "Prints the layer table of the network SPEC: output shape (C x H x W per image),\n"
               "parameters and multiply-adds per layer, then the totals: parameters (weights,\n"
               "batch-norm scales and shifts, biases; a shared weight counted once), weights only\n"
               "(conv and linear, no batch norm), multiply-adds per image (every use of a shared\n"
               "weight counted) and the float32 file size with batch-norm running statistics in\n"
               "MiB rounded up. SPEC is a preset, optionally with ':key=value,...' overrides\n"
               "(docs/networks.md); --list shows the presets.\n");
}

int cmd_arch(int argc, char **argv)
{
    const char *spec = NULL;
    bool json = false, summary = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage_(stdout);
            return EXIT_OK;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--summary")) {
            summary = true;
        } else if (!strcmp(argv[i], "--list")) {
            for (const char *const *p = gbtd_arch_presets(); *p; p++) printf("%s\n", *p);
            return EXIT_OK;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage_error("arch", "unknown option '%s'", argv[i]);
        } else if (spec) {
            return cli_usage_error("arch", "more than one SPEC ('%s', '%s')", spec, argv[i]);
        } else {
            spec = argv[i];
        }
    }
    if (!spec) return cli_usage_error("arch", "missing SPEC (gbtd arch --list shows the presets)");
    gbtd_arch a;
    gbtd_net net;
    memset(&net, 0, sizeof net);
    int rc = gbtd_arch_parse(spec, &a);
    if (!rc) rc = gbtd_arch_build(&a, &net);
    if (rc) return cli_fail("arch", rc, "cannot build the network");
    int64_t weights = 0, bn = 0, shared_uses = 0;
    for (int i = 0; i < net.nlayers; i++) {
        const gbtd_layer *L = &net.layers[i];
        if (L->kind == GBTD_LAYER_BN) bn += L->params;
        else weights += L->params;
        if (L->shared_with >= 0) shared_uses++;
    }
    const int64_t macs = gbtd_net_macs(&net), bytes = gbtd_net_file_bytes(&net);
    const int64_t mib = (bytes + (1 << 20) - 1) >> 20;
    const gbtd_value *out = &net.values[net.nvalues - 1];
    if (json) {
        printf("{\"spec\": ");
        cli_json_string(stdout, spec);
        printf(", \"input\": [%d, %d, %d], \"classes\": %d, \"layers\": [", net.in_c, net.in_h,
               net.in_w, out->c);
        for (int i = 0; i < net.nlayers && !summary; i++) {
            const gbtd_layer *L = &net.layers[i];
            const gbtd_value *v = &net.values[L->out];
            printf("%s\n  {\"name\": ", i ? "," : "");
            cli_json_string(stdout, L->name);
            printf(", \"kind\": \"%s\", \"out\": [%d, %d, %d], \"params\": %lld, \"macs\": %lld",
                   kind_name_(L), v->c, v->h, v->w, (long long)L->params, (long long)L->macs);
            if (L->shared_with >= 0) {
                printf(", \"shares\": ");
                cli_json_string(stdout, net.layers[L->shared_with].name);
            }
            printf("}");
        }
        printf("],\n \"params\": %lld, \"weights\": %lld, \"bn_params\": %lld, "
               "\"bn_running\": %lld, \"shared_uses\": %d, \"macs\": %lld, \"file_bytes\": %lld, "
               "\"file_mib\": %lld}\n", (long long)net.nparams, (long long)weights, (long long)bn,
               (long long)net.nstate, (int)shared_uses, (long long)macs, (long long)bytes,
               (long long)mib);
    } else {
        if (!summary) {
            printf("%-4s %-30s %-10s %-16s %12s %14s\n", "#", "layer", "kind", "output", "params",
                   "mult-adds");
            for (int i = 0; i < net.nlayers; i++) {
                const gbtd_layer *L = &net.layers[i];
                const gbtd_value *v = &net.values[L->out];
                char shape[48], name[200];
                snprintf(shape, sizeof shape, "%dx%dx%d", v->c, v->h, v->w);
                if (L->shared_with >= 0)
                    snprintf(name, sizeof name, "%s (=%s)", L->name, net.layers[L->shared_with].name);
                else
                    snprintf(name, sizeof name, "%s", L->name);
                printf("%-4d %-30s %-10s %-16s %12lld %14lld\n", i, name, kind_name_(L), shape,
                       (long long)L->params, (long long)L->macs);
            }
        }
        printf("network      %s (input %dx%dx%d, %d classes)\n", spec, net.in_c, net.in_h,
               net.in_w, out->c);
        printf("parameters   %lld (%.1f M; weights only %lld = %.1f M, batch norm %lld)\n",
               (long long)net.nparams, net.nparams / 1e6, (long long)weights, weights / 1e6,
               (long long)bn);
        printf("mult-adds    %lld (%.2f G per image)\n", (long long)macs, macs / 1e9);
        printf("file size    %lld bytes float32 incl. %lld running statistics = %lld MiB "
               "(rounded up)\n", (long long)bytes, (long long)net.nstate, (long long)mib);
        if (shared_uses) printf("shared       %d layers reuse an earlier weight\n", (int)shared_uses);
    }
    gbtd_net_free(&net);
    return EXIT_OK;
}
