/* gbtd info FILE: list the tensors of an HDF5, .npy, .npz or safetensors file. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "gbtd.h"
#include "models_cli.h"

static void info_help(FILE *f)
{
    fprintf(f, "usage: gbtd info [--json] FILE\n\n"
               "Lists the tensors of FILE (HDF5 .h5, NumPy .npy/.npz, safetensors; the format is\n"
               "recognised from the contents): name, shape, dtype and size in bytes; then the\n"
               "network they hold (layout, stages, units, widths, groups, parameters) or why no\n"
               "known layout (torchvision/timm, CIFAR, Keras ResNet, gbtd) matched.\n\n"
               "  --json   one JSON object on stdout instead of the table\n"
               "  --help   this text\n\n"
               "Exit status: 0 listed, 2 bad usage or a file that cannot be read (one line on\n"
               "stderr naming the file and the problem), 1 other failures.\n");
}

static void shape_text(const gbtd_tensor_desc *d, char *buf, size_t len)
{
    size_t pos = 0;
    pos += (size_t)snprintf(buf + pos, len - pos, "(");
    for (int k = 0; k < d->ndim && pos < len; k++)
        pos += (size_t)snprintf(buf + pos, len - pos, k ? ", %lld" : "%lld", (long long)d->shape[k]);
    if (pos < len) snprintf(buf + pos, len - pos, d->ndim == 1 ? ",)" : ")");
}

int cmd_info(int argc, char **argv)
{
    bool json = false;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            info_help(stdout);
            return EXIT_OK;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            return cli_usage_error("info", "unknown option '%s'", argv[i]);
        } else if (path == NULL) {
            path = argv[i];
        } else {
            return cli_usage_error("info", "one FILE expected, got '%s' too", argv[i]);
        }
    }
    if (path == NULL) return cli_usage_error("info", "missing FILE");

    gbtd_tensor_desc_list l;
    gbtd_file_format fmt;
    int rc = gbtd_io_list(path, &fmt, &l);
    if (rc != GBTD_OK) {
        /* The library's detail already names the file and the problem. */
        const char *detail = gbtd_last_error();
        fprintf(stderr, "gbtd info: %s\n", detail[0] ? detail : gbtd_strerror(rc));
        return rc == GBTD_ENOMEM || rc == GBTD_EOVERFLOW ? EXIT_RUNTIME : EXIT_USAGE;
    }
    int64_t total = 0;
    for (int i = 0; i < l.count; i++)
        if (l.items[i].bytes > 0) total += l.items[i].bytes;
    if (json) {
        printf("{\"file\": ");
        cli_json_string(stdout, path);
        printf(", \"format\": \"%s\", \"count\": %d, \"total_bytes\": %lld, \"tensors\": [",
               gbtd_file_format_name(fmt), l.count, (long long)total);
        for (int i = 0; i < l.count; i++) {
            const gbtd_tensor_desc *d = &l.items[i];
            printf("%s{\"name\": ", i ? ", " : "");
            cli_json_string(stdout, d->name);
            printf(", \"shape\": [");
            for (int k = 0; k < d->ndim; k++) printf(k ? ", %lld" : "%lld", (long long)d->shape[k]);
            printf("], \"dtype\": ");
            cli_json_string(stdout, d->dtype_str);
            printf(", \"bytes\": %lld}", (long long)d->bytes);
        }
        printf("]");
        if (fmt != GBTD_FORMAT_NPY) models_cli_report(stdout, path, true);
        printf("}\n");
    } else {
        printf("%s: %s, %d tensor%s, %lld bytes\n", path, gbtd_file_format_name(fmt), l.count,
               l.count == 1 ? "" : "s", (long long)total);
        int w = 4;
        for (int i = 0; i < l.count; i++) {
            int n = (int)strlen(l.items[i].name);
            if (n > w) w = n;
        }
        if (w > 60) w = 60;
        printf("  %-*s  %-22s  %-9s  %s\n", w, "name", "shape", "dtype", "bytes");
        for (int i = 0; i < l.count; i++) {
            const gbtd_tensor_desc *d = &l.items[i];
            char sh[256];
            shape_text(d, sh, sizeof sh);
            printf("  %-*s  %-22s  %-9s  %lld\n", w, d->name, sh, d->dtype_str, (long long)d->bytes);
        }
        if (fmt != GBTD_FORMAT_NPY) models_cli_report(stdout, path, false);
    }
    gbtd_tensor_desc_list_free(&l);
    return EXIT_OK;
}
