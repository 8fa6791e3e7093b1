/* gbtd io: NumPy .npy files (format versions 1.0, 2.0 and 3.0).
 *
 * Layout: "\x93NUMPY", major, minor, header length (uint16 LE for 1.0, uint32 LE for 2.0/3.0),
 * then a Python dict literal {'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }
 * padded with spaces and ending in '\n', then the raw data. The header is parsed strictly here:
 * exactly those three keys, each once; bounded length; shape integers overflow-checked. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/io_internal.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gbtd io assumes a little-endian host"
#endif

enum { NPY_MAX_HEADER = 1 << 20 }; /* NumPy itself refuses headers above 10000 bytes by default */

struct cursor {
    const char *p, *end;
};

static void skip_ws(struct cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t')) c->p++;
}

static bool eat(struct cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A quoted string without escapes into out (at most cap-1 chars). */
static bool parse_str(struct cursor *c, char *out, size_t cap)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return false;
    const char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || *c->p == '\n' || n + 1 >= cap) return false;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end) return false;
    c->p++;
    out[n] = '\0';
    return true;
}

static bool parse_word(struct cursor *c, const char *w)
{
    skip_ws(c);
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) >= n && !memcmp(c->p, w, n)) {
        c->p += n;
        return true;
    }
    return false;
}

static gbtd_dtype descr_dtype(const char *d)
{
    static const struct {
        const char *descr;
        gbtd_dtype t;
    } map[] = {
        {"<f8", GBTD_DTYPE_F64}, {"<f4", GBTD_DTYPE_F32}, {"<f2", GBTD_DTYPE_F16},
        {"<i8", GBTD_DTYPE_I64}, {"<i4", GBTD_DTYPE_I32}, {"<i2", GBTD_DTYPE_I16},
        {"|i1", GBTD_DTYPE_I8},  {"<u8", GBTD_DTYPE_U64}, {"<u4", GBTD_DTYPE_U32},
        {"<u2", GBTD_DTYPE_U16}, {"|u1", GBTD_DTYPE_U8},  {"|b1", GBTD_DTYPE_BOOL},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(d, map[i].descr)) return map[i].t;
    return GBTD_DTYPE_UNKNOWN;
}

static const char *dtype_descr(gbtd_dtype t)
{
    switch (t) {
    case GBTD_DTYPE_F64: return "<f8";
    case GBTD_DTYPE_F32: return "<f4";
    case GBTD_DTYPE_F16: return "<f2";
    case GBTD_DTYPE_I64: return "<i8";
    case GBTD_DTYPE_I32: return "<i4";
    case GBTD_DTYPE_I16: return "<i2";
    case GBTD_DTYPE_I8: return "|i1";
    case GBTD_DTYPE_U64: return "<u8";
    case GBTD_DTYPE_U32: return "<u4";
    case GBTD_DTYPE_U16: return "<u2";
    case GBTD_DTYPE_U8: return "|u1";
    case GBTD_DTYPE_BOOL: return "|b1";
    default: return NULL;
    }
}

