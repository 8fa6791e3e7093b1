/* gbtd io: HDF5 through the C API. Every entry point switches the HDF5 error printer off, so
 * the library stays silent; failures are reported with the innermost HDF5 error message. */
#include <errno.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/io_internal.h"

struct gbtd_h5 {
    hid_t fid;
    char *path; /* destination path (for messages and the final rename) */
    char *tmp;  /* writers: the temporary file being written, else NULL */
};

static void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

struct h5_walk {
    char msg[200];
};

static herr_t h5_walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    struct h5_walk *w = data;
    /* Walking upward, the first entry is the innermost (most specific) error. */
    if (n == 0 && e->desc) snprintf(w->msg, sizeof w->msg, "%s", e->desc);
    return 0;
}

/* Record a failure with the innermost HDF5 message appended, then clear the HDF5 stack. */
static int h5_fail(int status, const char *path, const char *what, const char *name)
{
    struct h5_walk w;
    w.msg[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, h5_walk_cb, &w);
    H5Eclear2(H5E_DEFAULT);
    return gbtd_error(status, "%s: %s%s%s%s%s%s", path, what, name ? " '" : "", name ? name : "",
                      name ? "'" : "", w.msg[0] ? ": " : "", w.msg);
}

static int h5_check(gbtd_h5 *f, const char *name, bool need_name)
{
    h5_quiet();
    if (f == NULL || f->fid < 0) return gbtd_error(GBTD_EINVAL, "hdf5: NULL or closed file handle");
    if (need_name && (name == NULL || name[0] == '\0' || !strcmp(name, "/")))
        return gbtd_error(GBTD_EINVAL, "%s: empty dataset name", f->path);
    return GBTD_OK;
}

static int h5_handle(const char *path, hid_t fid, char *tmp, gbtd_h5 **out)
{
    gbtd_h5 *f = gbtd_calloc(1, sizeof *f);
    char *p = io_strdup(path);
    if (f == NULL || p == NULL) {
        gbtd_free(f);
        gbtd_free(p);
        H5Fclose(fid);
        io_tmp_abort(tmp);
        return GBTD_ENOMEM;
    }
    f->fid = fid;
    f->path = p;
    f->tmp = tmp;
    *out = f;
    return GBTD_OK;
}

int gbtd_h5_open(const char *path, gbtd_h5 **out)
{
    h5_quiet();
    if (out) *out = NULL;
    if (path == NULL || out == NULL) return gbtd_error(GBTD_EINVAL, "h5_open: NULL argument");
    struct stat st;
    if (stat(path, &st) != 0) return gbtd_error(GBTD_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return gbtd_error(GBTD_EIO, "%s: not a regular file", path);
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return gbtd_error(GBTD_EFORMAT, "%s: not an HDF5 file (no HDF5 signature)", path);
    }
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (fid < 0) return h5_fail(GBTD_EFORMAT, path, "cannot open as HDF5 (corrupt or truncated)", NULL);
    return h5_handle(path, fid, NULL, out);
}

int gbtd_h5_create(const char *path, gbtd_h5 **out)
{
    h5_quiet();
    if (out) *out = NULL;
    if (path == NULL || out == NULL) return gbtd_error(GBTD_EINVAL, "h5_create: NULL argument");
    char *tmp;
    GBTD_CHECK(io_tmp_create(path, &tmp, NULL));
    hid_t fid = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (fid < 0) {
        io_tmp_abort(tmp);
        return h5_fail(GBTD_EIO, path, "cannot create an HDF5 file", NULL);
    }
    return h5_handle(path, fid, tmp, out);
}

static int copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb");
    if (in == NULL) return gbtd_error(GBTD_EIO, "%s: cannot open: %s", src, strerror(errno));
    FILE *o = fopen(dst, "wb");
    if (o == NULL) {
        fclose(in);
        return gbtd_error(GBTD_EIO, "%s: cannot write: %s", dst, strerror(errno));
    }
    char buf[1 << 16];
    size_t n;
    int ok = 1;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, o) != n) ok = 0;
    if (ferror(in)) ok = 0;
    fclose(in);
    int rc = io_fclose_checked(o, dst);
    if (rc == GBTD_OK && !ok) rc = gbtd_error(GBTD_EIO, "%s: copy failed", src);
    return rc;
}

