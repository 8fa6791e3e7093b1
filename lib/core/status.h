/* gbtd core: status codes, error detail, allocation hooks, checked size arithmetic.
 *
 * Every library function that can fail returns an int status: GBTD_OK (0) or one of the
 * negative codes below. The library never prints, exits or aborts. After a failure,
 * gbtd_last_error() returns a one-line detail (the file, the field or the shapes involved),
 * kept per thread until the next failure. */
#ifndef GBTD_CORE_STATUS_H
#define GBTD_CORE_STATUS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum gbtd_status {
    GBTD_OK = 0,
    GBTD_EINVAL = -1,       /* invalid argument (NULL pointer, negative size, bad option) */
    GBTD_ENOMEM = -2,       /* allocation failed */
    GBTD_EOVERFLOW = -3,    /* a size computation overflowed int64 / size_t */
    GBTD_ESHAPE = -4,       /* shapes of the operands do not agree */
    GBTD_ERANGE = -5,       /* mode, index or rank out of range */
    GBTD_EIO = -6,          /* file could not be opened, read or written */
    GBTD_EFORMAT = -7,      /* file contents are corrupt, truncated or not the expected format */
    GBTD_EUNSUPPORTED = -8, /* valid request that this version does not support (dtype, layout) */
    GBTD_ENOTFOUND = -9,    /* named item (dataset, tensor, layer) does not exist */
    GBTD_ENONFINITE = -10,  /* NaN or Inf in input data */
    GBTD_ENUMERIC = -11,    /* a numerical routine (LAPACK, solver) failed */
    GBTD_ENOCONV = -12,     /* an iterative method did not converge where convergence was required */
    GBTD_ECANCELLED = -13   /* a user callback asked to stop */
};

/* Short, static description of a status code ("shape mismatch"). Never NULL. */
const char *gbtd_strerror(int status);

/* Detail of the last failure on this thread, e.g. "ttm: mode 4 out of range for a 3-way tensor".
 * Empty string when nothing has failed yet. */
const char *gbtd_last_error(void);

/* Record a failure: formats the detail (printf-style) and returns `status`, so that
 * `return gbtd_error(GBTD_ESHAPE, "...", ...);` is the idiom. */
int gbtd_error(int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Clear the recorded detail. */
void gbtd_clear_error(void);

/* ---- allocation ---------------------------------------------------------------------------
 * All library allocations go through these hooks. gbtd_set_allocator(NULL) restores malloc.
 * Memory is 64-byte aligned. The hooks are process-wide and not thread-safe to change. */
typedef struct gbtd_allocator {
    void *(*alloc)(size_t bytes, void *ctx); /* may return NULL */
    void (*release)(void *ptr, void *ctx);   /* never called with NULL */
    void *ctx;
} gbtd_allocator;

void gbtd_set_allocator(const gbtd_allocator *a);

/* Aligned allocation through the hooks; zero bytes returns a unique non-NULL pointer.
 * On failure returns NULL and records GBTD_ENOMEM with the size. */
void *gbtd_malloc(size_t bytes);
/* As gbtd_malloc with overflow-checked count*size and zeroed memory. */
void *gbtd_calloc(size_t count, size_t size);
void gbtd_free(void *ptr);

/* ---- checked arithmetic -------------------------------------------------------------------
 * Return 0 and store the result, or return GBTD_EOVERFLOW (recording the detail). */
int gbtd_mul_size(size_t a, size_t b, size_t *out);
int gbtd_mul_i64(int64_t a, int64_t b, int64_t *out);
/* Product of n non-negative int64 sizes (1 for n == 0), checked. */
int gbtd_prod_i64(const int64_t *v, int n, int64_t *out);

/* ---- threads ------------------------------------------------------------------------------
 * Sets the thread count of OpenBLAS and of gbtd's own OpenMP loops (n >= 1). */
void gbtd_set_threads(int n);
int gbtd_get_threads(void);

/* Library version string "MAJOR.MINOR.PATCH". */
const char *gbtd_version(void);

#define GBTD_CHECK(expr)                                                                          \
    do {                                                                                          \
        int gbtd_check_rc_ = (expr);                                                              \
        if (gbtd_check_rc_ != GBTD_OK) return gbtd_check_rc_;                                     \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