int gbtd_npy_parse_header(const void *buf, size_t len, const char *what, gbtd_npy_header *h)
{
    const unsigned char *b = buf;
    memset(h, 0, sizeof *h);
    if (what == NULL) what = "npy";
    if (b == NULL) return gbtd_error(GBTD_EINVAL, "%s: NULL buffer", what);
    if (len < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
        return gbtd_error(GBTD_EFORMAT, "%s: not a .npy file (bad magic or shorter than 10 bytes)",
                          what);
    h->major = b[6];
    h->minor = b[7];
    size_t hlen, pre;
    if (h->major == 1 && h->minor == 0) {
        hlen = io_le16(b + 8);
        pre = 10;
    } else if ((h->major == 2 || h->major == 3) && h->minor == 0) {
        if (len < 12) return gbtd_error(GBTD_EFORMAT, "%s: truncated .npy preamble", what);
        hlen = io_le32(b + 8);
        pre = 12;
    } else {
        return gbtd_error(GBTD_EUNSUPPORTED, "%s: .npy format version %d.%d is not supported", what,
                          h->major, h->minor);
    }
    if (hlen > NPY_MAX_HEADER)
        return gbtd_error(GBTD_EFORMAT, "%s: .npy header length %zu exceeds the limit of %d", what,
                          hlen, NPY_MAX_HEADER);
    if (len < pre + hlen)
        return gbtd_error(GBTD_EFORMAT, "%s: truncated .npy header (%zu of %zu bytes)", what,
                          len - pre, hlen);
    h->data_offset = pre + hlen;
    const char *text = (const char *)b + pre;
    if (hlen == 0 || text[hlen - 1] != '\n')
        return gbtd_error(GBTD_EFORMAT, "%s: .npy header does not end with a newline", what);
    for (size_t i = 0; i < hlen; i++)
        if ((unsigned char)text[i] < 0x20 && text[i] != '\n' && text[i] != '\t')
            return gbtd_error(GBTD_EFORMAT, "%s: control byte 0x%02x in the .npy header", what,
                              (unsigned)(unsigned char)text[i]);

    struct cursor c = {text, text + hlen - 1};
    bool have_descr = false, have_order = false, have_shape = false;
    if (!eat(&c, '{')) return gbtd_error(GBTD_EFORMAT, "%s: .npy header is not a dict", what);
    while (!eat(&c, '}')) {
        char key[32];
        if (!parse_str(&c, key, sizeof key) || !eat(&c, ':'))
            return gbtd_error(GBTD_EFORMAT, "%s: malformed .npy header near offset %td", what,
                              c.p - text);
        if (!strcmp(key, "descr")) {
            if (have_descr) return gbtd_error(GBTD_EFORMAT, "%s: duplicate key 'descr'", what);
            have_descr = true;
            skip_ws(&c);
            if (c.p < c.end && *c.p == '[')
                return gbtd_error(GBTD_EUNSUPPORTED,
                                  "%s: structured dtypes are not supported", what);
            if (!parse_str(&c, h->descr, sizeof h->descr))
                return gbtd_error(GBTD_EFORMAT, "%s: malformed 'descr' in the .npy header", what);
        } else if (!strcmp(key, "fortran_order")) {
            if (have_order)
                return gbtd_error(GBTD_EFORMAT, "%s: duplicate key 'fortran_order'", what);
            have_order = true;
            if (parse_word(&c, "True")) h->fortran_order = true;
            else if (parse_word(&c, "False")) h->fortran_order = false;
            else
                return gbtd_error(GBTD_EFORMAT, "%s: 'fortran_order' is not True or False", what);
        } else if (!strcmp(key, "shape")) {
            if (have_shape) return gbtd_error(GBTD_EFORMAT, "%s: duplicate key 'shape'", what);
            have_shape = true;
            if (!eat(&c, '('))
                return gbtd_error(GBTD_EFORMAT, "%s: 'shape' is not a tuple", what);
            int n = 0;
            bool comma_after_last = false;
            while (!eat(&c, ')')) {
                skip_ws(&c);
                if (c.p >= c.end || *c.p < '0' || *c.p > '9')
                    return gbtd_error(GBTD_EFORMAT, "%s: malformed 'shape' in the .npy header",
                                      what);
                int64_t v = 0;
                while (c.p < c.end && *c.p >= '0' && *c.p <= '9') {
                    if (__builtin_mul_overflow(v, 10, &v) ||
                        __builtin_add_overflow(v, (int64_t)(*c.p - '0'), &v))
                        return gbtd_error(GBTD_EOVERFLOW, "%s: shape entry overflows int64", what);
                    c.p++;
                }
                if (c.p < c.end && *c.p == 'L') c.p++; /* Python 2 long suffix */
                if (n == GBTD_IO_MAX_RANK)
                    return gbtd_error(GBTD_EUNSUPPORTED, "%s: more than %d dimensions", what,
                                      GBTD_IO_MAX_RANK);
                h->shape[n++] = v;
                comma_after_last = eat(&c, ',');
                if (!comma_after_last) {
                    if (!eat(&c, ')'))
                        return gbtd_error(GBTD_EFORMAT, "%s: malformed 'shape' in the .npy header",
                                          what);
                    break;
                }
            }
            if (n == 1 && !comma_after_last)
                return gbtd_error(GBTD_EFORMAT, "%s: 'shape' (%lld) is not a tuple", what,
                                  (long long)h->shape[0]);
            h->ndim = n;
        } else {
            return gbtd_error(GBTD_EFORMAT, "%s: unexpected key '%s' in the .npy header", what, key);
        }
        if (!eat(&c, ',')) {
            if (!eat(&c, '}'))
                return gbtd_error(GBTD_EFORMAT, "%s: malformed .npy header near offset %td", what,
                                  c.p - text);
            break;
        }
    }
    skip_ws(&c);
    if (c.p != c.end)
        return gbtd_error(GBTD_EFORMAT, "%s: trailing bytes after the .npy header dict", what);
    if (!have_descr || !have_order || !have_shape)
        return gbtd_error(GBTD_EFORMAT, "%s: .npy header lacks '%s'", what,
                          !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    h->dtype = descr_dtype(h->descr);
    if (h->dtype == GBTD_DTYPE_UNKNOWN) {
        if (h->descr[0] == '>')
            return gbtd_error(GBTD_EUNSUPPORTED,
                              "%s: big-endian dtype '%s' is not supported (save it as little-endian)",
                              what, h->descr);
        if (!strcmp(h->descr, "|O"))
            return gbtd_error(GBTD_EUNSUPPORTED, "%s: object arrays are not supported", what);
        return gbtd_error(GBTD_EUNSUPPORTED, "%s: dtype '%s' is not supported", what, h->descr);
    }
    int64_t numel = 1;
    for (int k = 0; k < h->ndim; k++)
        if (__builtin_mul_overflow(numel, h->shape[k], &numel))
            return gbtd_error(GBTD_EOVERFLOW, "%s: element count of the shape overflows", what);
    size_t bytes;
    if (__builtin_mul_overflow((size_t)numel, gbtd_dtype_size(h->dtype), &bytes) ||
        bytes > SIZE_MAX - h->data_offset)
        return gbtd_error(GBTD_EOVERFLOW, "%s: data size of the shape overflows", what);
    h->data_bytes = bytes;
    return GBTD_OK;
}

/* Open a .npy file, parse its header and check the file size. */
static int npy_open(const char *path, FILE **fpo, gbtd_npy_header *h)
{
    *fpo = NULL;
    if (path == NULL) return gbtd_error(GBTD_EINVAL, "npy: NULL path");
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) return gbtd_error(GBTD_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return gbtd_error(GBTD_EIO, "%s: not a regular file", path);
    }
    unsigned char pre[12];
    size_t n = fread(pre, 1, sizeof pre, fp);
    size_t hlen = 0, plen = 10;
    if (n >= 10 && pre[6] == 1) hlen = io_le16(pre + 8);
    else if (n >= 12 && (pre[6] == 2 || pre[6] == 3)) {
        hlen = io_le32(pre + 8);
        plen = 12;
    }
    if (hlen > NPY_MAX_HEADER) hlen = NPY_MAX_HEADER + 1; /* the parser reports it */
    size_t want = plen + hlen;
    if ((uint64_t)want > (uint64_t)st.st_size) want = (size_t)st.st_size;
    unsigned char *buf = gbtd_malloc(want > n ? want : n);
    if (buf == NULL) {
        fclose(fp);
        return GBTD_ENOMEM;
    }
    memcpy(buf, pre, n < want ? n : want);
    size_t got = n < want ? n : want;
    if (want > n) got += fread(buf + n, 1, want - n, fp);
    int rc = gbtd_npy_parse_header(buf, got, path, h);
    gbtd_free(buf);
    if (rc != GBTD_OK) {
        fclose(fp);
        return rc;
    }
    if ((uint64_t)st.st_size != (uint64_t)h->data_offset + h->data_bytes) {
        fclose(fp);
        return gbtd_error(GBTD_EFORMAT, "%s: file has %lld bytes but its header describes %zu "
                                        "(truncated or padded)",
                          path, (long long)st.st_size, h->data_offset + h->data_bytes);
    }
    if (fseek(fp, (long)h->data_offset, SEEK_SET) != 0) {
        fclose(fp);
        return gbtd_error(GBTD_EIO, "%s: seek failed", path);
    }
    *fpo = fp;
    return GBTD_OK;
}

static int npy_check_loadable(const char *path, const gbtd_npy_header *h, int max_modes)
{
    if (h->fortran_order)
        return gbtd_error(GBTD_EUNSUPPORTED,
                          "%s: Fortran-order arrays are not supported (save a C-order copy)", path);
    if (h->dtype != GBTD_DTYPE_F64 && h->dtype != GBTD_DTYPE_F32)
        return gbtd_error(GBTD_EUNSUPPORTED, "%s: dtype '%s' is not supported (only '<f8' and '<f4')",
                          path, h->descr);
    if (h->ndim > max_modes)
        return gbtd_error(GBTD_EUNSUPPORTED, "%s: %d dimensions, at most %d are supported", path,
                          h->ndim, max_modes);
    return GBTD_OK;
}

static int read_exact(FILE *fp, void *dst, size_t bytes, const char *path)
{
    if (bytes && fread(dst, 1, bytes, fp) != bytes)
        return gbtd_error(GBTD_EIO, "%s: read failed", path);
    return GBTD_OK;
}

int gbtd_npy_load(const char *path, gbtd_tensor *out, gbtd_dtype *stored)
{
    if (out == NULL) return gbtd_error(GBTD_EINVAL, "npy_load: NULL output");
    memset(out, 0, sizeof *out);
    FILE *fp;
    gbtd_npy_header h;
    GBTD_CHECK(npy_open(path, &fp, &h));
    int rc = npy_check_loadable(path, &h, GBTD_MAX_MODES);
    if (rc == GBTD_OK) rc = gbtd_tensor_alloc(out, h.ndim, h.shape);
    if (rc == GBTD_OK) {
        const int64_t n = gbtd_tensor_numel(out);
        if (h.dtype == GBTD_DTYPE_F64) {
            rc = read_exact(fp, out->data, h.data_bytes, path);
        } else {
            float *tmp = gbtd_malloc(h.data_bytes);
            if (tmp == NULL) rc = GBTD_ENOMEM;
            else {
                rc = read_exact(fp, tmp, h.data_bytes, path);
                if (rc == GBTD_OK) gbtd_dtype_to_double(GBTD_DTYPE_F32, tmp, n, out->data);
                gbtd_free(tmp);
            }
        }
    }
    fclose(fp);
    if (rc != GBTD_OK) gbtd_tensor_free(out);
    else if (stored) *stored = h.dtype;
    return rc;
}

int gbtd_npy_load_float(const char *path, int *ndim, int64_t *shape, float **data)
{
    if (ndim == NULL || shape == NULL || data == NULL)
        return gbtd_error(GBTD_EINVAL, "npy_load_float: NULL output");
    *data = NULL;
    FILE *fp;
    gbtd_npy_header h;
    GBTD_CHECK(npy_open(path, &fp, &h));
    int rc = npy_check_loadable(path, &h, GBTD_MAX_MODES);
    const size_t n = h.data_bytes / gbtd_dtype_size(h.dtype ? h.dtype : GBTD_DTYPE_F64);
    float *f = NULL;
    if (rc == GBTD_OK) {
        f = gbtd_malloc(n * sizeof(float));
        if (f == NULL) rc = GBTD_ENOMEM;
    }
    if (rc == GBTD_OK) {
        if (h.dtype == GBTD_DTYPE_F32) {
            rc = read_exact(fp, f, h.data_bytes, path);
        } else {
            double *tmp = gbtd_malloc(h.data_bytes);
            if (tmp == NULL) rc = GBTD_ENOMEM;
            else {
                rc = read_exact(fp, tmp, h.data_bytes, path);
                if (rc == GBTD_OK) gbtd_dtype_to_float(GBTD_DTYPE_F64, tmp, (int64_t)n, f);
                gbtd_free(tmp);
            }
        }
    }
    fclose(fp);
    if (rc != GBTD_OK) {
        gbtd_free(f);
        return rc;
    }
    *ndim = h.ndim;
    for (int k = 0; k < h.ndim; k++) shape[k] = h.shape[k];
    *data = f;
    return GBTD_OK;
}

int io_npy_make_header(gbtd_dtype dtype, int ndim, const int64_t *shape, unsigned char **buf,
                       size_t *len)
{
    const char *descr = dtype_descr(dtype);
    if (descr == NULL)
        return gbtd_error(GBTD_EUNSUPPORTED, "npy: dtype %s has no .npy equivalent",
                          gbtd_dtype_name(dtype));
    if (ndim < 0 || ndim > GBTD_IO_MAX_RANK) return gbtd_error(GBTD_EINVAL, "npy: bad ndim %d", ndim);
    char dict[64 + 24 * GBTD_IO_MAX_RANK];
    int pos = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                       descr);
    for (int k = 0; k < ndim; k++) {
        if (shape[k] < 0) return gbtd_error(GBTD_EINVAL, "npy: negative size in shape");
        pos += snprintf(dict + pos, sizeof dict - (size_t)pos, k ? ", %lld" : "%lld",
                        (long long)shape[k]);
    }
    pos += snprintf(dict + pos, sizeof dict - (size_t)pos, "%s), }", ndim == 1 ? "," : "");
    /* Pad with spaces so that preamble + header is a multiple of 64, then '\n'. */
    size_t total = ((10 + (size_t)pos + 1 + 63) / 64) * 64;
    unsigned char *b = gbtd_malloc(total);
    if (b == NULL) return GBTD_ENOMEM;
    memcpy(b, "\x93NUMPY\x01\x00", 8);
    io_put16(b + 8, (uint32_t)(total - 10));
    memcpy(b + 10, dict, (size_t)pos);
    memset(b + 10 + pos, ' ', total - 10 - (size_t)pos - 1);
    b[total - 1] = '\n';
    *buf = b;
    *len = total;
    return GBTD_OK;
}

