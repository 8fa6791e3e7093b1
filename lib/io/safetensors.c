/* gbtd io: safetensors, read through a memory mapping and validated strictly.
 *
 * Layout: uint64 LE N; N bytes of a UTF-8 JSON object (may be padded with spaces)
 *   {"__metadata__": {"key": "value", ...},
 *    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
 * then the data buffer; offsets are relative to its start, and the tensors must cover it exactly
 * (no holes, no overlaps). The JSON is parsed by jansson. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io_internal.h"

enum {
    ST_MAX_HEADER = 100 * 1000 * 1000, /* the reference implementation's limit as well */
    ST_MAX_DEPTH = 4                   /* root object > tensor object > shape array */
};

static const struct {
    const char *name;
    gbtd_dtype t;
} st_dtypes[] = {
    {"F64", GBTD_DTYPE_F64}, {"F32", GBTD_DTYPE_F32}, {"F16", GBTD_DTYPE_F16},
    {"BF16", GBTD_DTYPE_BF16}, {"I64", GBTD_DTYPE_I64}, {"I32", GBTD_DTYPE_I32},
    {"I16", GBTD_DTYPE_I16}, {"I8", GBTD_DTYPE_I8},   {"U64", GBTD_DTYPE_U64},
    {"U32", GBTD_DTYPE_U32}, {"U16", GBTD_DTYPE_U16}, {"U8", GBTD_DTYPE_U8},
    {"BOOL", GBTD_DTYPE_BOOL},
};

static gbtd_dtype st_dtype(const char *s)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (!strcmp(s, st_dtypes[i].name)) return st_dtypes[i].t;
    return GBTD_DTYPE_UNKNOWN;
}

static const char *st_dtype_name(gbtd_dtype t)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (st_dtypes[i].t == t) return st_dtypes[i].name;
    return NULL;
}

/* Nesting depth of the JSON text, counted outside strings, so that hostile deep nesting is
 * refused before the recursive parser sees it. Returns -1 on an unterminated string. */
static int json_depth(const char *s, size_t n)
{
    int depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        const char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max) max = depth;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return in_str ? -1 : max;
}

/* Strict check of UTF-8 (no overlongs, surrogates or values above U+10FFFF). */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned min, cp;
        if ((c & 0xe0) == 0xc0) len = 2, min = 0x80, cp = c & 0x1f;
        else if ((c & 0xf0) == 0xe0) len = 3, min = 0x800, cp = c & 0x0f;
        else if ((c & 0xf8) == 0xf0) len = 4, min = 0x10000, cp = c & 0x07;
        else return false;
        if (i + len > n) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += len;
    }
    return true;
}

struct st_entry {
    const char *name;
    gbtd_dtype dtype;
    int ndim;
    int64_t shape[GBTD_MAX_MODES];
    uint64_t begin, end;
};

