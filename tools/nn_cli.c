/* Helpers shared by gbtd train and gbtd eval. */
#include "nn_cli.h"

#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "gbtd.h"

int nn_cli_load_data(const char *cmd, const char *data, const char *dir, gbtd_dataset *tr,
                     gbtd_dataset *te)
{
    int rc;
    memset(te, 0, sizeof *te);
    if (tr) memset(tr, 0, sizeof *tr);
    if (!strcmp(data, "fashion-mnist")) {
        rc = tr ? gbtd_dataset_load_fashion_mnist(dir, true, tr) : GBTD_OK;
        if (!rc) rc = gbtd_dataset_load_fashion_mnist(dir, false, te);
    } else if (!strcmp(data, "cifar10")) {
        if (!dir) return cli_usage_error(cmd, "--data cifar10 needs --data-dir DIR");
        rc = tr ? gbtd_dataset_load_cifar10(dir, true, tr) : GBTD_OK;
        if (!rc) rc = gbtd_dataset_load_cifar10(dir, false, te);
    } else {
        return cli_usage_error(cmd, "unknown data set '%s' (fashion-mnist, cifar10)", data);
    }
    if (rc) {
        if (tr) gbtd_dataset_free(tr);
        gbtd_dataset_free(te);
        return cli_fail(cmd, rc, "cannot read the data set");
    }
    return 0;
}

void nn_cli_spec_for_data(const char *spec, const gbtd_dataset *d, char *out, size_t len)
{
    if (strstr(spec, "input=")) {
        snprintf(out, len, "%s", spec);
        return;
    }
    snprintf(out, len, "%s%cinput=%dx%dx%d", spec, strchr(spec, ':') ? ',' : ':', d->c, d->h,
             d->w);
}
