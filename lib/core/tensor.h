/* gbtd core: the dense double-precision tensor and its views.
 *
 * A tensor is row-major (C order) by default, like NumPy, PyTorch and HDF5: for a contiguous
 * tensor of shape (I_0, ..., I_{N-1}) the element (i_0, ..., i_{N-1}) sits at offset
 * sum_k i_k * stride[k] with stride[N-1] = 1 and stride[k] = stride[k+1] * I_{k+1}.
 * Strides are signed and counted in elements, so views can reverse, permute and slice modes
 * without copying. A 0-way tensor is a scalar (one element).
 *
 * Ownership: gbtd_tensor_alloc and every function named *_alloc return an owning tensor that
 * gbtd_tensor_free releases. Views (gbtd_tensor_wrap, gbtd_tensor_view_*) borrow the memory of
 * their source: they must not outlive it, and gbtd_tensor_free on a view only clears it. */
#ifndef GBTD_CORE_TENSOR_H
#define GBTD_CORE_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GBTD_MAX_MODES 8

typedef struct gbtd_tensor {
    double *data;                   /* element (0, ..., 0) */
    int ndim;                       /* number of modes, 0..GBTD_MAX_MODES */
    int64_t shape[GBTD_MAX_MODES];  /* sizes, >= 0 */
    int64_t stride[GBTD_MAX_MODES]; /* element strides, signed */
    void *owned;                    /* buffer released by gbtd_tensor_free, NULL for views */
} gbtd_tensor;

/* ---- creation -------------------------------------------------------------------------- */

/* Allocate a contiguous, zero-filled tensor. Errors: GBTD_EINVAL (ndim or a size out of range),
 * GBTD_EOVERFLOW, GBTD_ENOMEM. On error *t is left empty (safe to free). */
int gbtd_tensor_alloc(gbtd_tensor *t, int ndim, const int64_t *shape);
/* Convenience for matrices: a contiguous rows x cols tensor. */
int gbtd_matrix_alloc(gbtd_tensor *t, int64_t rows, int64_t cols);
/* Allocate a contiguous tensor with the shape of `like` (zero-filled). */
int gbtd_tensor_alloc_like(gbtd_tensor *t, const gbtd_tensor *like);
/* Allocate a contiguous copy of src. */
int gbtd_tensor_clone(gbtd_tensor *dst, const gbtd_tensor *src);
/* Release an owning tensor (no-op for views) and clear the struct. Accepts NULL. */
void gbtd_tensor_free(gbtd_tensor *t);

/* ---- views (no copies) ----------------------------------------------------------------- */

/* View a caller buffer of prod(shape) doubles as a contiguous row-major tensor. */
int gbtd_tensor_wrap(double *data, int ndim, const int64_t *shape, gbtd_tensor *view);
/* Sub-tensor: mode k covers indices start[k], start[k] + step[k], ... (size[k] of them).
 * step may be NULL (all 1) and steps may be negative. Errors: GBTD_ERANGE. */
int gbtd_tensor_view_sub(const gbtd_tensor *src, const int64_t *start, const int64_t *size,
                         const int64_t *step, gbtd_tensor *view);
/* Permutation of modes, NumPy transpose semantics: mode k of the view is mode perm[k] of src. */
int gbtd_tensor_view_permute(const gbtd_tensor *src, const int *perm, gbtd_tensor *view);
/* Reshape a contiguous tensor (same number of elements). GBTD_EINVAL if src is strided. */
int gbtd_tensor_view_reshape(const gbtd_tensor *src, int ndim, const int64_t *shape,
                             gbtd_tensor *view);

/* ---- queries --------------------------------------------------------------------------- */

/* Number of elements (product of the shape; 1 for a 0-way tensor). */
int64_t gbtd_tensor_numel(const gbtd_tensor *t);
/* True when the tensor is row-major contiguous (size-1 modes may have any stride). */
bool gbtd_tensor_is_contiguous(const gbtd_tensor *t);
bool gbtd_tensor_same_shape(const gbtd_tensor *a, const gbtd_tensor *b);
/* Pointer to element idx[0..ndim-1] (no bounds check). */
double *gbtd_tensor_ptr(const gbtd_tensor *t, const int64_t *idx);
/* Writes "(3, 4, 5)" into buf (always NUL-terminated); returns buf. */
char *gbtd_shape_str(int ndim, const int64_t *shape, char *buf, size_t len);
/* GBTD_OK when every element is finite, else GBTD_ENONFINITE naming the first bad index. */
int gbtd_tensor_check_finite(const gbtd_tensor *t, const char *what);

/* ---- element-wise operations (any strides) --------------------------------------------- */

/* dst <- src. Shapes must agree (GBTD_ESHAPE). dst and src must not overlap partially. */
int gbtd_tensor_copy(gbtd_tensor *dst, const gbtd_tensor *src);
void gbtd_tensor_fill(gbtd_tensor *t, double value);
/* Uniform on [lo, hi) / normal(mean, sd), drawn in row-major order of the indices. */
void gbtd_tensor_fill_uniform(gbtd_tensor *t, gbtd_rng *rng, double lo, double hi);
void gbtd_tensor_fill_normal(gbtd_tensor *t, gbtd_rng *rng, double mean, double sd);
void gbtd_tensor_scale(gbtd_tensor *t, double alpha);
/* y <- alpha * x + y. */
int gbtd_tensor_axpy(double alpha, const gbtd_tensor *x, gbtd_tensor *y);
/* Frobenius norm, computed with scaling so that it neither overflows nor underflows. */
double gbtd_tensor_norm(const gbtd_tensor *t);
/* <a, b> = sum of products of matching elements. */
int gbtd_tensor_inner(const gbtd_tensor *a, const gbtd_tensor *b, double *out);
/* max |a - b| over all elements (NaN if any difference is NaN). */
int gbtd_tensor_max_abs_diff(const gbtd_tensor *a, const gbtd_tensor *b, double *out);

/* ---- float32 conversion ---------------------------------------------------------------- */

/* dst (any strides, shape already set) <- row-major float buffer of numel(dst) values. */
void gbtd_tensor_from_float(gbtd_tensor *dst, const float *src);
/* Row-major float buffer of numel(src) values <- src (rounded to nearest). */
void gbtd_tensor_to_float(const gbtd_tensor *src, float *dst);

#ifdef __cplusplus
}
#endif
#endif