static int cmp_entry(const void *a, const void *b)
{
    const struct st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Parse one tensor entry of the header. */
static int st_entry_parse(const char *path, const char *name, json_t *v, struct st_entry *e)
{
    if (!json_is_object(v))
        return gbtd_error(GBTD_EFORMAT, "%s: header entry '%s' is not an object", path, name);
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
           *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt) || !json_is_array(sh) || !json_is_array(off) || json_object_size(v) != 3)
        return gbtd_error(GBTD_EFORMAT,
                          "%s: tensor '%s' needs exactly dtype, shape and data_offsets", path, name);
    e->name = name;
    e->dtype = st_dtype(json_string_value(dt));
    if (e->dtype == GBTD_DTYPE_UNKNOWN)
        return gbtd_error(GBTD_EUNSUPPORTED, "%s: tensor '%s' has unknown dtype '%s'", path, name,
                          json_string_value(dt));
    size_t nd = json_array_size(sh);
    if (nd > GBTD_MAX_MODES)
        return gbtd_error(GBTD_EUNSUPPORTED, "%s: tensor '%s' has %zu dimensions, at most %d are "
                                             "supported", path, name, nd, GBTD_MAX_MODES);
    e->ndim = (int)nd;
    int64_t numel = 1;
    for (size_t k = 0; k < nd; k++) {
        json_t *d = json_array_get(sh, k);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return gbtd_error(GBTD_EFORMAT, "%s: tensor '%s' has a shape entry that is not a "
                                            "non-negative integer", path, name);
        e->shape[k] = (int64_t)json_integer_value(d);
        if (__builtin_mul_overflow(numel, e->shape[k], &numel))
            return gbtd_error(GBTD_EOVERFLOW, "%s: tensor '%s': element count overflows", path, name);
    }
    if (json_array_size(off) != 2 || !json_is_integer(json_array_get(off, 0)) ||
        !json_is_integer(json_array_get(off, 1)) || json_integer_value(json_array_get(off, 0)) < 0 ||
        json_integer_value(json_array_get(off, 1)) < json_integer_value(json_array_get(off, 0)))
        return gbtd_error(GBTD_EFORMAT, "%s: tensor '%s' has malformed data_offsets", path, name);
    e->begin = (uint64_t)json_integer_value(json_array_get(off, 0));
    e->end = (uint64_t)json_integer_value(json_array_get(off, 1));
    uint64_t bytes;
    if (__builtin_mul_overflow((uint64_t)numel, (uint64_t)gbtd_dtype_size(e->dtype), &bytes))
        return gbtd_error(GBTD_EOVERFLOW, "%s: tensor '%s': byte count overflows", path, name);
    if (bytes != e->end - e->begin)
        return gbtd_error(GBTD_EFORMAT, "%s: tensor '%s' spans %llu bytes but %s x shape needs %llu",
                          path, name, (unsigned long long)(e->end - e->begin),
                          json_string_value(dt), (unsigned long long)bytes);
    return GBTD_OK;
}

