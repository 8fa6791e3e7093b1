#include "decomp/common.h"

#include <math.h>
#include <string.h>
#include <time.h>

#include "core/status.h"

const char *gbtd_stop_reason_str(gbtd_stop_reason r)
{
    switch (r) {
    case GBTD_STOP_TOL: return "tol";
    case GBTD_STOP_MAX_ITER: return "max_iter";
    case GBTD_STOP_TIME: return "time";
    case GBTD_STOP_CALLBACK: return "callback";
    case GBTD_STOP_EXACT: return "exact";
    case GBTD_STOP_ERROR_TOL: return "error_tol";
    default: return "none";
    }
}

void gbtd_decomp_info_init(gbtd_decomp_info *info) { memset(info, 0, sizeof *info); }

void gbtd_decomp_info_free(gbtd_decomp_info *info)
{
    if (info == NULL) return;
    gbtd_free(info->error_history);
    memset(info, 0, sizeof *info);
}

int gbtd_decomp_info_push(gbtd_decomp_info *info, double rel_error)
{
    if (info->history_len == info->history_cap) {
        const int cap = info->history_cap ? 2 * info->history_cap : 64;
        double *h = gbtd_malloc((size_t)cap * sizeof(double));
        if (h == NULL) return GBTD_ENOMEM;
        if (info->history_len) memcpy(h, info->error_history, (size_t)info->history_len * sizeof(double));
        gbtd_free(info->error_history);
        info->error_history = h;
        info->history_cap = cap;
    }
    info->error_history[info->history_len++] = rel_error;
    return GBTD_OK;
}

double gbtd_wall_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int gbtd_relative_error(const gbtd_tensor *x, const gbtd_tensor *y, double *out)
{
    if (!gbtd_tensor_same_shape(x, y)) {
        char a[128], b[128];
        return gbtd_error(GBTD_ESHAPE, "relative_error: shapes %s and %s differ",
                          gbtd_shape_str(x->ndim, x->shape, a, sizeof a),
                          gbtd_shape_str(y->ndim, y->shape, b, sizeof b));
    }
    /* Scaled accumulation of ||x - y||^2 without a temporary. */
    gbtd_tensor d;
    GBTD_CHECK(gbtd_tensor_clone(&d, y));
    int rc = gbtd_tensor_axpy(-1.0, x, &d);
    if (rc == GBTD_OK) {
        const double num = gbtd_tensor_norm(&d), den = gbtd_tensor_norm(x);
        *out = den > 0.0 ? num / den : num;
    }
    gbtd_tensor_free(&d);
    return rc;
}
