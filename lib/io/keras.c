/* gbtd io: the HDF5 layout Keras 2 writes with model.save_weights("x.h5") (and, under
 * /model_weights, with model.save("x.h5")): the root group's attribute layer_names lists the
 * layers in order; each layer group's attribute weight_names lists its weights ("conv1/kernel:0"),
 * stored as datasets under the layer group at those relative paths. Convolution kernels are
 * HWIO (kh, kw, C_in, C_out); gbtd converts them to OIHW (PyTorch order) on request. */
#include <string.h>

#include "io/io_internal.h"

gbtd_keras_opts gbtd_keras_opts_default(void)
{
    gbtd_keras_opts o;
    o.kernels_oihw = true;
    return o;
}

static bool is_kernel(const char *w)
{
    const char *base = strrchr(w, '/');
    base = base ? base + 1 : w;
    return !strncmp(base, "kernel", 6);
}

/* W[o, i, h, w] = K[h, w, i, o]. */
static void hwio_to_oihw(const float *k, const int64_t *s, float *w)
{
    const int64_t H = s[0], W = s[1], I = s[2], O = s[3];
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < I; i++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t x = 0; x < W; x++)
                    w[((o * I + i) * H + h) * W + x] = k[((h * W + x) * I + i) * O + o];
}

static int keras_layer(gbtd_h5 *f, const char *path, const char *root, const char *layer,
                       const gbtd_keras_opts *o, gbtd_tensor_set *out)
{
    char grp[1024];
    snprintf(grp, sizeof grp, "%s/%s", root, layer);
    gbtd_attr_list la;
    memset(&la, 0, sizeof la);
    int rc = gbtd_h5_read_attrs(f, grp, &la);
    if (rc == GBTD_ENOTFOUND)
        rc = gbtd_error(GBTD_EFORMAT, "%s: layer '%s' is listed in layer_names but has no group", path,
                        layer);
    const gbtd_attr *wn = rc == GBTD_OK ? gbtd_attr_list_find(&la, "weight_names") : NULL;
    if (rc == GBTD_OK && (wn == NULL || wn->kind != GBTD_ATTR_STRING))
        rc = gbtd_error(GBTD_EFORMAT, "%s: layer '%s' has no weight_names attribute", path, layer);
    for (int64_t k = 0; rc == GBTD_OK && k < wn->count; k++) {
        const char *w = wn->strs[k];
        char ds[2048], name[1024];
        snprintf(ds, sizeof ds, "%s/%s", grp, w);
        const char *base = strrchr(w, '/');
        snprintf(name, sizeof name, "%s/%s", layer, base ? base + 1 : w);
        int nd;
        int64_t sh[GBTD_MAX_MODES];
        float *v = NULL;
        rc = gbtd_h5_read_float(f, ds, &nd, sh, &v);
        if (rc == GBTD_ENOTFOUND)
            rc = gbtd_error(GBTD_EFORMAT, "%s: weight '%s' of layer '%s' is missing", path, w, layer);
        if (rc != GBTD_OK) break;
        if (o->kernels_oihw && nd == 4 && is_kernel(w)) {
            float *t = gbtd_malloc((size_t)(sh[0] * sh[1] * sh[2] * sh[3]) * sizeof(float) + 1);
            if (t == NULL) rc = GBTD_ENOMEM;
            else {
                hwio_to_oihw(v, sh, t);
                const int64_t oihw[4] = {sh[3], sh[2], sh[0], sh[1]};
                rc = gbtd_tensor_set_add(out, name, GBTD_DTYPE_F32, 4, oihw, t);
                gbtd_free(t);
            }
        } else {
            rc = gbtd_tensor_set_add(out, name, GBTD_DTYPE_F32, nd, sh, v);
        }
        gbtd_free(v);
    }
    gbtd_attr_list_free(&la);
    return rc;
}

int gbtd_keras_h5_read(const char *path, const gbtd_keras_opts *opts, gbtd_tensor_set *out)
{
    if (out) memset(out, 0, sizeof *out);
    if (path == NULL || out == NULL) return gbtd_error(GBTD_EINVAL, "keras_h5_read: NULL argument");
    const gbtd_keras_opts o = opts ? *opts : gbtd_keras_opts_default();
    gbtd_h5 *f;
    GBTD_CHECK(gbtd_h5_open(path, &f));
    gbtd_attr_list ra;
    memset(&ra, 0, sizeof ra);
    const char *root = "";
    int rc = gbtd_h5_read_attrs(f, "/", &ra);
    const gbtd_attr *ln = rc == GBTD_OK ? gbtd_attr_list_find(&ra, "layer_names") : NULL;
    if (rc == GBTD_OK && ln == NULL) {
        gbtd_attr_list_free(&ra);
        rc = gbtd_h5_read_attrs(f, "/model_weights", &ra);
        root = "/model_weights";
        if (rc == GBTD_ENOTFOUND) rc = GBTD_OK;
        ln = rc == GBTD_OK ? gbtd_attr_list_find(&ra, "layer_names") : NULL;
    }
    if (rc == GBTD_OK && (ln == NULL || ln->kind != GBTD_ATTR_STRING))
        rc = gbtd_error(GBTD_EFORMAT, "%s: no layer_names attribute: not a Keras weights file", path);
    for (int64_t i = 0; rc == GBTD_OK && i < ln->count; i++)
        rc = keras_layer(f, path, root, ln->strs[i], &o, out);
    if (rc == GBTD_OK) {
        const gbtd_attr *kv = gbtd_attr_list_find(&ra, "keras_version");
        const gbtd_attr *be = gbtd_attr_list_find(&ra, "backend");
        if (kv && kv->kind == GBTD_ATTR_STRING)
            rc = gbtd_attr_list_set_string(&out->meta, "keras_version", kv->strs[0]);
        if (rc == GBTD_OK && be && be->kind == GBTD_ATTR_STRING)
            rc = gbtd_attr_list_set_string(&out->meta, "backend", be->strs[0]);
    }
    gbtd_attr_list_free(&ra);
    gbtd_h5_close(f);
    if (rc != GBTD_OK) gbtd_tensor_set_free(out);
    return rc;
}