int gbtd_h5_open_append(const char *path, gbtd_h5 **out)
{
    h5_quiet();
    if (out) *out = NULL;
    if (path == NULL || out == NULL) return gbtd_error(GBTD_EINVAL, "h5_open_append: NULL argument");
    struct stat st;
    if (stat(path, &st) != 0) return gbtd_h5_create(path, out);
    if (H5Fis_hdf5(path) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return gbtd_error(GBTD_EFORMAT, "%s: not an HDF5 file (no HDF5 signature)", path);
    }
    char *tmp;
    GBTD_CHECK(io_tmp_create(path, &tmp, NULL));
    int rc = copy_file(path, tmp);
    if (rc != GBTD_OK) {
        io_tmp_abort(tmp);
        return rc;
    }
    hid_t fid = H5Fopen(tmp, H5F_ACC_RDWR, H5P_DEFAULT);
    if (fid < 0) {
        rc = h5_fail(GBTD_EFORMAT, path, "cannot open as HDF5 (corrupt or truncated)", NULL);
        io_tmp_abort(tmp);
        return rc;
    }
    return h5_handle(path, fid, tmp, out);
}

int gbtd_h5_close(gbtd_h5 *f)
{
    h5_quiet();
    if (f == NULL) return GBTD_OK;
    int rc = GBTD_OK;
    if (H5Fclose(f->fid) < 0) rc = h5_fail(GBTD_EIO, f->path, "closing the file failed", NULL);
    if (f->tmp) {
        if (rc == GBTD_OK) rc = io_tmp_commit(f->tmp, f->path);
        else io_tmp_abort(f->tmp);
    }
    gbtd_free(f->path);
    gbtd_free(f);
    return rc;
}

void gbtd_h5_discard(gbtd_h5 *f)
{
    h5_quiet();
    if (f == NULL) return;
    H5Fclose(f->fid);
    H5Eclear2(H5E_DEFAULT);
    io_tmp_abort(f->tmp);
    gbtd_free(f->path);
    gbtd_free(f);
}

/* ---- names --------------------------------------------------------------------------------- */

/* True when every component of `name` exists as a link (H5Lexists fails on missing parents). */
static bool h5_link_exists(hid_t fid, const char *name)
{
    size_t n = strlen(name);
    char buf[1024];
    if (n >= sizeof buf) return false;
    memcpy(buf, name, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if ((buf[i] != '/' && buf[i] != '\0') || buf[i - 1] == '/') continue;
        const char saved = buf[i];
        buf[i] = '\0';
        htri_t e = H5Lexists(fid, buf, H5P_DEFAULT);
        buf[i] = saved;
        if (e <= 0) {
            H5Eclear2(H5E_DEFAULT);
            return false;
        }
    }
    return true;
}

