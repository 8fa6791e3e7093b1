/* gbtd decomp: what every decomposition shares — stop reasons, the per-iteration callback,
 * the _info result, and error metrics. */
#ifndef GBTD_DECOMP_COMMON_H
#define GBTD_DECOMP_COMMON_H

#include <stdint.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gbtd_stop_reason {
    GBTD_STOP_NONE = 0,     /* not run */
    GBTD_STOP_TOL = 1,      /* relative change of the error fell below tol */
    GBTD_STOP_MAX_ITER = 2, /* max_iter reached */
    GBTD_STOP_TIME = 3,     /* time budget spent */
    GBTD_STOP_CALLBACK = 4, /* the callback asked to stop */
    GBTD_STOP_EXACT = 5,    /* error at the floor (exact fit or direct method, no iterations) */
    GBTD_STOP_ERROR_TOL = 6 /* relative error fell below the requested target */
} gbtd_stop_reason;

/* Short name: "tol", "max_iter", "time", "callback", "exact", "error_tol", "none". */
const char *gbtd_stop_reason_str(gbtd_stop_reason r);

/* Called after each iteration with the iteration number (1-based), the current relative error
 * ||X - model|| / ||X||, and seconds since the start. Return non-zero to stop. */
typedef int (*gbtd_iter_callback)(int iter, double rel_error, double elapsed_s, void *ctx);

/* Result of an iterative decomposition. error_history is owned by the info (released by
 * gbtd_decomp_info_free); it holds one entry per iteration of the best run (restarts keep the
 * best). Times are wall-clock seconds. */
typedef struct gbtd_decomp_info {
    int iterations;
    double rel_error;
    double *error_history;
    int history_len;
    int history_cap;
    gbtd_stop_reason stop;
    double time_init;    /* initialisation (SVDs, random starts) */
    double time_iterate; /* iterations */
    double time_total;
    int restarts;        /* runs made */
    int best_restart;    /* index of the run kept */
} gbtd_decomp_info;

void gbtd_decomp_info_init(gbtd_decomp_info *info);
void gbtd_decomp_info_free(gbtd_decomp_info *info);
/* Append one error to the history (grows the buffer). GBTD_ENOMEM on failure. */
int gbtd_decomp_info_push(gbtd_decomp_info *info, double rel_error);

/* Monotonic wall clock in seconds. */
double gbtd_wall_time(void);

/* ||X - Y||_F / ||X||_F (||X - Y||_F when X is zero). Shapes must agree. */
int gbtd_relative_error(const gbtd_tensor *x, const gbtd_tensor *y, double *out);

#ifdef __cplusplus
}
#endif
#endif
