/* gbtd io: named tensor sets, the common in-memory form of weights files. */
#include <string.h>
#include <sys/mman.h>

#include "io/io_internal.h"

void gbtd_tensor_set_free(gbtd_tensor_set *s)
{
    if (s == NULL) return;
    for (int i = 0; i < s->count; i++) {
        gbtd_free(s->items[i].name);
        if (s->items[i].owned) gbtd_free(s->items[i].data);
    }
    gbtd_free(s->items);
    gbtd_attr_list_free(&s->meta);
    if (s->map) munmap(s->map, s->map_len);
    memset(s, 0, sizeof *s);
}

const gbtd_named_tensor *gbtd_tensor_set_find(const gbtd_tensor_set *s, const char *name)
{
    if (s == NULL || name == NULL) return NULL;
    for (int i = 0; i < s->count; i++)
        if (!strcmp(s->items[i].name, name)) return &s->items[i];
    return NULL;
}

int64_t gbtd_named_tensor_numel(const gbtd_named_tensor *nt)
{
    int64_t n = 1;
    for (int k = 0; k < nt->ndim; k++) n *= nt->shape[k];
    return n;
}

/* Validate and reserve a slot; on success *slot is zeroed with name/dtype/shape/nbytes set. */
static int set_reserve(gbtd_tensor_set *s, const char *name, gbtd_dtype dtype, int ndim,
                       const int64_t *shape, gbtd_named_tensor **slot)
{
    if (s == NULL || name == NULL || ndim < 0 || ndim > GBTD_MAX_MODES || (ndim > 0 && !shape))
        return gbtd_error(GBTD_EINVAL, "tensor set: bad arguments for '%s'", name ? name : "?");
    if (gbtd_dtype_size(dtype) == 0)
        return gbtd_error(GBTD_EINVAL, "tensor set: '%s' has no element type", name);
    if (gbtd_tensor_set_find(s, name))
        return gbtd_error(GBTD_EINVAL, "tensor set: duplicate name '%s'", name);
    int64_t n;
    GBTD_CHECK(gbtd_prod_i64(shape, ndim, &n));
    size_t bytes;
    GBTD_CHECK(gbtd_mul_size((size_t)n, gbtd_dtype_size(dtype), &bytes));
    if (s->count == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        gbtd_named_tensor *p = gbtd_calloc((size_t)cap, sizeof *p);
        if (p == NULL) return GBTD_ENOMEM;
        if (s->count) memcpy(p, s->items, (size_t)s->count * sizeof *p);
        gbtd_free(s->items);
        s->items = p;
        s->cap = cap;
    }
    gbtd_named_tensor *t = &s->items[s->count];
    memset(t, 0, sizeof *t);
    t->name = io_strdup(name);
    if (t->name == NULL) return GBTD_ENOMEM;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int k = 0; k < ndim; k++) t->shape[k] = shape[k];
    t->nbytes = bytes;
    *slot = t;
    return GBTD_OK;
}

int gbtd_tensor_set_add(gbtd_tensor_set *s, const char *name, gbtd_dtype dtype, int ndim,
                        const int64_t *shape, const void *data)
{
    gbtd_named_tensor *t = NULL;
    GBTD_CHECK(set_reserve(s, name, dtype, ndim, shape, &t));
    if (t->nbytes > 0 && data == NULL) {
        gbtd_free(t->name);
        t->name = NULL;
        return gbtd_error(GBTD_EINVAL, "tensor set: NULL data for '%s'", name);
    }
    t->data = gbtd_malloc(t->nbytes);
    if (t->data == NULL) {
        gbtd_free(t->name);
        t->name = NULL;
        return GBTD_ENOMEM;
    }
    if (t->nbytes) memcpy(t->data, data, t->nbytes);
    t->owned = true;
    s->count++;
    return GBTD_OK;
}

int io_tensor_set_add_view(gbtd_tensor_set *s, const char *name, gbtd_dtype dtype, int ndim,
                           const int64_t *shape, const void *data)
{
    gbtd_named_tensor *t = NULL;
    GBTD_CHECK(set_reserve(s, name, dtype, ndim, shape, &t));
    t->data = (void *)(uintptr_t)data;
    t->owned = false;
    s->count++;
    return GBTD_OK;
}

int gbtd_tensor_set_add_tensor(gbtd_tensor_set *s, const char *name, const gbtd_tensor *x,
                               gbtd_dtype dtype)
{
    if (x == NULL) return gbtd_error(GBTD_EINVAL, "tensor set: NULL tensor for '%s'", name);
    if (dtype != GBTD_DTYPE_F64 && dtype != GBTD_DTYPE_F32 && dtype != GBTD_DTYPE_F16 &&
        dtype != GBTD_DTYPE_BF16)
        return gbtd_error(GBTD_EUNSUPPORTED, "tensor set: cannot store '%s' as %s", name,
                          gbtd_dtype_name(dtype));
    gbtd_named_tensor *t = NULL;
    GBTD_CHECK(set_reserve(s, name, dtype, x->ndim, x->shape, &t));
    const int64_t n = gbtd_tensor_numel(x);
    void *buf = gbtd_malloc(t->nbytes);
    float *f = NULL;
    if (buf != NULL && dtype != GBTD_DTYPE_F64)
        f = dtype == GBTD_DTYPE_F32 ? buf : gbtd_calloc((size_t)n, sizeof(float));
    if (buf == NULL || (dtype != GBTD_DTYPE_F64 && f == NULL)) {
        gbtd_free(buf);
        gbtd_free(t->name);
        t->name = NULL;
        return GBTD_ENOMEM;
    }
    if (dtype == GBTD_DTYPE_F64) {
        gbtd_tensor view;
        gbtd_tensor_wrap(buf, x->ndim, x->shape, &view);
        gbtd_tensor_copy(&view, x);
    } else {
        gbtd_tensor_to_float(x, f);
        uint16_t *h = buf;
        if (dtype == GBTD_DTYPE_F16)
            for (int64_t i = 0; i < n; i++) h[i] = gbtd_float_to_f16(f[i]);
        else if (dtype == GBTD_DTYPE_BF16)
            for (int64_t i = 0; i < n; i++) h[i] = gbtd_float_to_bf16(f[i]);
        if ((void *)f != buf) gbtd_free(f);
    }
    t->data = buf;
    t->owned = true;
    s->count++;
    return GBTD_OK;
}

int gbtd_named_tensor_to_tensor(const gbtd_named_tensor *nt, gbtd_tensor *out)
{
    if (out) memset(out, 0, sizeof *out);
    if (nt == NULL || out == NULL) return gbtd_error(GBTD_EINVAL, "named_tensor_to_tensor: NULL");
    GBTD_CHECK(gbtd_tensor_alloc(out, nt->ndim, nt->shape));
    int rc = gbtd_dtype_to_double(nt->dtype, nt->data, gbtd_tensor_numel(out), out->data);
    if (rc != GBTD_OK) gbtd_tensor_free(out);
    return rc;
}

int gbtd_named_tensor_to_float(const gbtd_named_tensor *nt, float *out)
{
    if (nt == NULL || out == NULL) return gbtd_error(GBTD_EINVAL, "named_tensor_to_float: NULL");
    return gbtd_dtype_to_float(nt->dtype, nt->data, gbtd_named_tensor_numel(nt), out);
}