static int st_parse(const char *path, const unsigned char *map, size_t len, gbtd_tensor_set *out)
{
    if (len < 8)
        return gbtd_error(GBTD_EFORMAT, "%s: %zu bytes, too short for a safetensors file", path, len);
    const uint64_t n = io_le64(map);
    if (n > ST_MAX_HEADER)
        return gbtd_error(GBTD_EFORMAT, "%s: header length %llu exceeds the limit of %d bytes", path,
                          (unsigned long long)n, ST_MAX_HEADER);
    if (n > len - 8)
        return gbtd_error(GBTD_EFORMAT, "%s: header length %llu runs past the end of the file "
                                        "(%zu bytes)", path, (unsigned long long)n, len);
    const char *hdr = (const char *)map + 8;
    if (n < 2 || hdr[0] != '{')
        return gbtd_error(GBTD_EFORMAT, "%s: header is not a JSON object", path);
    if (!utf8_valid((const unsigned char *)hdr, (size_t)n))
        return gbtd_error(GBTD_EFORMAT, "%s: header is not valid UTF-8", path);
    int depth = json_depth(hdr, (size_t)n);
    if (depth < 0 || depth > ST_MAX_DEPTH)
        return gbtd_error(GBTD_EFORMAT, "%s: header JSON is %s", path,
                          depth < 0 ? "unterminated" : "nested too deeply");
    json_error_t jerr;
    json_t *root = json_loadb(hdr, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return gbtd_error(GBTD_EFORMAT, "%s: header JSON: %s (at byte %d)", path, jerr.text,
                          jerr.position);
    int rc = GBTD_OK;
    struct st_entry *ents = NULL;
    size_t ne = 0;
    const size_t data_len = len - 8 - (size_t)n;
    const unsigned char *data = map + 8 + n;
    if (!json_is_object(root)) {
        rc = gbtd_error(GBTD_EFORMAT, "%s: header is not a JSON object", path);
        goto done;
    }
    ents = gbtd_calloc(json_object_size(root) + 1, sizeof *ents);
    if (ents == NULL) {
        rc = GBTD_ENOMEM;
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v)) {
                rc = gbtd_error(GBTD_EFORMAT, "%s: __metadata__ is not an object", path);
                goto done;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv)
            {
                if (!json_is_string(mv)) {
                    rc = gbtd_error(GBTD_EFORMAT, "%s: __metadata__ value of '%s' is not a string",
                                    path, mk);
                    goto done;
                }
                if ((rc = gbtd_attr_list_set_string(&out->meta, mk, json_string_value(mv))) != GBTD_OK)
                    goto done;
            }
            continue;
        }
        if ((rc = st_entry_parse(path, key, v, &ents[ne])) != GBTD_OK) goto done;
        ne++;
    }
    /* Data must be covered exactly: sorted by offset, each tensor starts where the previous ended. */
    struct st_entry *sorted = gbtd_calloc(ne + 1, sizeof *sorted);
    if (sorted == NULL) {
        rc = GBTD_ENOMEM;
        goto done;
    }
    if (ne) memcpy(sorted, ents, ne * sizeof *ents);
    qsort(sorted, ne, sizeof *sorted, cmp_entry);
    uint64_t pos = 0;
    for (size_t i = 0; i < ne && rc == GBTD_OK; i++) {
        if (sorted[i].end > data_len)
            rc = gbtd_error(GBTD_EFORMAT, "%s: tensor '%s' ends at byte %llu, past the data (%zu "
                                          "bytes)", path, sorted[i].name,
                            (unsigned long long)sorted[i].end, data_len);
        else if (sorted[i].begin < pos)
            rc = gbtd_error(GBTD_EFORMAT, "%s: tensor '%s' overlaps another tensor", path,
                            sorted[i].name);
        else if (sorted[i].begin > pos)
            rc = gbtd_error(GBTD_EFORMAT, "%s: unused bytes before tensor '%s'", path,
                            sorted[i].name);
        pos = sorted[i].end;
    }
    gbtd_free(sorted);
    if (rc == GBTD_OK && pos != data_len)
        rc = gbtd_error(GBTD_EFORMAT, "%s: %llu bytes after the last tensor", path,
                        (unsigned long long)(data_len - pos));
    if (rc != GBTD_OK) goto done;
    /* Items in header order; data point into the mapping unless misaligned for their type. */
    for (size_t i = 0; i < ne; i++) {
        const struct st_entry *e = &ents[i];
        const unsigned char *p = data + e->begin;
        const size_t esz = gbtd_dtype_size(e->dtype);
        if (((uintptr_t)p % esz) != 0) {
            if ((rc = gbtd_tensor_set_add(out, e->name, e->dtype, e->ndim, e->shape, p)) != GBTD_OK)
                goto done;
            continue;
        }
        if ((rc = io_tensor_set_add_view(out, e->name, e->dtype, e->ndim, e->shape, p)) != GBTD_OK)
            goto done;
    }
done:
    gbtd_free(ents);
    json_decref(root);
    return rc;
}

