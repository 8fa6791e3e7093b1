/* gbtd io: dtypes and conversions, attribute and descriptor lists, temporary files, format
 * detection and the format-independent listing. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io_internal.h"

/* ---- dtypes ------------------------------------------------------------------------------- */

const char *gbtd_dtype_name(gbtd_dtype t)
{
    switch (t) {
    case GBTD_DTYPE_F64: return "float64";
    case GBTD_DTYPE_F32: return "float32";
    case GBTD_DTYPE_F16: return "float16";
    case GBTD_DTYPE_BF16: return "bfloat16";
    case GBTD_DTYPE_I64: return "int64";
    case GBTD_DTYPE_I32: return "int32";
    case GBTD_DTYPE_I16: return "int16";
    case GBTD_DTYPE_I8: return "int8";
    case GBTD_DTYPE_U64: return "uint64";
    case GBTD_DTYPE_U32: return "uint32";
    case GBTD_DTYPE_U16: return "uint16";
    case GBTD_DTYPE_U8: return "uint8";
    case GBTD_DTYPE_BOOL: return "bool";
    default: return "unknown";
    }
}

size_t gbtd_dtype_size(gbtd_dtype t)
{
    switch (t) {
    case GBTD_DTYPE_F64:
    case GBTD_DTYPE_I64:
    case GBTD_DTYPE_U64: return 8;
    case GBTD_DTYPE_F32:
    case GBTD_DTYPE_I32:
    case GBTD_DTYPE_U32: return 4;
    case GBTD_DTYPE_F16:
    case GBTD_DTYPE_BF16:
    case GBTD_DTYPE_I16:
    case GBTD_DTYPE_U16: return 2;
    case GBTD_DTYPE_I8:
    case GBTD_DTYPE_U8:
    case GBTD_DTYPE_BOOL: return 1;
    default: return 0;
    }
}

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

uint16_t gbtd_float_to_bf16(float x)
{
    uint32_t u = f32_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even; overflows to Inf as it should */
    return (uint16_t)(u >> 16);
}

