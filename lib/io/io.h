/* gbtd io: tensors and named tensor collections in and out of files.
 *
 * Formats (layouts documented in docs/formats.md):
 *  - HDF5 (C API): any dataset path, attributes on datasets and groups, recursive listing;
 *  - NumPy .npy (f4/f8 little-endian, C order, header versions 1.0/2.0/3.0) and .npz (zip of .npy,
 *    stored or deflated);
 *  - safetensors (memory-mapped reading; F64/F32/F16/BF16 and integer dtypes);
 *  - the HDF5 layout Keras writes with save_weights.
 *
 * Conventions:
 *  - every function returns GBTD_OK or a negative gbtd_status; gbtd_last_error() then names the
 *    file and the problem in one line ("x.npy: fortran_order arrays are not supported");
 *  - nothing is printed (the HDF5 error printer is switched off on every entry point);
 *  - every write goes to a temporary file in the destination folder that is renamed over the
 *    destination only when complete, so a failed write leaves the old file (or none) in place;
 *  - outputs are owned by the caller and released with the matching _free; on error they are
 *    left empty (safe to free);
 *  - tensors read into a gbtd_tensor are converted to double; the dtype stored in the file is
 *    reported separately. Integer datasets above 2^53 in magnitude lose precision. */
#ifndef GBTD_IO_IO_H
#define GBTD_IO_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- element types ---------------------------------------------------------------------- */

typedef enum gbtd_dtype {
    GBTD_DTYPE_UNKNOWN = 0, /* anything else (strings, compounds, enums): listed, never read */
    GBTD_DTYPE_F64,
    GBTD_DTYPE_F32,
    GBTD_DTYPE_F16, /* IEEE half */
    GBTD_DTYPE_BF16,
    GBTD_DTYPE_I64,
    GBTD_DTYPE_I32,
    GBTD_DTYPE_I16,
    GBTD_DTYPE_I8,
    GBTD_DTYPE_U64,
    GBTD_DTYPE_U32,
    GBTD_DTYPE_U16,
    GBTD_DTYPE_U8,
    GBTD_DTYPE_BOOL
} gbtd_dtype;

/* NumPy-style name: "float64", "float32", "float16", "bfloat16", "int64", ..., "bool",
 * "unknown". */
const char *gbtd_dtype_name(gbtd_dtype t);
/* Bytes per element (0 for GBTD_DTYPE_UNKNOWN). */
size_t gbtd_dtype_size(gbtd_dtype t);

/* Element conversions of a row-major buffer of n values of type `t` (host byte order). */
int gbtd_dtype_to_double(gbtd_dtype t, const void *src, int64_t n, double *dst);
int gbtd_dtype_to_float(gbtd_dtype t, const void *src, int64_t n, float *dst);
/* float <-> half / bfloat16 with round-to-nearest-even (NaN kept, overflow to Inf). */
uint16_t gbtd_float_to_f16(float x);
float gbtd_f16_to_float(uint16_t h);
uint16_t gbtd_float_to_bf16(float x);
float gbtd_bf16_to_float(uint16_t h);

/* ---- file listing (gbtd info) --------------------------------------------------------------- */

#define GBTD_IO_MAX_RANK 32

typedef enum gbtd_file_format {
    GBTD_FORMAT_UNKNOWN = 0,
    GBTD_FORMAT_HDF5,
    GBTD_FORMAT_NPY,
    GBTD_FORMAT_NPZ,
    GBTD_FORMAT_SAFETENSORS
} gbtd_file_format;

/* "hdf5", "npy", "npz", "safetensors", "unknown". */
const char *gbtd_file_format_name(gbtd_file_format f);

/* Guess the format from the first bytes of the file (then from the extension).
 * Errors: GBTD_EIO (cannot open), GBTD_EFORMAT (no known signature). */
int gbtd_file_format_detect(const char *path, gbtd_file_format *out);

