/* gbtd info's "recognised network" part. */
#include "models_cli.h"

#include <string.h>

#include "cli.h"
#include "gbtd.h"

static void list_(FILE *f, const int *v, int n, const char *sep)
{
    for (int s = 0; s < n; s++) fprintf(f, "%s%d", s ? sep : "", v[s]);
}

void models_cli_report(FILE *f, const char *path, bool json)
{
    gbtd_tensor_set s;
    gbtd_file_format fmt;
    if (gbtd_model_read(path, &s, &fmt) != GBTD_OK) {
        gbtd_clear_error();
        return;
    }
    gbtd_model_info mi;
    int rc = gbtd_model_recognize(&s, path, &mi);
    gbtd_tensor_set_free(&s);
    gbtd_clear_error();
    const gbtd_arch *a = &mi.arch;
    const int n = a->nstages;
    if (json) {
        if (rc) {
            fprintf(f, ", \"network\": null, \"why\": ");
            cli_json_string(f, mi.why);
            return;
        }
        fprintf(f, ", \"network\": {\"layout\": \"%s\", \"family\": ", gbtd_model_layout_name(mi.layout));
        cli_json_string(f, mi.family);
        fprintf(f, ", \"spec\": ");
        cli_json_string(f, mi.spec);
        fprintf(f, ", \"stem\": \"%s\", \"stem_width\": %d, \"input\": [%d, %d, %d], \"classes\": %d, "
                   "\"block\": \"%s\", \"preact\": %s, \"shortcut\": \"%s\", \"stride_on_1x1\": %s, "
                   "\"stages\": %d",
                a->stem == GBTD_STEM_IMAGENET ? "imagenet" : "small", a->stem_width, a->in_c,
                a->in_h, a->in_w, a->classes, a->block == GBTD_BLOCK_BASIC ? "basic" : "bottleneck",
                a->preact ? "true" : "false", a->shortcut_a ? "a" : "b",
                mi.stride_on_1x1 ? "true" : "false", n);
        const char *keys[5] = {"units", "width", "inner", "groups", "share"};
        const int *vals[5] = {a->units, a->width, a->inner, a->groups, a->share};
        for (int k = 0; k < 5; k++) {
            fprintf(f, ", \"%s\": [", keys[k]);
            list_(f, vals[k], n, ", ");
            fprintf(f, "]");
        }
        fprintf(f, ", \"params\": %lld, \"bn_state\": %lld, \"ignored\": %d}", (long long)mi.params,
                (long long)mi.state, mi.ignored);
        return;
    }
    if (rc) {
        fprintf(f, "network: none recognised\n  why: %s\n", mi.why);
        return;
    }
    fprintf(f, "network: %s (%s layout)\n", mi.family, gbtd_model_layout_name(mi.layout));
    fprintf(f, "  spec        %s\n", mi.spec);
    fprintf(f, "  stem        %s, %d channels; input %dx%dx%d; %d classes\n",
            a->stem == GBTD_STEM_IMAGENET ? "7x7 stride 2 + max pool" : "3x3", a->stem_width,
            a->in_c, a->in_h, a->in_w, a->classes);
    fprintf(f, "  units       %s %s%s%s\n", a->preact ? "pre-activation" : "post-activation",
            a->block == GBTD_BLOCK_BASIC ? "basic" : "bottleneck",
            a->shortcut_a ? ", option-A shortcuts" : ", projection shortcuts",
            mi.stride_on_1x1 ? ", stride on the first 1x1 (v1)" : "");
    fprintf(f, "  stages      %d: units ", n);
    list_(f, a->units, n, "/");
    fprintf(f, ", widths ");
    list_(f, a->width, n, "/");
    if (a->block == GBTD_BLOCK_BOTTLENECK) {
        fprintf(f, ", inner ");
        list_(f, a->inner, n, "/");
    }
    fprintf(f, ", groups ");
    list_(f, a->groups, n, "/");
    bool cru = false;
    for (int k = 0; k < n; k++) cru = cru || a->share[k];
    if (cru) {
        fprintf(f, ", CRU sharing ");
        list_(f, a->share, n, "/");
    }
    fprintf(f, "\n  parameters  %lld (+ %lld batch-norm running statistics%s)\n",
            (long long)mi.params, (long long)mi.state,
            mi.ignored ? "; num_batches_tracked ignored" : "");
}
