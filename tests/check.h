/* Minimal test harness shared by the unit tests: one named line per check, a summary line
 * "N passed, N failed", exit status 1 on any failure. Header-only. */
#ifndef GBTD_TESTS_CHECK_H
#define GBTD_TESTS_CHECK_H

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gbtd.h"

static int check_passed_ = 0, check_failed_ = 0;

static inline void check_report_(int ok, const char *name, const char *detail)
{
    if (ok) {
        check_passed_++;
        printf("ok   %s\n", name);
    } else {
        check_failed_++;
        printf("FAIL %s%s%s\n", name, detail ? ": " : "", detail ? detail : "");
    }
}

/* A boolean check. */
#define CHECK(cond, name) check_report_(!!(cond), (name), NULL)

/* A status check: expect `expected` from `expr`; on mismatch print the last error. */
#define CHECK_STATUS(expr, expected, name)                                                        \
    do {                                                                                          \
        int check_rc_ = (expr);                                                                   \
        char check_msg_[640];                                                                     \
        snprintf(check_msg_, sizeof check_msg_, "got %d (%s), expected %d; detail: %s",        \
                 check_rc_, gbtd_strerror(check_rc_), (int)(expected), gbtd_last_error());        \
        check_report_(check_rc_ == (expected), (name), check_msg_);                               \
    } while (0)

#define CHECK_OK(expr, name) CHECK_STATUS(expr, GBTD_OK, name)

/* |got - ref| <= atol + rtol * |ref|, with NaN/Inf failing unless both are the same Inf. */
static inline int check_close_(double got, double ref, double atol, double rtol)
{
    if (isnan(got) || isnan(ref)) return 0;
    if (isinf(got) || isinf(ref)) return got == ref;
    return fabs(got - ref) <= atol + rtol * fabs(ref);
}

#define CHECK_CLOSE(got, ref, atol, rtol, name)                                                   \
    do {                                                                                          \
        double check_g_ = (got), check_r_ = (ref);                                                \
        char check_msg_[160];                                                                     \
        snprintf(check_msg_, sizeof check_msg_, "got %.17g, ref %.17g, atol %.3g, rtol %.3g",   \
                 check_g_, check_r_, (double)(atol), (double)(rtol));                             \
        check_report_(check_close_(check_g_, check_r_, (atol), (rtol)), (name), check_msg_);      \
    } while (0)

/* A value that must not exceed a bound (errors, residuals). */
#define CHECK_LE(got, bound, name)                                                                \
    do {                                                                                          \
        double check_g_ = (got), check_b_ = (bound);                                              \
        char check_msg_[128];                                                                     \
        snprintf(check_msg_, sizeof check_msg_, "got %.6g, bound %.6g", check_g_, check_b_);     \
        check_report_(!isnan(check_g_) && check_g_ <= check_b_, (name), check_msg_);              \
    } while (0)

static inline int check_finish(void)
{
    printf("%d passed, %d failed\n", check_passed_, check_failed_);
    return check_failed_ ? 1 : 0;
}

/* ---- allocation-failure injection ----------------------------------------------------------
 * check_alloc_fail_after(n): the n-th allocation from now (0-based) and all after it fail;
 * n < 0 switches injection off. check_alloc_live() counts blocks not yet released, so a loop
 * can assert that a failed call leaked nothing. */
static long check_alloc_countdown_ = -1;
static long check_alloc_live_ = 0;

static void *check_alloc_fn_(size_t bytes, void *ctx)
{
    (void)ctx;
    if (check_alloc_countdown_ == 0) return NULL;
    if (check_alloc_countdown_ > 0) check_alloc_countdown_--;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
    check_alloc_live_++;
    return p;
}

static void check_release_fn_(void *p, void *ctx)
{
    (void)ctx;
    check_alloc_live_--;
    free(p);
}

static inline void check_alloc_install(void)
{
    static const gbtd_allocator a = {check_alloc_fn_, check_release_fn_, NULL};
    gbtd_set_allocator(&a);
}

static inline void check_alloc_fail_after(long n) { check_alloc_countdown_ = n; }
static inline long check_alloc_live(void) { return check_alloc_live_; }

#endif
