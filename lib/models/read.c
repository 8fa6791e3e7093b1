/* gbtd models: any weights file -> named tensor set. */
#include <stdio.h>
#include <string.h>

#include "core/status.h"
#include "models/models.h"

/* Is the HDF5 file a Keras save_weights file (layer_names on the root or /model_weights)? */
static bool h5_is_keras_(gbtd_h5 *f)
{
    gbtd_attr_list a;
    memset(&a, 0, sizeof a);
    bool k = gbtd_h5_read_attrs(f, "/", &a) == GBTD_OK && gbtd_attr_list_find(&a, "layer_names");
    gbtd_attr_list_free(&a);
    if (!k) {
        memset(&a, 0, sizeof a);
        k = gbtd_h5_read_attrs(f, "/model_weights", &a) == GBTD_OK &&
            gbtd_attr_list_find(&a, "layer_names");
        gbtd_attr_list_free(&a);
    }
    gbtd_clear_error();
    return k;
}

/* gbtd checkpoints (root attribute format = gbtd-checkpoint) and other HDF5 files. */
static int read_h5_(const char *path, gbtd_h5 *f, gbtd_tensor_set *out)
{
    gbtd_attr_list at;
    memset(&at, 0, sizeof at);
    int rc = gbtd_h5_read_attrs(f, "/", &at);
    if (rc) return rc;
    const gbtd_attr *fmt = gbtd_attr_list_find(&at, "format");
    bool ckpt = fmt && fmt->kind == GBTD_ATTR_STRING && !strcmp(fmt->strs[0], "gbtd-checkpoint");
    if (ckpt) {
        const gbtd_attr *spec = gbtd_attr_list_find(&at, "spec");
        if (spec && spec->kind == GBTD_ATTR_STRING)
            rc = gbtd_attr_list_set_string(&out->meta, "gbtd.spec", spec->strs[0]);
    }
    gbtd_attr_list_free(&at);
    gbtd_tensor_desc_list l;
    memset(&l, 0, sizeof l);
    if (!rc) rc = gbtd_h5_list(f, &l);
    for (int i = 0; i < l.count && !rc; i++) {
        const gbtd_tensor_desc *d = &l.items[i];
        const char *name = d->name[0] == '/' ? d->name + 1 : d->name;
        if (ckpt) {
            if (!strncmp(name, "params/", 7)) name += 7;
            else if (!strncmp(name, "buffers/", 8)) name += 8;
            else continue; /* optimiser state */
        }
        if (d->dtype != GBTD_DTYPE_F64 && d->dtype != GBTD_DTYPE_F32 && d->dtype != GBTD_DTYPE_F16)
            continue; /* integer counters, strings */
        char nm[512];
        snprintf(nm, sizeof nm, "%s", name);
        for (char *p = nm; *p; p++)
            if (*p == '/') *p = '.';
        int nd;
        int64_t sh[GBTD_MAX_MODES];
        float *v = NULL;
        rc = gbtd_h5_read_float(f, d->name, &nd, sh, &v);
        if (!rc) rc = gbtd_tensor_set_add(out, nm, GBTD_DTYPE_F32, nd, sh, v);
        gbtd_free(v);
    }
    gbtd_tensor_desc_list_free(&l);
    (void)path;
    return rc;
}

int gbtd_model_read(const char *path, gbtd_tensor_set *out, gbtd_file_format *fmt)
{
    if (out) memset(out, 0, sizeof *out);
    if (!path || !out) return gbtd_error(GBTD_EINVAL, "model_read: NULL argument");
    gbtd_file_format f;
    GBTD_CHECK(gbtd_file_format_detect(path, &f));
    if (fmt) *fmt = f;
    int rc;
    switch (f) {
    case GBTD_FORMAT_SAFETENSORS:
        return gbtd_safetensors_read(path, out);
    case GBTD_FORMAT_NPZ:
        return gbtd_npz_read(path, out);
    case GBTD_FORMAT_HDF5: {
        gbtd_h5 *h;
        GBTD_CHECK(gbtd_h5_open(path, &h));
        bool keras = h5_is_keras_(h);
        if (keras) {
            gbtd_h5_close(h);
            return gbtd_keras_h5_read(path, NULL, out);
        }
        rc = read_h5_(path, h, out);
        gbtd_h5_close(h);
        if (rc) gbtd_tensor_set_free(out);
        return rc;
    }
    case GBTD_FORMAT_NPY:
        return gbtd_error(GBTD_EUNSUPPORTED, "%s: a .npy file holds one array, not a network's "
                          "weights (use safetensors, .npz or HDF5)", path);
    default:
        return gbtd_error(GBTD_EUNSUPPORTED, "%s: not a weights file gbtd reads (safetensors, "
                          ".npz, HDF5)", path);
    }
}