/* One tensor as a listing shows it; bytes = elements x element size (0 when dtype unknown). */
typedef struct gbtd_tensor_desc {
    char *name; /* HDF5: full path "/a/b"; npy: file base name; others: the stored name */
    gbtd_dtype dtype;
    char dtype_str[24]; /* as stored when dtype is UNKNOWN ("string", "compound", "<c16") */
    int ndim;
    int64_t shape[GBTD_IO_MAX_RANK];
    int64_t bytes;
} gbtd_tensor_desc;

typedef struct gbtd_tensor_desc_list {
    gbtd_tensor_desc *items;
    int count;
    int cap;
} gbtd_tensor_desc_list;

void gbtd_tensor_desc_list_free(gbtd_tensor_desc_list *l);

/* List the tensors of any supported file (format detected from its contents). */
int gbtd_io_list(const char *path, gbtd_file_format *format, gbtd_tensor_desc_list *out);

/* ---- attributes (HDF5 datasets and groups; safetensors __metadata__ strings) ------------------ */

typedef enum gbtd_attr_kind {
    GBTD_ATTR_INT = 1,  /* int64 values */
    GBTD_ATTR_REAL = 2, /* double values */
    GBTD_ATTR_STRING = 3
} gbtd_attr_kind;

typedef struct gbtd_attr {
    char *name;
    gbtd_attr_kind kind;
    int64_t count;  /* number of values, >= 1 (>= 0 when is_array) */
    bool is_array;  /* stored as a 1-D array; false: a scalar (count == 1) */
    int64_t *ints;  /* kind INT */
    double *reals;  /* kind REAL */
    char **strs;    /* kind STRING: count NUL-terminated UTF-8 strings */
} gbtd_attr;

typedef struct gbtd_attr_list {
    gbtd_attr *items;
    int count;
    int cap;
} gbtd_attr_list;

/* A zeroed gbtd_attr_list is a valid empty list. */
void gbtd_attr_list_free(gbtd_attr_list *l);
/* Setters copy their arguments; an existing attribute of the same name is replaced. */
int gbtd_attr_list_set_int(gbtd_attr_list *l, const char *name, int64_t value);
int gbtd_attr_list_set_real(gbtd_attr_list *l, const char *name, double value);
int gbtd_attr_list_set_string(gbtd_attr_list *l, const char *name, const char *value);
int gbtd_attr_list_set_ints(gbtd_attr_list *l, const char *name, const int64_t *v, int64_t n);
int gbtd_attr_list_set_reals(gbtd_attr_list *l, const char *name, const double *v, int64_t n);
int gbtd_attr_list_set_strings(gbtd_attr_list *l, const char *name, const char *const *v,
                               int64_t n);
/* NULL when absent. */
const gbtd_attr *gbtd_attr_list_find(const gbtd_attr_list *l, const char *name);
/* Copy of src appended to dst (same-name entries replaced). */
int gbtd_attr_list_copy(gbtd_attr_list *dst, const gbtd_attr_list *src);

/* ---- HDF5 ------------------------------------------------------------------------------------
 * A gbtd_h5 is an open file. Readers come from gbtd_h5_open; writers from gbtd_h5_create (a new
 * file) or gbtd_h5_open_append (a copy of the existing file, or a new one when it does not exist).
 * Writers work on a temporary file beside `path`: gbtd_h5_close renames it over `path`
 * (commit), gbtd_h5_discard deletes it and leaves `path` untouched. Both release the handle.
 *
 * Dataset and group names are HDF5 paths ("/conv1/weight" or "conv1/weight"); writing creates
 * the intermediate groups, and replaces an existing dataset of the same name. */
typedef struct gbtd_h5 gbtd_h5;

int gbtd_h5_open(const char *path, gbtd_h5 **out);
int gbtd_h5_create(const char *path, gbtd_h5 **out);
int gbtd_h5_open_append(const char *path, gbtd_h5 **out);
/* Readers: close. Writers: flush, close and rename into place (GBTD_EIO if that fails, the
 * temporary file is then removed). Accepts NULL. */
int gbtd_h5_close(gbtd_h5 *f);
/* Writers: drop every change. Readers: close. Accepts NULL. */
void gbtd_h5_discard(gbtd_h5 *f);

