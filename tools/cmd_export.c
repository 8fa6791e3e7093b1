/* gbtd export IN -o OUT.safetensors: any recognised weights file as PyTorch safetensors. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "gbtd.h"

static void usage_(FILE *f)
{
    fprintf(f,
            "usage: gbtd export IN -o OUT.safetensors [options]\n\n"
            "Reads any weights file gbtd recognises (torchvision/timm or CIFAR ResNets, Keras\n"
            "ResNet50 HDF5, gbtd checkpoints and exports; safetensors, .npz or HDF5) and writes\n"
            "it as safetensors with PyTorch state_dict names: ResNets/ResNeXts load into\n"
            "torchvision.models with strict=True; other networks (pre-activation, CRU-Nets) into\n"
            "python/gbtd_torch.py (the network is in the file's __metadata__).\n\n"
            "  -o FILE          output (written to a temporary name, then renamed)\n"
            "  --dtype T        float32 (default), float16, bfloat16, float64\n"
            "  --no-counters    leave out the BN num_batches_tracked entries\n"
            "  --json           summary as JSON on stdout\n\n"
            "Exit status: 0 written, 2 bad usage or an unreadable / unrecognised file, 1 other.\n");
}

int cmd_export(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *dt = "float32";
    bool json = false, counters = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage_(stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--dtype")) {
            if (i + 1 >= argc) return cli_usage_error("export", "%s needs a value", a);
            if (a[1] == 'o') out = argv[++i];
            else dt = argv[++i];
        } else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--no-counters")) counters = false;
        else if (a[0] == '-' && a[1]) return cli_usage_error("export", "unknown option '%s'", a);
        else if (in) return cli_usage_error("export", "one input file expected, got '%s' too", a);
        else in = a;
    }
    if (!in) return cli_usage_error("export", "missing IN");
    if (!out) return cli_usage_error("export", "missing -o OUT.safetensors");
    gbtd_export_opts o = gbtd_export_opts_default();
    o.num_batches_tracked = counters;
    if (!strcmp(dt, "float32")) o.dtype = GBTD_DTYPE_F32;
    else if (!strcmp(dt, "float16")) o.dtype = GBTD_DTYPE_F16;
    else if (!strcmp(dt, "bfloat16")) o.dtype = GBTD_DTYPE_BF16;
    else if (!strcmp(dt, "float64")) o.dtype = GBTD_DTYPE_F64;
    else return cli_usage_error("export", "--dtype %s (float32, float16, bfloat16, float64)", dt);
    gbtd_net net;
    gbtd_model_info mi;
    int rc = gbtd_model_load(in, NULL, &net, &mi);
    if (rc) return cli_fail("export", rc, "cannot load the network");
    rc = gbtd_model_export(&net, out, &o);
    if (rc) {
        gbtd_net_free(&net);
        return cli_fail("export", rc, "cannot write the export");
    }
    if (json) {
        printf("{\"input\": ");
        cli_json_string(stdout, in);
        printf(", \"output\": ");
        cli_json_string(stdout, out);
        printf(", \"layout\": \"%s\", \"family\": ", gbtd_model_layout_name(mi.layout));
        cli_json_string(stdout, mi.family);
        printf(", \"spec\": ");
        cli_json_string(stdout, net.spec);
        printf(", \"dtype\": \"%s\", \"params\": %lld}\n", dt, (long long)net.nparams);
    } else {
        printf("%s: %s (%s layout, %lld parameters) -> %s (%s)\n", in, mi.family,
               gbtd_model_layout_name(mi.layout), (long long)net.nparams, out, dt);
    }
    gbtd_net_free(&net);
    return EXIT_OK;
}