/* Write header + data (already in row-major order of the stored dtype) through a temp file. */
static int npy_write(const char *path, gbtd_dtype dtype, int ndim, const int64_t *shape,
                     const void *data, size_t bytes)
{
    unsigned char *head;
    size_t hlen;
    GBTD_CHECK(io_npy_make_header(dtype, ndim, shape, &head, &hlen));
    char *tmp;
    FILE *fp;
    int rc = io_tmp_create(path, &tmp, &fp);
    if (rc != GBTD_OK) {
        gbtd_free(head);
        return rc;
    }
    size_t w = fwrite(head, 1, hlen, fp);
    if (bytes) w += fwrite(data, 1, bytes, fp);
    gbtd_free(head);
    rc = io_fclose_checked(fp, path);
    if (rc == GBTD_OK && w != hlen + bytes) rc = gbtd_error(GBTD_EIO, "%s: short write", path);
    if (rc != GBTD_OK) {
        io_tmp_abort(tmp);
        return rc;
    }
    return io_tmp_commit(tmp, path);
}

int gbtd_npy_save(const char *path, const gbtd_tensor *t, gbtd_dtype store_as)
{
    if (path == NULL || t == NULL || (t->data == NULL && gbtd_tensor_numel(t) > 0))
        return gbtd_error(GBTD_EINVAL, "npy_save: NULL argument");
    if (store_as != GBTD_DTYPE_F64 && store_as != GBTD_DTYPE_F32)
        return gbtd_error(GBTD_EUNSUPPORTED, "%s: can store tensors as float64 or float32 only",
                          path);
    const int64_t n = gbtd_tensor_numel(t);
    int rc;
    if (store_as == GBTD_DTYPE_F64 && gbtd_tensor_is_contiguous(t)) {
        rc = npy_write(path, store_as, t->ndim, t->shape, t->data, (size_t)n * 8);
    } else if (store_as == GBTD_DTYPE_F64) {
        gbtd_tensor c;
        GBTD_CHECK(gbtd_tensor_clone(&c, t));
        rc = npy_write(path, store_as, t->ndim, t->shape, c.data, (size_t)n * 8);
        gbtd_tensor_free(&c);
    } else {
        float *f = gbtd_calloc((size_t)n, sizeof(float));
        if (f == NULL) return GBTD_ENOMEM;
        gbtd_tensor_to_float(t, f);
        rc = npy_write(path, store_as, t->ndim, t->shape, f, (size_t)n * 4);
        gbtd_free(f);
    }
    return rc;
}