/* Read a numeric dataset (float, integer, any byte order) into a new contiguous double tensor.
 * `stored` (may be NULL) receives the dtype in the file. Errors: GBTD_ENOTFOUND (no such
 * dataset), GBTD_EUNSUPPORTED (non-numeric, or more than GBTD_MAX_MODES modes), GBTD_EFORMAT
 * (corrupt), GBTD_ENOMEM, GBTD_EOVERFLOW. */
int gbtd_h5_read_tensor(gbtd_h5 *f, const char *name, gbtd_tensor *out, gbtd_dtype *stored);
/* Write t (any strides) as a dataset of `store_as` (GBTD_DTYPE_F64 or GBTD_DTYPE_F32). */
int gbtd_h5_write_tensor(gbtd_h5 *f, const char *name, const gbtd_tensor *t, gbtd_dtype store_as);

/* float32 path for network weights and checkpoints. read_float allocates *data (release with
 * gbtd_free) and fills ndim/shape (shape has room for GBTD_MAX_MODES values); read_float_into
 * checks that the dataset has exactly the given shape (GBTD_ESHAPE otherwise) and fills data. */
int gbtd_h5_read_float(gbtd_h5 *f, const char *name, int *ndim, int64_t *shape, float **data);
int gbtd_h5_read_float_into(gbtd_h5 *f, const char *name, int ndim, const int64_t *shape,
                            float *data);
int gbtd_h5_write_float(gbtd_h5 *f, const char *name, int ndim, const int64_t *shape,
                        const float *data);

/* Attributes of a dataset or group ("/" is the root group). Reading appends to *out (numeric
 * attributes of any integer type become INT, of any float type REAL; fixed- and
 * variable-length strings become STRING; others are skipped). Writing creates the group when
 * `obj` does not exist yet, and replaces same-name attributes. */
int gbtd_h5_read_attrs(gbtd_h5 *f, const char *obj, gbtd_attr_list *out);
int gbtd_h5_write_attrs(gbtd_h5 *f, const char *obj, const gbtd_attr_list *attrs);

/* Every dataset in the file, depth first in name order. */
int gbtd_h5_list(gbtd_h5 *f, gbtd_tensor_desc_list *out);
/* True when `name` is a dataset (false for groups and missing paths). */
bool gbtd_h5_has_dataset(gbtd_h5 *f, const char *name);

/* One-call conveniences. save: append=false makes a new file (replacing any), append=true adds
 * to the existing file. attrs (may be NULL) are attached to the dataset. */
int gbtd_h5_load(const char *path, const char *name, gbtd_tensor *out, gbtd_dtype *stored);
int gbtd_h5_save(const char *path, const char *name, const gbtd_tensor *t,
                 const gbtd_attr_list *attrs, bool append);

/* ---- NumPy .npy ------------------------------------------------------------------------------ */

/* Parsed .npy header. data_offset = bytes before the data. */
typedef struct gbtd_npy_header {
    int major, minor;
    gbtd_dtype dtype;
    char descr[16];
    bool fortran_order;
    int ndim;
    int64_t shape[GBTD_IO_MAX_RANK];
    size_t data_offset;
    size_t data_bytes;
} gbtd_npy_header;

/* Strict header parser over the first `len` bytes of a .npy image (`what` names the file in
 * messages). Accepts any descr it can name ('<f8', '<f4', '<f2', '<i8', '|u1', '|b1', ...);
 * big-endian, object, structured and unknown descrs are GBTD_EUNSUPPORTED; malformed headers
 * GBTD_EFORMAT. Does not check the data length. */
int gbtd_npy_parse_header(const void *buf, size_t len, const char *what, gbtd_npy_header *h);

/* Read a '<f8' or '<f4' C-order array into a double tensor (stored: dtype in the file).
 * Errors: GBTD_EIO, GBTD_EFORMAT (bad header, size mismatch), GBTD_EUNSUPPORTED (other dtypes,
 * big-endian, Fortran order, more than GBTD_MAX_MODES modes), GBTD_ENOMEM, GBTD_EOVERFLOW. */
