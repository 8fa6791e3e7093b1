/* gbtd: tensor decompositions of deep networks. The one header a user includes.
 *
 * Conventions (written once, pinned by the fixture tests in tests/linalg):
 *  - tensors are row-major (C order), double precision for decompositions, modes numbered
 *    from 0; strides are signed element counts (core/tensor.h);
 *  - unfold(X, n) is I_n x prod(other sizes) with the other indices in C order, the same matrix
 *    as TensorLy's unfold (moveaxis(X, n, 0).reshape(I_n, -1)); fold inverts it;
 *  - the mode-n product Y = X x_n U with U of shape J x I_n is
 *    Y[..., j, ...] = sum_i U[j, i] X[..., i, ...] (TensorLy's mode_dot);
 *  - khatri_rao(A_0, ..., A_{K-1}) has row index i_0 * I_1 * ... + ... + i_{K-1} (the first
 *    matrix varies slowest), so unfold(X, n) = A_n diag(w) khatri_rao(A_m for m != n)^T for a CP
 *    tensor, exactly as in TensorLy;
 *  - a convolution kernel is K[h, w, i, o] (kh x kw x C_in x C_out); PyTorch stores W[o, i, h, w].
 *
 * Every function returns GBTD_OK (0) or a negative gbtd_status; gbtd_strerror() names the
 * code and gbtd_last_error() gives the detail. Example:
 *
 *     gbtd_tensor x, y, u;
 *     int64_t shape[3] = {4, 5, 6};
 *     gbtd_rng *rng;
 *     gbtd_rng_alloc(42, &rng);
 *     gbtd_tensor_alloc(&x, 3, shape);
 *     gbtd_tensor_fill_normal(&x, rng, 0.0, 1.0);
 *     gbtd_matrix_alloc(&u, 2, 5);                  // J = 2, I_1 = 5
 *     gbtd_tensor_fill_normal(&u, rng, 0.0, 1.0);
 *     if (gbtd_ttm_alloc(&x, &u, 1, GBTD_NOTRANS, &y) != GBTD_OK)   // y is 4 x 2 x 6
 *         fprintf(stderr, "%s\n", gbtd_last_error());
 *     gbtd_tensor_free(&y); gbtd_tensor_free(&u); gbtd_tensor_free(&x); gbtd_rng_free(rng);
 */
#ifndef GBTD_H
#define GBTD_H

#include "core/status.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "linalg/linalg.h"
#include "decomp/common.h"
#include "decomp/tucker.h"
#include "decomp/cp.h"
#include "decomp/metrics.h"
#include "decomp/btd.h"
#include "io/io.h"
#include "nn/ops.h"
#include "cru/unit.h"
#include "cru/stage.h"
#include "cru/build.h"
#include "models/models.h"

#endif