int gbtd_npy_save_float(const char *path, int ndim, const int64_t *shape, const float *data)
{
    if (path == NULL || (ndim > 0 && shape == NULL) || ndim < 0 || ndim > GBTD_MAX_MODES)
        return gbtd_error(GBTD_EINVAL, "npy_save_float: bad arguments");
    int64_t n;
    GBTD_CHECK(gbtd_prod_i64(shape, ndim, &n));
    if (n > 0 && data == NULL) return gbtd_error(GBTD_EINVAL, "npy_save_float: NULL data");
    size_t bytes;
    GBTD_CHECK(gbtd_mul_size((size_t)n, sizeof(float), &bytes));
    return npy_write(path, GBTD_DTYPE_F32, ndim, shape, data, bytes);
}

int io_npy_image_to_set(const unsigned char *img, size_t len, const char *what, const char *name,
                        gbtd_tensor_set *s)
{
    gbtd_npy_header h;
    GBTD_CHECK(gbtd_npy_parse_header(img, len, what, &h));
    if (h.fortran_order)
        return gbtd_error(GBTD_EUNSUPPORTED, "%s: Fortran-order arrays are not supported", what);
    if (h.ndim > GBTD_MAX_MODES)
        return gbtd_error(GBTD_EUNSUPPORTED, "%s: %d dimensions, at most %d are supported", what,
                          h.ndim, GBTD_MAX_MODES);
    if (len != h.data_offset + h.data_bytes)
        return gbtd_error(GBTD_EFORMAT, "%s: member has %zu bytes but its header describes %zu",
                          what, len, h.data_offset + h.data_bytes);
    return gbtd_tensor_set_add(s, name, h.dtype, h.ndim, h.shape, img + h.data_offset);
}