int gbtd_npy_load(const char *path, gbtd_tensor *out, gbtd_dtype *stored);
/* Write t (any strides) as '<f8' or '<f4' (store_as F64 or F32), header version 1.0. */
int gbtd_npy_save(const char *path, const gbtd_tensor *t, gbtd_dtype store_as);
/* float32 path; load_float accepts '<f4' and '<f8' and allocates *data (gbtd_free). */
int gbtd_npy_load_float(const char *path, int *ndim, int64_t *shape, float **data);
int gbtd_npy_save_float(const char *path, int ndim, const int64_t *shape, const float *data);

/* ---- named tensor sets (safetensors, npz, Keras HDF5) ------------------------------------------
 * The common in-memory form of a weights file: an ordered list of named, typed, row-major
 * tensors. Data are host byte order. A set read from safetensors points into a read-only
 * memory mapping that the set owns (items[i].owned is false); items added with
 * gbtd_tensor_set_add own a copy. */
typedef struct gbtd_named_tensor {
    char *name;
    gbtd_dtype dtype;
    int ndim;
    int64_t shape[GBTD_MAX_MODES];
    void *data;
    size_t nbytes;
    bool owned;
} gbtd_named_tensor;

typedef struct gbtd_tensor_set {
    gbtd_named_tensor *items;
    int count;
    int cap;
    gbtd_attr_list meta; /* string metadata (safetensors __metadata__) */
    void *map;           /* memory mapping owned by the set, or NULL */
    size_t map_len;
} gbtd_tensor_set;

/* A zeroed gbtd_tensor_set is a valid empty set. */
void gbtd_tensor_set_free(gbtd_tensor_set *s);
/* Append a copy of `data` (numel x dtype size bytes). GBTD_EINVAL on a duplicate name. */
int gbtd_tensor_set_add(gbtd_tensor_set *s, const char *name, gbtd_dtype dtype, int ndim,
                        const int64_t *shape, const void *data);
/* Append a double tensor (any strides) converted to `dtype` (F64, F32, F16 or BF16). */
int gbtd_tensor_set_add_tensor(gbtd_tensor_set *s, const char *name, const gbtd_tensor *t,
                               gbtd_dtype dtype);
/* NULL when absent. */
const gbtd_named_tensor *gbtd_tensor_set_find(const gbtd_tensor_set *s, const char *name);
/* Convert one item to a new contiguous double tensor / into a float buffer of numel values. */
int gbtd_named_tensor_to_tensor(const gbtd_named_tensor *nt, gbtd_tensor *out);
int gbtd_named_tensor_to_float(const gbtd_named_tensor *nt, float *out);
int64_t gbtd_named_tensor_numel(const gbtd_named_tensor *nt);

/* safetensors. read: maps the file and validates the header (size limits, dtypes, shapes,
 * offsets in range, contiguous non-overlapping data, unique names, UTF-8, nesting depth).
 * write: F64/F32/F16/BF16 and integer dtypes, s->meta strings as __metadata__. */
int gbtd_safetensors_read(const char *path, gbtd_tensor_set *out);
int gbtd_safetensors_write(const char *path, const gbtd_tensor_set *s);

/* .npz: zip archive of .npy members ("name.npy" -> tensor "name"); stored and deflated members
 * are read; write stores (compress=false) or deflates each member. */
int gbtd_npz_read(const char *path, gbtd_tensor_set *out);
int gbtd_npz_write(const char *path, const gbtd_tensor_set *s, bool compress);

/* Keras save_weights HDF5 layout: root (or /model_weights) attribute layer_names, each layer
 * group's weight_names. Tensors are named "<layer>/<weight>" ("conv1/kernel:0"); with
 * kernels_oihw, 4-D kernels (HWIO in Keras) are transposed to OIHW. Values are float32. */
typedef struct gbtd_keras_opts {
    bool kernels_oihw;
} gbtd_keras_opts;
gbtd_keras_opts gbtd_keras_opts_default(void); /* kernels_oihw = true */
int gbtd_keras_h5_read(const char *path, const gbtd_keras_opts *opts, gbtd_tensor_set *out);

#ifdef __cplusplus
}
#endif
#endif