static int h5_object_type(hid_t fid, const char *name, H5O_type_t *type)
{
    if (!h5_link_exists(fid, name)) return GBTD_ENOTFOUND;
    H5O_info_t info;
    if (H5Oget_info_by_name2(fid, name, &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0) {
        H5Eclear2(H5E_DEFAULT);
        return GBTD_ENOTFOUND; /* dangling soft link, for instance */
    }
    *type = info.type;
    return GBTD_OK;
}

bool gbtd_h5_has_dataset(gbtd_h5 *f, const char *name)
{
    if (h5_check(f, name, true) != GBTD_OK) return false;
    H5O_type_t t;
    return h5_object_type(f->fid, name, &t) == GBTD_OK && t == H5O_TYPE_DATASET;
}

static int h5_open_dataset(gbtd_h5 *f, const char *name, hid_t *dset)
{
    H5O_type_t t;
    if (h5_object_type(f->fid, name, &t) != GBTD_OK)
        return gbtd_error(GBTD_ENOTFOUND, "%s: no dataset '%s'", f->path, name);
    if (t != H5O_TYPE_DATASET)
        return gbtd_error(GBTD_ENOTFOUND, "%s: '%s' is a group, not a dataset", f->path, name);
    *dset = H5Dopen2(f->fid, name, H5P_DEFAULT);
    if (*dset < 0) return h5_fail(GBTD_EFORMAT, f->path, "cannot open dataset", name);
    return GBTD_OK;
}

/* ---- dtypes ---------------------------------------------------------------------------------- */

static gbtd_dtype h5_dtype(hid_t tid, char *str, size_t len)
{
    H5T_class_t cls = H5Tget_class(tid);
    size_t size = H5Tget_size(tid);
    if (str) snprintf(str, len, "other");
    if (cls == H5T_FLOAT) {
        if (size == 8) return GBTD_DTYPE_F64;
        if (size == 4) return GBTD_DTYPE_F32;
        if (size == 2) return GBTD_DTYPE_F16;
        if (str) snprintf(str, len, "float%zu", 8 * size);
    } else if (cls == H5T_INTEGER) {
        bool sgn = H5Tget_sign(tid) == H5T_SGN_2;
        switch (size) {
        case 8: return sgn ? GBTD_DTYPE_I64 : GBTD_DTYPE_U64;
        case 4: return sgn ? GBTD_DTYPE_I32 : GBTD_DTYPE_U32;
        case 2: return sgn ? GBTD_DTYPE_I16 : GBTD_DTYPE_U16;
        case 1: return sgn ? GBTD_DTYPE_I8 : GBTD_DTYPE_U8;
        default: break;
        }
    } else if (str) {
        const char *n = cls == H5T_STRING     ? "string"
                        : cls == H5T_COMPOUND ? "compound"
                        : cls == H5T_ENUM     ? "enum"
                        : cls == H5T_ARRAY    ? "array"
                        : cls == H5T_VLEN     ? "vlen"
                        : cls == H5T_OPAQUE   ? "opaque"
                        : cls == H5T_REFERENCE ? "reference"
                                              : "other";
        snprintf(str, len, "%s", n);
    }
    H5Eclear2(H5E_DEFAULT);
    return GBTD_DTYPE_UNKNOWN;
}

/* Shape and dtype of an open dataset. */
static int h5_describe(gbtd_h5 *f, const char *name, hid_t dset, gbtd_dtype *dtype, char *dstr,
                       size_t dlen, int *ndim, int64_t *shape, int max_rank)
{
    hid_t sp = H5Dget_space(dset), tid = H5Dget_type(dset);
    int rc = GBTD_OK;
    if (sp < 0 || tid < 0) {
        rc = h5_fail(GBTD_EFORMAT, f->path, "cannot read the shape or type of", name);
        goto done;
    }
    *dtype = h5_dtype(tid, dstr, dlen);
    H5S_class_t sc = H5Sget_simple_extent_type(sp);
    if (sc == H5S_NULL) {
        rc = gbtd_error(GBTD_EUNSUPPORTED, "%s: dataset '%s' has a null dataspace", f->path, name);
        goto done;
    }
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd < 0) {
        rc = h5_fail(GBTD_EFORMAT, f->path, "cannot read the shape of", name);
        goto done;
    }
    if (nd > max_rank) {
        rc = gbtd_error(GBTD_EUNSUPPORTED, "%s: dataset '%s' has %d dimensions, at most %d are "
                                           "supported", f->path, name, nd, max_rank);
        goto done;
    }
    hsize_t dims[H5S_MAX_RANK];
    H5Sget_simple_extent_dims(sp, dims, NULL);
    for (int k = 0; k < nd; k++) {
        if (dims[k] > (hsize_t)INT64_MAX) {
            rc = gbtd_error(GBTD_EOVERFLOW, "%s: dataset '%s' is too large", f->path, name);
            goto done;
        }
        shape[k] = (int64_t)dims[k];
    }
    *ndim = nd;
done:
    if (sp >= 0) H5Sclose(sp);
    if (tid >= 0) H5Tclose(tid);
    return rc;
}

/* ---- reading --------------------------------------------------------------------------------- */

/* Open a numeric dataset of at most GBTD_MAX_MODES modes and describe it. */
static int h5_open_numeric(gbtd_h5 *f, const char *name, hid_t *dset, gbtd_dtype *dtype, int *ndim,
                           int64_t *shape)
{
    GBTD_CHECK(h5_open_dataset(f, name, dset));
    char dstr[24];
    int rc = h5_describe(f, name, *dset, dtype, dstr, sizeof dstr, ndim, shape, GBTD_MAX_MODES);
    if (rc == GBTD_OK && *dtype == GBTD_DTYPE_UNKNOWN)
        rc = gbtd_error(GBTD_EUNSUPPORTED, "%s: dataset '%s' holds %s values, not numbers", f->path,
                        name, dstr);
    if (rc != GBTD_OK) H5Dclose(*dset);
    return rc;
}

