#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/blas.h"

static _Thread_local char last_error[512];

const char *gbtd_strerror(int status)
{
    switch (status) {
    case GBTD_OK: return "success";
    case GBTD_EINVAL: return "invalid argument";
    case GBTD_ENOMEM: return "out of memory";
    case GBTD_EOVERFLOW: return "size overflow";
    case GBTD_ESHAPE: return "shape mismatch";
    case GBTD_ERANGE: return "out of range";
    case GBTD_EIO: return "input/output error";
    case GBTD_EFORMAT: return "corrupt or unrecognised file format";
    case GBTD_EUNSUPPORTED: return "unsupported";
    case GBTD_ENOTFOUND: return "not found";
    case GBTD_ENONFINITE: return "non-finite value (NaN or Inf)";
    case GBTD_ENUMERIC: return "numerical failure";
    case GBTD_ENOCONV: return "did not converge";
    case GBTD_ECANCELLED: return "cancelled";
    default: return "unknown status";
    }
}

const char *gbtd_last_error(void) { return last_error; }

void gbtd_clear_error(void) { last_error[0] = '\0'; }

int gbtd_error(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

/* ---- allocation ------------------------------------------------------------------------- */

enum { GBTD_ALIGN = 64 };

static void *default_alloc(size_t bytes, void *ctx)
{
    (void)ctx;
    void *p = NULL;
    if (posix_memalign(&p, GBTD_ALIGN, bytes ? bytes : GBTD_ALIGN) != 0) return NULL;
    return p;
}

static void default_release(void *ptr, void *ctx)
{
    (void)ctx;
    free(ptr);
}

static gbtd_allocator allocator = {default_alloc, default_release, NULL};

void gbtd_set_allocator(const gbtd_allocator *a)
{
    if (a == NULL) {
        allocator.alloc = default_alloc;
        allocator.release = default_release;
        allocator.ctx = NULL;
    } else {
        allocator = *a;
    }
}

void *gbtd_malloc(size_t bytes)
{
    void *p = allocator.alloc(bytes ? bytes : 1, allocator.ctx);
    if (p == NULL) gbtd_error(GBTD_ENOMEM, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *gbtd_calloc(size_t count, size_t size)
{
    size_t bytes;
    if (gbtd_mul_size(count, size, &bytes) != GBTD_OK) return NULL;
    void *p = gbtd_malloc(bytes);
    if (p != NULL) memset(p, 0, bytes);
    return p;
}

void gbtd_free(void *ptr)
{
    if (ptr != NULL) allocator.release(ptr, allocator.ctx);
}

/* ---- checked arithmetic ----------------------------------------------------------------- */

int gbtd_mul_size(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return gbtd_error(GBTD_EOVERFLOW, "size overflow: %zu * %zu", a, b);
    *out = r;
    return GBTD_OK;
}

int gbtd_mul_i64(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return gbtd_error(GBTD_EOVERFLOW, "size overflow: %lld * %lld", (long long)a,
                          (long long)b);
    *out = r;
    return GBTD_OK;
}

int gbtd_prod_i64(const int64_t *v, int n, int64_t *out)
{
    int64_t p = 1;
    for (int i = 0; i < n; i++) {
        if (v[i] < 0) return gbtd_error(GBTD_EINVAL, "negative size %lld", (long long)v[i]);
        GBTD_CHECK(gbtd_mul_i64(p, v[i], &p));
    }
    *out = p;
    return GBTD_OK;
}

/* ---- threads ---------------------------------------------------------------------------- */

static int thread_count = 0;

void gbtd_set_threads(int n)
{
    if (n < 1) n = 1;
    thread_count = n;
    openblas_set_num_threads(n);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

int gbtd_get_threads(void)
{
    if (thread_count > 0) return thread_count;
    return openblas_get_num_threads();
}

const char *gbtd_version(void) { return GBTD_VERSION_STRING; }