float gbtd_bf16_to_float(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t gbtd_float_to_f16(float x)
{
    const uint32_t u = f32_bits(x);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: Inf */
    if (a < 0x38800000u) {
        /* Result is subnormal (or zero): value / 2^-24 rounded to nearest even. */
        if (a < 0x33000000u) return sign; /* below half of the smallest subnormal */
        const int e = (int)(a >> 23);     /* biased exponent, 102..112 */
        const uint32_t m = (a & 0x7fffffu) | 0x800000u;
        const int shift = 126 - e; /* m * 2^(e-150) / 2^-24 = m >> (126 - e) */
        uint32_t q = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    /* Normal: rebias exponent 127 -> 15 and round the mantissa from 23 to 10 bits. */
    uint32_t r = a - 0x38000000u; /* (e - 112) << 23 | mantissa */
    const uint32_t low = r & 0x1fffu;
    r >>= 13;
    if (low > 0x1000u || (low == 0x1000u && (r & 1u))) r++;
    return (uint16_t)(sign | r);
}

float gbtd_f16_to_float(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        float v = ldexpf((float)m, -24);
        return sign ? -v : v;
    }
    if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

#define CONVERT_LOOP(T, DST_T)                                                                   \
    do {                                                                                          \
        const T *s_ = (const T *)src;                                                             \
        for (int64_t i = 0; i < n; i++) dst[i] = (DST_T)s_[i];                                    \
    } while (0)

int gbtd_dtype_to_double(gbtd_dtype t, const void *src, int64_t n, double *dst)
{
    if (n < 0 || (n > 0 && (src == NULL || dst == NULL)))
        return gbtd_error(GBTD_EINVAL, "dtype_to_double: bad arguments");
    const uint16_t *h = (const uint16_t *)src;
    switch (t) {
    case GBTD_DTYPE_F64: memcpy(dst, src, (size_t)n * 8); break;
    case GBTD_DTYPE_F32: CONVERT_LOOP(float, double); break;
    case GBTD_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = gbtd_f16_to_float(h[i]);
        break;
    case GBTD_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = gbtd_bf16_to_float(h[i]);
        break;
    case GBTD_DTYPE_I64: CONVERT_LOOP(int64_t, double); break;
    case GBTD_DTYPE_I32: CONVERT_LOOP(int32_t, double); break;
    case GBTD_DTYPE_I16: CONVERT_LOOP(int16_t, double); break;
    case GBTD_DTYPE_I8: CONVERT_LOOP(int8_t, double); break;
    case GBTD_DTYPE_U64: CONVERT_LOOP(uint64_t, double); break;
    case GBTD_DTYPE_U32: CONVERT_LOOP(uint32_t, double); break;
    case GBTD_DTYPE_U16: CONVERT_LOOP(uint16_t, double); break;
    case GBTD_DTYPE_U8: CONVERT_LOOP(uint8_t, double); break;
    case GBTD_DTYPE_BOOL: {
        const uint8_t *b = (const uint8_t *)src;
        for (int64_t i = 0; i < n; i++) dst[i] = b[i] ? 1.0 : 0.0;
        break;
    }
    default: return gbtd_error(GBTD_EUNSUPPORTED, "cannot convert dtype %s to numbers",
                               gbtd_dtype_name(t));
    }
    return GBTD_OK;
}

int gbtd_dtype_to_float(gbtd_dtype t, const void *src, int64_t n, float *dst)
{
    if (n < 0 || (n > 0 && (src == NULL || dst == NULL)))
        return gbtd_error(GBTD_EINVAL, "dtype_to_float: bad arguments");
    const uint16_t *h = (const uint16_t *)src;
    switch (t) {
    case GBTD_DTYPE_F64: CONVERT_LOOP(double, float); break;
    case GBTD_DTYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case GBTD_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = gbtd_f16_to_float(h[i]);
        break;
    case GBTD_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = gbtd_bf16_to_float(h[i]);
        break;
    case GBTD_DTYPE_I64: CONVERT_LOOP(int64_t, float); break;
    case GBTD_DTYPE_I32: CONVERT_LOOP(int32_t, float); break;
    case GBTD_DTYPE_I16: CONVERT_LOOP(int16_t, float); break;
    case GBTD_DTYPE_I8: CONVERT_LOOP(int8_t, float); break;
    case GBTD_DTYPE_U64: CONVERT_LOOP(uint64_t, float); break;
    case GBTD_DTYPE_U32: CONVERT_LOOP(uint32_t, float); break;
    case GBTD_DTYPE_U16: CONVERT_LOOP(uint16_t, float); break;
    case GBTD_DTYPE_U8: CONVERT_LOOP(uint8_t, float); break;
    case GBTD_DTYPE_BOOL: {
        const uint8_t *b = (const uint8_t *)src;
        for (int64_t i = 0; i < n; i++) dst[i] = b[i] ? 1.0f : 0.0f;
        break;
    }
    default: return gbtd_error(GBTD_EUNSUPPORTED, "cannot convert dtype %s to numbers",
                               gbtd_dtype_name(t));
    }
    return GBTD_OK;
}

/* ---- small helpers ------------------------------------------------------------------------- */

char *io_strndup(const char *s, size_t n)
{
    char *p = gbtd_malloc(n + 1);
    if (p == NULL) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *io_strdup(const char *s) { return io_strndup(s, strlen(s)); }

const char *io_basename(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

int io_tmp_create(const char *path, char **tmp_path, FILE **fp)
{
    *tmp_path = NULL;
    if (fp) *fp = NULL;
    const size_t n = strlen(path);
    char *t = gbtd_malloc(n + 12);
    if (t == NULL) return GBTD_ENOMEM;
    memcpy(t, path, n);
    memcpy(t + n, ".tmpXXXXXX", 11);
    int fd = mkstemp(t);
    if (fd < 0) {
        int e = errno;
        gbtd_free(t);
        return gbtd_error(GBTD_EIO, "%s: cannot create a temporary file beside it: %s", path,
                          strerror(e));
    }
    struct stat st;
    mode_t mode = (stat(path, &st) == 0) ? (st.st_mode & 07777) : 0644;
    (void)fchmod(fd, mode);
    if (fp) {
        *fp = fdopen(fd, "wb");
        if (*fp == NULL) {
            int e = errno;
            close(fd);
            unlink(t);
            gbtd_free(t);
            return gbtd_error(GBTD_EIO, "%s: cannot open a temporary file: %s", path, strerror(e));
        }
    } else {
        close(fd);
    }
    *tmp_path = t;
    return GBTD_OK;
}

int io_tmp_commit(char *tmp_path, const char *path)
{
    if (rename(tmp_path, path) != 0) {
        int e = errno;
        unlink(tmp_path);
        gbtd_free(tmp_path);
        return gbtd_error(GBTD_EIO, "%s: cannot rename the finished temporary file into place: %s",
                          path, strerror(e));
    }
    gbtd_free(tmp_path);
    return GBTD_OK;
}

void io_tmp_abort(char *tmp_path)
{
    if (tmp_path == NULL) return;
    unlink(tmp_path);
    gbtd_free(tmp_path);
}

int io_fclose_checked(FILE *fp, const char *path)
{
    int bad = ferror(fp);
    if (fclose(fp) != 0 || bad)
        return gbtd_error(GBTD_EIO, "%s: write failed: %s", path, strerror(errno));
    return GBTD_OK;
}

int io_read_file(const char *path, size_t max, unsigned char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) return gbtd_error(GBTD_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return gbtd_error(GBTD_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > (uint64_t)max) {
        fclose(fp);
        return gbtd_error(GBTD_EFORMAT, "%s: file of %lld bytes is larger than the limit of %zu",
                          path, (long long)st.st_size, max);
    }
    const size_t n = (size_t)st.st_size;
    unsigned char *b = gbtd_malloc(n);
    if (b == NULL) {
        fclose(fp);
        return GBTD_ENOMEM;
    }
    if (n > 0 && fread(b, 1, n, fp) != n) {
        fclose(fp);
        gbtd_free(b);
        return gbtd_error(GBTD_EIO, "%s: read failed", path);
    }
    fclose(fp);
    *buf = b;
    *len = n;
    return GBTD_OK;
}

/* ---- descriptor lists ---------------------------------------------------------------------- */

void gbtd_tensor_desc_list_free(gbtd_tensor_desc_list *l)
{
    if (l == NULL) return;
    for (int i = 0; i < l->count; i++) gbtd_free(l->items[i].name);
    gbtd_free(l->items);
    memset(l, 0, sizeof *l);
}

int io_desc_push(gbtd_tensor_desc_list *l, const char *name, gbtd_dtype dtype, const char *dtype_str,
                 int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > GBTD_IO_MAX_RANK)
        return gbtd_error(GBTD_EUNSUPPORTED, "%s: %d dimensions", name, ndim);
    if (l->count == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        gbtd_tensor_desc *p = gbtd_calloc((size_t)cap, sizeof *p);
        if (p == NULL) return GBTD_ENOMEM;
        if (l->count) memcpy(p, l->items, (size_t)l->count * sizeof *p);
        gbtd_free(l->items);
        l->items = p;
        l->cap = cap;
    }
    gbtd_tensor_desc *d = &l->items[l->count];
    memset(d, 0, sizeof *d);
    d->name = io_strdup(name);
    if (d->name == NULL) return GBTD_ENOMEM;
    d->dtype = dtype;
    snprintf(d->dtype_str, sizeof d->dtype_str, "%s",
             dtype == GBTD_DTYPE_UNKNOWN && dtype_str ? dtype_str : gbtd_dtype_name(dtype));
    d->ndim = ndim;
    int64_t n = 1;
    bool overflow = false;
    for (int k = 0; k < ndim; k++) {
        d->shape[k] = shape[k];
        if (__builtin_mul_overflow(n, shape[k], &n)) overflow = true;
    }
    int64_t bytes = 0;
    if (overflow || __builtin_mul_overflow(n, (int64_t)gbtd_dtype_size(dtype), &bytes)) bytes = -1;
    d->bytes = bytes;
    l->count++;
    return GBTD_OK;
}

/* ---- attribute lists ----------------------------------------------------------------------- */

static void attr_clear(gbtd_attr *a)
{
    gbtd_free(a->name);
    gbtd_free(a->ints);
    gbtd_free(a->reals);
    if (a->strs)
        for (int64_t i = 0; i < a->count; i++) gbtd_free(a->strs[i]);
    gbtd_free(a->strs);
    memset(a, 0, sizeof *a);
}

void gbtd_attr_list_free(gbtd_attr_list *l)
{
    if (l == NULL) return;
    for (int i = 0; i < l->count; i++) attr_clear(&l->items[i]);
    gbtd_free(l->items);
    memset(l, 0, sizeof *l);
}

const gbtd_attr *gbtd_attr_list_find(const gbtd_attr_list *l, const char *name)
{
    if (l == NULL || name == NULL) return NULL;
    for (int i = 0; i < l->count; i++)
        if (!strcmp(l->items[i].name, name)) return &l->items[i];
    return NULL;
}

/* Build an attribute in *a (fully or not at all), then put it in the list. */
static int attr_put(gbtd_attr_list *l, gbtd_attr *a)
{
    for (int i = 0; i < l->count; i++)
        if (!strcmp(l->items[i].name, a->name)) {
            attr_clear(&l->items[i]);
            l->items[i] = *a;
            return GBTD_OK;
        }
    if (l->count == l->cap) {
        int cap = l->cap ? 2 * l->cap : 8;
        gbtd_attr *p = gbtd_calloc((size_t)cap, sizeof *p);
        if (p == NULL) {
            attr_clear(a);
            return GBTD_ENOMEM;
        }
        if (l->count) memcpy(p, l->items, (size_t)l->count * sizeof *p);
        gbtd_free(l->items);
        l->items = p;
        l->cap = cap;
    }
    l->items[l->count++] = *a;
    return GBTD_OK;
}

static int attr_new(gbtd_attr *a, const char *name, gbtd_attr_kind kind, int64_t n, bool array)
{
    memset(a, 0, sizeof *a);
    if (name == NULL || n < 0 || (!array && n != 1))
        return gbtd_error(GBTD_EINVAL, "attribute: bad name or count");
    a->name = io_strdup(name);
    if (a->name == NULL) return GBTD_ENOMEM;
    a->kind = kind;
    a->count = n;
    a->is_array = array;
    size_t esz = kind == GBTD_ATTR_INT ? sizeof(int64_t)
                 : kind == GBTD_ATTR_REAL ? sizeof(double)
                                          : sizeof(char *);
    void *p = gbtd_calloc((size_t)(n ? n : 1), esz);
    if (p == NULL) {
        attr_clear(a);
        return GBTD_ENOMEM;
    }
    if (kind == GBTD_ATTR_INT) a->ints = p;
    else if (kind == GBTD_ATTR_REAL) a->reals = p;
    else a->strs = p;
    return GBTD_OK;
}

int gbtd_attr_list_set_ints(gbtd_attr_list *l, const char *name, const int64_t *v, int64_t n)
{
    gbtd_attr a;
    GBTD_CHECK(attr_new(&a, name, GBTD_ATTR_INT, n, true));
    if (n) memcpy(a.ints, v, (size_t)n * sizeof *v);
    return attr_put(l, &a);
}

int gbtd_attr_list_set_reals(gbtd_attr_list *l, const char *name, const double *v, int64_t n)
{
    gbtd_attr a;
    GBTD_CHECK(attr_new(&a, name, GBTD_ATTR_REAL, n, true));
    if (n) memcpy(a.reals, v, (size_t)n * sizeof *v);
    return attr_put(l, &a);
}

static int set_strings(gbtd_attr_list *l, const char *name, const char *const *v, int64_t n,
                       bool array)
{
    gbtd_attr a;
    GBTD_CHECK(attr_new(&a, name, GBTD_ATTR_STRING, n, array));
    for (int64_t i = 0; i < n; i++) {
        a.strs[i] = io_strdup(v[i] ? v[i] : "");
        if (a.strs[i] == NULL) {
            attr_clear(&a);
            return GBTD_ENOMEM;
        }
    }
    return attr_put(l, &a);
}

int gbtd_attr_list_set_strings(gbtd_attr_list *l, const char *name, const char *const *v,
                               int64_t n)
{
    return set_strings(l, name, v, n, true);
}

int gbtd_attr_list_set_int(gbtd_attr_list *l, const char *name, int64_t value)
{
    gbtd_attr a;
    GBTD_CHECK(attr_new(&a, name, GBTD_ATTR_INT, 1, false));
    a.ints[0] = value;
    return attr_put(l, &a);
}

int gbtd_attr_list_set_real(gbtd_attr_list *l, const char *name, double value)
{
    gbtd_attr a;
    GBTD_CHECK(attr_new(&a, name, GBTD_ATTR_REAL, 1, false));
    a.reals[0] = value;
    return attr_put(l, &a);
}

int gbtd_attr_list_set_string(gbtd_attr_list *l, const char *name, const char *value)
{
    return set_strings(l, name, &value, 1, false);
}

/* Move every item of src into dst (same-name items replaced), all or nothing: src is emptied
 * either way. */
int io_attr_list_merge(gbtd_attr_list *dst, gbtd_attr_list *src)
{
    int rc = GBTD_OK;
    if (dst->count + src->count > dst->cap) {
        int cap = dst->count + src->count;
        gbtd_attr *p = gbtd_calloc((size_t)cap, sizeof *p);
        if (p == NULL) {
            gbtd_attr_list_free(src);
            return GBTD_ENOMEM;
        }
        if (dst->count) memcpy(p, dst->items, (size_t)dst->count * sizeof *p);
        gbtd_free(dst->items);
        dst->items = p;
        dst->cap = cap;
    }
    for (int i = 0; i < src->count; i++) attr_put(dst, &src->items[i]); /* cannot fail now */
    gbtd_free(src->items);
    memset(src, 0, sizeof *src);
    return rc;
}

int gbtd_attr_list_copy(gbtd_attr_list *dst, const gbtd_attr_list *src)
{
    if (src == NULL) return GBTD_OK;
    if (dst == NULL) return gbtd_error(GBTD_EINVAL, "attr_list_copy: NULL destination");
    gbtd_attr_list tmp;
    memset(&tmp, 0, sizeof tmp);
    for (int i = 0; i < src->count; i++) {
        const gbtd_attr *a = &src->items[i];
        gbtd_attr b;
        int rc = attr_new(&b, a->name, a->kind, a->count, a->is_array);
        if (rc == GBTD_OK && a->kind == GBTD_ATTR_INT && a->count)
            memcpy(b.ints, a->ints, (size_t)a->count * sizeof(int64_t));
        else if (rc == GBTD_OK && a->kind == GBTD_ATTR_REAL && a->count)
            memcpy(b.reals, a->reals, (size_t)a->count * sizeof(double));
        else if (rc == GBTD_OK && a->kind == GBTD_ATTR_STRING)
            for (int64_t k = 0; k < a->count && rc == GBTD_OK; k++)
                if ((b.strs[k] = io_strdup(a->strs[k])) == NULL) {
                    attr_clear(&b);
                    rc = GBTD_ENOMEM;
                }
        if (rc == GBTD_OK) rc = attr_put(&tmp, &b);
        if (rc != GBTD_OK) {
            gbtd_attr_list_free(&tmp);
            return rc;
        }
    }
    return io_attr_list_merge(dst, &tmp);
}

/* ---- formats ------------------------------------------------------------------------------- */

const char *gbtd_file_format_name(gbtd_file_format f)
{
    switch (f) {
    case GBTD_FORMAT_HDF5: return "hdf5";
    case GBTD_FORMAT_NPY: return "npy";
    case GBTD_FORMAT_NPZ: return "npz";
    case GBTD_FORMAT_SAFETENSORS: return "safetensors";
    default: return "unknown";
    }
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

int gbtd_file_format_detect(const char *path, gbtd_file_format *out)
{
    *out = GBTD_FORMAT_UNKNOWN;
    if (path == NULL) return gbtd_error(GBTD_EINVAL, "file_format_detect: NULL path");
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) return gbtd_error(GBTD_EIO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char b[16] = {0};
    size_t n = fread(b, 1, sizeof b, fp);
    fclose(fp);
    static const unsigned char h5sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    if (n >= 8 && !memcmp(b, h5sig, 8)) *out = GBTD_FORMAT_HDF5;
    else if (n >= 6 && !memcmp(b, "\x93NUMPY", 6)) *out = GBTD_FORMAT_NPY;
    else if (n >= 4 && (!memcmp(b, "PK\x03\x04", 4) || !memcmp(b, "PK\x05\x06", 4)))
        *out = GBTD_FORMAT_NPZ;
    else if (n >= 9 && b[8] == '{') *out = GBTD_FORMAT_SAFETENSORS;
    else if (ends_with(path, ".h5") || ends_with(path, ".hdf5")) *out = GBTD_FORMAT_HDF5;
    else if (ends_with(path, ".npy")) *out = GBTD_FORMAT_NPY;
    else if (ends_with(path, ".npz")) *out = GBTD_FORMAT_NPZ;
    else if (ends_with(path, ".safetensors")) *out = GBTD_FORMAT_SAFETENSORS;
    else
        return gbtd_error(GBTD_EFORMAT,
                          "%s: not a known tensor file (HDF5, .npy, .npz or safetensors)", path);
    return GBTD_OK;
}

static int list_set(gbtd_tensor_set *s, gbtd_tensor_desc_list *out)
{
    for (int i = 0; i < s->count; i++) {
        const gbtd_named_tensor *t = &s->items[i];
        GBTD_CHECK(io_desc_push(out, t->name, t->dtype, NULL, t->ndim, t->shape));
    }
    return GBTD_OK;
}

int gbtd_io_list(const char *path, gbtd_file_format *format, gbtd_tensor_desc_list *out)
{
    gbtd_file_format f;
    memset(out, 0, sizeof *out);
    if (format) *format = GBTD_FORMAT_UNKNOWN;
    GBTD_CHECK(gbtd_file_format_detect(path, &f));
    if (format) *format = f;
    int rc = GBTD_OK;
    gbtd_tensor_set s;
    memset(&s, 0, sizeof s);
    switch (f) {
    case GBTD_FORMAT_HDF5: {
        gbtd_h5 *h;
        rc = gbtd_h5_open(path, &h);
        if (rc == GBTD_OK) {
            rc = gbtd_h5_list(h, out);
            gbtd_h5_close(h);
        }
        break;
    }
    case GBTD_FORMAT_NPY: {
        FILE *fp = fopen(path, "rb");
        if (fp == NULL) return gbtd_error(GBTD_EIO, "%s: cannot open: %s", path, strerror(errno));
        unsigned char head[4096];
        size_t n = fread(head, 1, sizeof head, fp);
        struct stat st;
        int ok = fstat(fileno(fp), &st) == 0;
        fclose(fp);
        if (!ok) return gbtd_error(GBTD_EIO, "%s: cannot stat", path);
        gbtd_npy_header h;
        /* The header may be longer than 4096 bytes: then the full file is parsed by load. */
        rc = gbtd_npy_parse_header(head, n, path, &h);
        if (rc == GBTD_EFORMAT && n == sizeof head) {
            unsigned char *buf;
            size_t len;
            GBTD_CHECK(io_read_file(path, (size_t)1 << 40, &buf, &len));
            rc = gbtd_npy_parse_header(buf, len, path, &h);
            gbtd_free(buf);
        }
        if (rc == GBTD_EUNSUPPORTED) {
            /* Listing is lenient: show what the header says even when loading would refuse. */
            return rc;
        }
        if (rc != GBTD_OK) return rc;
        if ((uint64_t)st.st_size != (uint64_t)h.data_offset + h.data_bytes)
            return gbtd_error(GBTD_EFORMAT,
                              "%s: file has %lld bytes, the header describes %zu",
                              path, (long long)st.st_size, h.data_offset + h.data_bytes);
        rc = io_desc_push(out, io_basename(path), h.dtype, h.descr, h.ndim, h.shape);
        break;
    }
    case GBTD_FORMAT_NPZ:
        rc = gbtd_npz_read(path, &s);
        if (rc == GBTD_OK) rc = list_set(&s, out);
        break;
    case GBTD_FORMAT_SAFETENSORS:
        rc = gbtd_safetensors_read(path, &s);
        if (rc == GBTD_OK) rc = list_set(&s, out);
        break;
    default: rc = gbtd_error(GBTD_EFORMAT, "%s: unknown format", path);
    }
    gbtd_tensor_set_free(&s);
    if (rc != GBTD_OK) gbtd_tensor_desc_list_free(out);
    return rc;
}