int gbtd_safetensors_read(const char *path, gbtd_tensor_set *out)
{
    if (out) memset(out, 0, sizeof *out);
    if (path == NULL || out == NULL) return gbtd_error(GBTD_EINVAL, "safetensors_read: NULL argument");
    int fd = open(path, O_RDONLY);
    if (fd < 0) return gbtd_error(GBTD_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return gbtd_error(GBTD_EIO, "%s: not a regular file", path);
    }
    const size_t len = (size_t)st.st_size;
    if (len < 8) {
        close(fd);
        return gbtd_error(GBTD_EFORMAT, "%s: %zu bytes, too short for a safetensors file", path, len);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return gbtd_error(GBTD_EIO, "%s: cannot map: %s", path, strerror(errno));
    out->map = map;
    out->map_len = len;
    int rc = st_parse(path, map, len, out);
    if (rc != GBTD_OK) gbtd_tensor_set_free(out);
    return rc;
}

int gbtd_safetensors_write(const char *path, const gbtd_tensor_set *s)
{
    if (path == NULL || s == NULL) return gbtd_error(GBTD_EINVAL, "safetensors_write: NULL argument");
    json_t *root = json_object();
    if (root == NULL) return gbtd_error(GBTD_ENOMEM, "%s: out of memory building the header", path);
    int rc = GBTD_OK;
    char *text = NULL;
    if (s->meta.count > 0) {
        json_t *m = json_object();
        if (m == NULL || json_object_set_new(root, "__metadata__", m) != 0) {
            rc = gbtd_error(GBTD_ENOMEM, "%s: out of memory building the header", path);
            goto done;
        }
        for (int i = 0; i < s->meta.count; i++) {
            const gbtd_attr *a = &s->meta.items[i];
            if (a->kind != GBTD_ATTR_STRING || a->count != 1) {
                rc = gbtd_error(GBTD_EINVAL, "%s: metadata '%s' is not a single string", path, a->name);
                goto done;
            }
            if (json_object_set_new(m, a->name, json_string(a->strs[0])) != 0) {
                rc = gbtd_error(GBTD_EINVAL, "%s: metadata '%s' is not valid UTF-8", path, a->name);
                goto done;
            }
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < s->count; i++) {
        const gbtd_named_tensor *t = &s->items[i];
        const char *dn = st_dtype_name(t->dtype);
        if (dn == NULL) {
            rc = gbtd_error(GBTD_EUNSUPPORTED, "%s: tensor '%s' has dtype %s", path, t->name,
                            gbtd_dtype_name(t->dtype));
            goto done;
        }
        if (!strcmp(t->name, "__metadata__") || json_object_get(root, t->name)) {
            rc = gbtd_error(GBTD_EINVAL, "%s: tensor name '%s' is reserved or repeated", path, t->name);
            goto done;
        }
        json_t *e = json_object(), *sh = json_array(), *of = json_array();
        for (int k = 0; k < t->ndim; k++) json_array_append_new(sh, json_integer(t->shape[k]));
        json_array_append_new(of, json_integer((json_int_t)off));
        json_array_append_new(of, json_integer((json_int_t)(off + t->nbytes)));
        json_object_set_new(e, "dtype", json_string(dn));
        json_object_set_new(e, "shape", sh);
        json_object_set_new(e, "data_offsets", of);
        if (json_object_set_new(root, t->name, e) != 0) {
            rc = gbtd_error(GBTD_EINVAL, "%s: tensor name '%s' is not valid UTF-8", path, t->name);
            goto done;
        }
        off += t->nbytes;
    }
    text = json_dumps(root, JSON_COMPACT);
    if (text == NULL) {
        rc = gbtd_error(GBTD_ENOMEM, "%s: out of memory writing the header", path);
        goto done;
    }
    /* Header padded with spaces to a multiple of 8 so that the data stay 8-byte aligned. */
    const size_t tl = strlen(text), hl = (tl + 7) / 8 * 8;
    char *tmp;
    FILE *fp;
    if ((rc = io_tmp_create(path, &tmp, &fp)) != GBTD_OK) goto done;
    unsigned char lenbuf[8];
    io_put64(lenbuf, hl);
    int ok = fwrite(lenbuf, 1, 8, fp) == 8 && fwrite(text, 1, tl, fp) == tl;
    for (size_t i = tl; ok && i < hl; i++) ok = fputc(' ', fp) != EOF;
    for (int i = 0; ok && i < s->count; i++)
        if (s->items[i].nbytes)
            ok = fwrite(s->items[i].data, 1, s->items[i].nbytes, fp) == s->items[i].nbytes;
    rc = io_fclose_checked(fp, path);
    if (rc == GBTD_OK && !ok) rc = gbtd_error(GBTD_EIO, "%s: short write", path);
    if (rc != GBTD_OK) io_tmp_abort(tmp);
    else rc = io_tmp_commit(tmp, path);
done:
    free(text);
    json_decref(root);
    return rc;
}