int gbtd_h5_read_tensor(gbtd_h5 *f, const char *name, gbtd_tensor *out, gbtd_dtype *stored)
{
    if (out) memset(out, 0, sizeof *out);
    GBTD_CHECK(h5_check(f, name, true));
    if (out == NULL) return gbtd_error(GBTD_EINVAL, "h5_read_tensor: NULL output");
    hid_t dset;
    gbtd_dtype dt;
    int nd;
    int64_t shape[GBTD_MAX_MODES];
    GBTD_CHECK(h5_open_numeric(f, name, &dset, &dt, &nd, shape));
    int rc = gbtd_tensor_alloc(out, nd, shape);
    if (rc == GBTD_OK && gbtd_tensor_numel(out) > 0 &&
        H5Dread(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out->data) < 0)
        rc = h5_fail(GBTD_EFORMAT, f->path, "cannot read dataset", name);
    H5Dclose(dset);
    if (rc != GBTD_OK) gbtd_tensor_free(out);
    else if (stored) *stored = dt;
    return rc;
}

int gbtd_h5_read_float(gbtd_h5 *f, const char *name, int *ndim, int64_t *shape, float **data)
{
    if (data) *data = NULL;
    GBTD_CHECK(h5_check(f, name, true));
    if (ndim == NULL || shape == NULL || data == NULL)
        return gbtd_error(GBTD_EINVAL, "h5_read_float: NULL output");
    hid_t dset;
    gbtd_dtype dt;
    int nd;
    int64_t sh[GBTD_MAX_MODES], n;
    GBTD_CHECK(h5_open_numeric(f, name, &dset, &dt, &nd, sh));
    int rc = gbtd_prod_i64(sh, nd, &n);
    float *buf = NULL;
    if (rc == GBTD_OK) {
        buf = gbtd_calloc((size_t)n, sizeof(float));
        if (buf == NULL) rc = GBTD_ENOMEM;
    }
    if (rc == GBTD_OK && n > 0 &&
        H5Dread(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        rc = h5_fail(GBTD_EFORMAT, f->path, "cannot read dataset", name);
    H5Dclose(dset);
    if (rc != GBTD_OK) {
        gbtd_free(buf);
        return rc;
    }
    *ndim = nd;
    for (int k = 0; k < nd; k++) shape[k] = sh[k];
    *data = buf;
    return GBTD_OK;
}

int gbtd_h5_read_float_into(gbtd_h5 *f, const char *name, int ndim, const int64_t *shape,
                            float *data)
{
    GBTD_CHECK(h5_check(f, name, true));
    if ((ndim > 0 && shape == NULL) || ndim < 0 || ndim > GBTD_MAX_MODES)
        return gbtd_error(GBTD_EINVAL, "h5_read_float_into: bad shape");
    hid_t dset;
    gbtd_dtype dt;
    int nd;
    int64_t sh[GBTD_MAX_MODES];
    GBTD_CHECK(h5_open_numeric(f, name, &dset, &dt, &nd, sh));
    bool same = nd == ndim;
    for (int k = 0; same && k < nd; k++) same = sh[k] == shape[k];
    int rc = GBTD_OK;
    if (!same) {
        char a[160], b[160];
        rc = gbtd_error(GBTD_ESHAPE, "%s: dataset '%s' has shape %s, expected %s", f->path, name,
                        gbtd_shape_str(nd, sh, a, sizeof a), gbtd_shape_str(ndim, shape, b, sizeof b));
    } else {
        int64_t n;
        rc = gbtd_prod_i64(sh, nd, &n);
        if (rc == GBTD_OK && n > 0 &&
            H5Dread(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
            rc = h5_fail(GBTD_EFORMAT, f->path, "cannot read dataset", name);
    }
    H5Dclose(dset);
    return rc;
}

/* ---- writing --------------------------------------------------------------------------------- */

static int h5_writable(gbtd_h5 *f)
{
    if (f->tmp == NULL) return gbtd_error(GBTD_EINVAL, "%s: file is open read-only", f->path);
    return GBTD_OK;
}

/* Create (replacing) dataset `name` of file type ftype and write mem-typed data. */
static int h5_write_raw(gbtd_h5 *f, const char *name, int ndim, const int64_t *shape, hid_t ftype,
                        hid_t mtype, const void *data, hid_t *dset_out)
{
    H5O_type_t t;
    if (h5_object_type(f->fid, name, &t) == GBTD_OK) {
        if (t != H5O_TYPE_DATASET)
            return gbtd_error(GBTD_EINVAL, "%s: '%s' exists and is not a dataset", f->path, name);
        if (H5Ldelete(f->fid, name, H5P_DEFAULT) < 0)
            return h5_fail(GBTD_EIO, f->path, "cannot replace dataset", name);
    }
    hsize_t dims[GBTD_MAX_MODES];
    for (int k = 0; k < ndim; k++) dims[k] = (hsize_t)shape[k];
    hid_t sp = ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(ndim, dims, NULL);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    int rc = GBTD_OK;
    hid_t dset = -1;
    if (sp < 0 || lcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0) {
        rc = h5_fail(GBTD_EIO, f->path, "cannot prepare dataset", name);
        goto done;
    }
    dset = H5Dcreate2(f->fid, name, ftype, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    if (dset < 0) {
        rc = h5_fail(GBTD_EIO, f->path, "cannot create dataset", name);
        goto done;
    }
    int64_t n = 1;
    for (int k = 0; k < ndim; k++) n *= shape[k];
    if (n > 0 && H5Dwrite(dset, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        rc = h5_fail(GBTD_EIO, f->path, "cannot write dataset", name);
done:
    if (sp >= 0) H5Sclose(sp);
    if (lcpl >= 0) H5Pclose(lcpl);
    if (dset >= 0) {
        if (rc == GBTD_OK && dset_out) *dset_out = dset;
        else H5Dclose(dset);
    }
    return rc;
}

int gbtd_h5_write_tensor(gbtd_h5 *f, const char *name, const gbtd_tensor *t, gbtd_dtype store_as)
{
    GBTD_CHECK(h5_check(f, name, true));
    GBTD_CHECK(h5_writable(f));
    if (t == NULL || t->ndim < 0 || t->ndim > GBTD_MAX_MODES)
        return gbtd_error(GBTD_EINVAL, "%s: bad tensor for '%s'", f->path, name);
    if (store_as != GBTD_DTYPE_F64 && store_as != GBTD_DTYPE_F32)
        return gbtd_error(GBTD_EUNSUPPORTED, "%s: can store tensors as float64 or float32 only",
                          f->path);
    const int64_t n = gbtd_tensor_numel(t);
    int rc;
    if (store_as == GBTD_DTYPE_F64) {
        gbtd_tensor c;
        memset(&c, 0, sizeof c);
        const double *src = t->data;
        if (!gbtd_tensor_is_contiguous(t) && n > 0) {
            GBTD_CHECK(gbtd_tensor_clone(&c, t));
            src = c.data;
        }
        rc = h5_write_raw(f, name, t->ndim, t->shape, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, src, NULL);
        gbtd_tensor_free(&c);
    } else {
        float *buf = gbtd_calloc((size_t)n, sizeof(float));
        if (buf == NULL) return GBTD_ENOMEM;
        gbtd_tensor_to_float(t, buf);
        rc = h5_write_raw(f, name, t->ndim, t->shape, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, buf, NULL);
        gbtd_free(buf);
    }
    return rc;
}

int gbtd_h5_write_float(gbtd_h5 *f, const char *name, int ndim, const int64_t *shape,
                        const float *data)
{
    GBTD_CHECK(h5_check(f, name, true));
    GBTD_CHECK(h5_writable(f));
    if (ndim < 0 || ndim > GBTD_MAX_MODES || (ndim > 0 && shape == NULL))
        return gbtd_error(GBTD_EINVAL, "%s: bad shape for '%s'", f->path, name);
    int64_t n;
    GBTD_CHECK(gbtd_prod_i64(shape, ndim, &n));
    if (n > 0 && data == NULL) return gbtd_error(GBTD_EINVAL, "%s: NULL data for '%s'", f->path, name);
    return h5_write_raw(f, name, ndim, shape, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, data, NULL);
}

/* ---- attributes ------------------------------------------------------------------------------ */

struct attr_ctx {
    gbtd_h5 *f;
    gbtd_attr_list *out;
    int rc;
};

static int read_string_attr(hid_t aid, hid_t tid, const char *aname, int64_t n, bool array,
                            gbtd_attr_list *out, const char *path)
{
    char **v = gbtd_calloc((size_t)(n ? n : 1), sizeof(char *));
    if (v == NULL) return GBTD_ENOMEM;
    int rc = GBTD_OK;
    hid_t sp = H5Aget_space(aid);
    hid_t mt = H5Tcopy(H5T_C_S1);
    if (H5Tis_variable_str(tid) > 0) {
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(tid));
        char **raw = gbtd_calloc((size_t)(n ? n : 1), sizeof(char *));
        if (raw == NULL) rc = GBTD_ENOMEM;
        else if (H5Aread(aid, mt, raw) < 0)
            rc = h5_fail(GBTD_EFORMAT, path, "cannot read attribute", aname);
        else {
            for (int64_t i = 0; i < n && rc == GBTD_OK; i++)
                if ((v[i] = io_strdup(raw[i] ? raw[i] : "")) == NULL) rc = GBTD_ENOMEM;
            H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, raw);
        }
        gbtd_free(raw);
    } else {
        size_t sz = H5Tget_size(tid);
        H5Tset_size(mt, sz);
        H5Tset_strpad(mt, H5T_STR_NULLPAD);
        size_t total;
        char *raw = NULL;
        if (gbtd_mul_size(sz, (size_t)n, &total) != GBTD_OK) rc = GBTD_EOVERFLOW;
        else if ((raw = gbtd_malloc(total)) == NULL) rc = GBTD_ENOMEM;
        else if (H5Aread(aid, mt, raw) < 0)
            rc = h5_fail(GBTD_EFORMAT, path, "cannot read attribute", aname);
        else {
            for (int64_t i = 0; i < n && rc == GBTD_OK; i++) {
                const char *s = raw + (size_t)i * sz;
                size_t len = 0;
                while (len < sz && s[len] != '\0') len++;
                while (len > 0 && H5Tget_strpad(tid) == H5T_STR_SPACEPAD && s[len - 1] == ' ') len--;
                if ((v[i] = io_strndup(s, len)) == NULL) rc = GBTD_ENOMEM;
            }
        }
        gbtd_free(raw);
    }
    H5Tclose(mt);
    H5Sclose(sp);
    if (rc == GBTD_OK) {
        if (array) rc = gbtd_attr_list_set_strings(out, aname, (const char *const *)v, n);
        else rc = gbtd_attr_list_set_string(out, aname, v[0]);
    }
    for (int64_t i = 0; i < n; i++) gbtd_free(v[i]);
    gbtd_free(v);
    return rc;
}

static herr_t attr_cb(hid_t loc, const char *aname, const H5A_info_t *ainfo, void *data)
{
    (void)ainfo;
    struct attr_ctx *c = data;
    hid_t aid = H5Aopen(loc, aname, H5P_DEFAULT);
    if (aid < 0) {
        c->rc = h5_fail(GBTD_EFORMAT, c->f->path, "cannot open attribute", aname);
        return -1;
    }
    hid_t tid = H5Aget_type(aid), sp = H5Aget_space(aid);
    H5T_class_t cls = H5Tget_class(tid);
    H5S_class_t sc = H5Sget_simple_extent_type(sp);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    const bool array = sc == H5S_SIMPLE;
    const int64_t n = (int64_t)np;
    int rc = GBTD_OK;
    if (sc == H5S_NULL || np < 0 || (!array && n != 1)) {
        /* Empty (null) attributes carry no value: skipped. */
    } else if (cls == H5T_INTEGER || cls == H5T_FLOAT) {
        size_t esz = cls == H5T_INTEGER ? sizeof(int64_t) : sizeof(double);
        void *buf = gbtd_calloc((size_t)(n ? n : 1), esz);
        if (buf == NULL) rc = GBTD_ENOMEM;
        else if (H5Aread(aid, cls == H5T_INTEGER ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE, buf) < 0)
            rc = h5_fail(GBTD_EFORMAT, c->f->path, "cannot read attribute", aname);
        else if (cls == H5T_INTEGER)
            rc = array ? gbtd_attr_list_set_ints(c->out, aname, buf, n)
                       : gbtd_attr_list_set_int(c->out, aname, ((int64_t *)buf)[0]);
        else
            rc = array ? gbtd_attr_list_set_reals(c->out, aname, buf, n)
                       : gbtd_attr_list_set_real(c->out, aname, ((double *)buf)[0]);
        gbtd_free(buf);
    } else if (cls == H5T_STRING) {
        rc = read_string_attr(aid, tid, aname, n, array, c->out, c->f->path);
    }
    H5Tclose(tid);
    H5Sclose(sp);
    H5Aclose(aid);
    H5Eclear2(H5E_DEFAULT);
    c->rc = rc;
    return rc == GBTD_OK ? 0 : -1;
}

int gbtd_h5_read_attrs(gbtd_h5 *f, const char *obj, gbtd_attr_list *out)
{
    GBTD_CHECK(h5_check(f, obj, false));
    if (obj == NULL || out == NULL) return gbtd_error(GBTD_EINVAL, "h5_read_attrs: NULL argument");
    H5O_type_t t;
    if (strcmp(obj, "/") != 0 && h5_object_type(f->fid, obj, &t) != GBTD_OK)
        return gbtd_error(GBTD_ENOTFOUND, "%s: no group or dataset '%s'", f->path, obj);
    hid_t oid = H5Oopen(f->fid, obj, H5P_DEFAULT);
    if (oid < 0) return h5_fail(GBTD_EFORMAT, f->path, "cannot open", obj);
    gbtd_attr_list got;
    memset(&got, 0, sizeof got);
    struct attr_ctx c = {f, &got, GBTD_OK};
    hsize_t idx = 0;
    herr_t e = H5Aiterate2(oid, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, attr_cb, &c);
    if (e < 0 && c.rc == GBTD_OK) {
        /* Creation order is not tracked by default: iterate by name instead. */
        H5Eclear2(H5E_DEFAULT);
        idx = 0;
        e = H5Aiterate2(oid, H5_INDEX_NAME, H5_ITER_INC, &idx, attr_cb, &c);
    }
    H5Oclose(oid);
    int rc = c.rc;
    if (rc == GBTD_OK && e < 0) rc = h5_fail(GBTD_EFORMAT, f->path, "cannot list the attributes of", obj);
    if (rc != GBTD_OK) {
        gbtd_attr_list_free(&got);
        return rc;
    }
    return io_attr_list_merge(out, &got);
}

static int write_one_attr(gbtd_h5 *f, hid_t oid, const gbtd_attr *a)
{
    if (a->name == NULL || a->name[0] == '\0' || a->count < 0 || (!a->is_array && a->count != 1))
        return gbtd_error(GBTD_EINVAL, "%s: malformed attribute", f->path);
    htri_t ex = H5Aexists(oid, a->name);
    if (ex > 0 && H5Adelete(oid, a->name) < 0)
        return h5_fail(GBTD_EIO, f->path, "cannot replace attribute", a->name);
    hsize_t dim = (hsize_t)a->count;
    hid_t sp = a->is_array ? H5Screate_simple(1, &dim, NULL) : H5Screate(H5S_SCALAR);
    hid_t ft, mt;
    const void *buf;
    if (a->kind == GBTD_ATTR_INT) {
        ft = H5Tcopy(H5T_STD_I64LE);
        mt = H5Tcopy(H5T_NATIVE_INT64);
        buf = a->ints;
    } else if (a->kind == GBTD_ATTR_REAL) {
        ft = H5Tcopy(H5T_IEEE_F64LE);
        mt = H5Tcopy(H5T_NATIVE_DOUBLE);
        buf = a->reals;
    } else {
        ft = H5Tcopy(H5T_C_S1);
        H5Tset_size(ft, H5T_VARIABLE);
        H5Tset_cset(ft, H5T_CSET_UTF8);
        mt = H5Tcopy(ft);
        buf = a->strs;
    }
    int rc = GBTD_OK;
    hid_t aid = H5Acreate2(oid, a->name, ft, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (aid < 0 || (a->count > 0 && H5Awrite(aid, mt, buf) < 0))
        rc = h5_fail(GBTD_EIO, f->path, "cannot write attribute", a->name);
    if (aid >= 0) H5Aclose(aid);
    H5Tclose(ft);
    H5Tclose(mt);
    H5Sclose(sp);
    return rc;
}

int gbtd_h5_write_attrs(gbtd_h5 *f, const char *obj, const gbtd_attr_list *attrs)
{
    GBTD_CHECK(h5_check(f, obj, false));
    GBTD_CHECK(h5_writable(f));
    if (obj == NULL || obj[0] == '\0') return gbtd_error(GBTD_EINVAL, "%s: empty object name", f->path);
    if (attrs == NULL || attrs->count == 0) return GBTD_OK;
    H5O_type_t t;
    if (strcmp(obj, "/") != 0 && h5_object_type(f->fid, obj, &t) != GBTD_OK) {
        hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
        H5Pset_create_intermediate_group(lcpl, 1);
        hid_t g = H5Gcreate2(f->fid, obj, lcpl, H5P_DEFAULT, H5P_DEFAULT);
        H5Pclose(lcpl);
        if (g < 0) return h5_fail(GBTD_EIO, f->path, "cannot create group", obj);
        H5Gclose(g);
    }
    hid_t oid = H5Oopen(f->fid, obj, H5P_DEFAULT);
    if (oid < 0) return h5_fail(GBTD_EFORMAT, f->path, "cannot open", obj);
    int rc = GBTD_OK;
    for (int i = 0; i < attrs->count && rc == GBTD_OK; i++) rc = write_one_attr(f, oid, &attrs->items[i]);
    H5Oclose(oid);
    return rc;
}

/* ---- listing --------------------------------------------------------------------------------- */

struct list_ctx {
    gbtd_h5 *f;
    gbtd_tensor_desc_list *out;
    int rc;
};

static herr_t list_cb(hid_t obj, const char *name, const H5O_info_t *info, void *data)
{
    struct list_ctx *c = data;
    if (info->type != H5O_TYPE_DATASET) return 0;
    char full[1024];
    snprintf(full, sizeof full, "/%s", name);
    hid_t dset = H5Dopen2(obj, name, H5P_DEFAULT);
    if (dset < 0) {
        c->rc = h5_fail(GBTD_EFORMAT, c->f->path, "cannot open dataset", full);
        return -1;
    }
    gbtd_dtype dt = GBTD_DTYPE_UNKNOWN;
    char dstr[24];
    int nd = 0;
    int64_t shape[GBTD_IO_MAX_RANK];
    int rc = h5_describe(c->f, full, dset, &dt, dstr, sizeof dstr, &nd, shape, GBTD_IO_MAX_RANK);
    H5Dclose(dset);
    if (rc == GBTD_EUNSUPPORTED) { /* null dataspace: list it as empty */
        nd = 0;
        rc = GBTD_OK;
        snprintf(dstr, sizeof dstr, "empty");
        dt = GBTD_DTYPE_UNKNOWN;
    }
    if (rc == GBTD_OK) rc = io_desc_push(c->out, full, dt, dstr, nd, shape);
    c->rc = rc;
    return rc == GBTD_OK ? 0 : -1;
}

int gbtd_h5_list(gbtd_h5 *f, gbtd_tensor_desc_list *out)
{
    if (out) memset(out, 0, sizeof *out);
    GBTD_CHECK(h5_check(f, NULL, false));
    if (out == NULL) return gbtd_error(GBTD_EINVAL, "h5_list: NULL output");
    struct list_ctx c = {f, out, GBTD_OK};
    herr_t e = H5Ovisit2(f->fid, H5_INDEX_NAME, H5_ITER_INC, list_cb, &c, H5O_INFO_BASIC);
    int rc = c.rc;
    if (rc == GBTD_OK && e < 0) rc = h5_fail(GBTD_EFORMAT, f->path, "cannot walk the file", NULL);
    if (rc != GBTD_OK) gbtd_tensor_desc_list_free(out);
    return rc;
}

/* ---- one-call conveniences ------------------------------------------------------------------- */

int gbtd_h5_load(const char *path, const char *name, gbtd_tensor *out, gbtd_dtype *stored)
{
    if (out) memset(out, 0, sizeof *out);
    gbtd_h5 *f;
    GBTD_CHECK(gbtd_h5_open(path, &f));
    int rc = gbtd_h5_read_tensor(f, name, out, stored);
    gbtd_h5_close(f);
    return rc;
}

int gbtd_h5_save(const char *path, const char *name, const gbtd_tensor *t,
                 const gbtd_attr_list *attrs, bool append)
{
    gbtd_h5 *f;
    GBTD_CHECK(append ? gbtd_h5_open_append(path, &f) : gbtd_h5_create(path, &f));
    int rc = gbtd_h5_write_tensor(f, name, t, GBTD_DTYPE_F64);
    if (rc == GBTD_OK && attrs) rc = gbtd_h5_write_attrs(f, name, attrs);
    if (rc != GBTD_OK) {
        gbtd_h5_discard(f);
        return rc;
    }
    return gbtd_h5_close(f);
}
