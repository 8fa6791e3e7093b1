/* gbtd nn: naive reference kernels, written once and instantiated twice by ref.c:
 * R = float with suffix _ref, and R = double with suffix _refd (REF_DOUBLE defined).
 * Plain loops, sums accumulated in double, no workspace, no threads: the slow, obviously right
 * twins the tests check the fast kernels (and, in double, the finite differences) against.
 * No include guard on purpose. Expects R, FN(name) and optionally REF_DOUBLE. */

int FN(gbtd_conv2d_forward)(const gbtd_conv2d_shape *s0, const R *x, const R *wt, const R *b,
                            R *y)
{
    static const char *fn = "conv2d_forward_ref";
    gbtd_conv2d_shape s;
    GBTD_CHECK(nn_conv_shape(fn, s0, &s));
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, wt);
    NN_NONNULL(fn, y);
    const int64_t cig = s.c_in / s.groups, cog = s.c_out / s.groups;
    for (int64_t n = 0; n < s.n; n++)
        for (int64_t o = 0; o < s.c_out; o++) {
            const int64_t c0 = (o / cog) * cig;
            for (int64_t i = 0; i < s.h_out; i++)
                for (int64_t j = 0; j < s.w_out; j++) {
                    double acc = b ? (double)b[o] : 0.0;
                    for (int64_t c = 0; c < cig; c++)
                        for (int64_t p = 0; p < s.kh; p++)
                            for (int64_t q = 0; q < s.kw; q++) {
                                const int64_t iy = i * s.stride + p - s.pad;
                                const int64_t ix = j * s.stride + q - s.pad;
                                if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
                                acc += (double)wt[((o * cig + c) * s.kh + p) * s.kw + q] *
                                       (double)x[((n * s.c_in + c0 + c) * s.h + iy) * s.w + ix];
                            }
                    y[((n * s.c_out + o) * s.h_out + i) * s.w_out + j] = (R)acc;
                }
        }
    return GBTD_OK;
}

int FN(gbtd_conv2d_backward)(const gbtd_conv2d_shape *s0, const R *x, const R *wt, const R *dy,
                             R *dx, R *dw, R *db)
{
    static const char *fn = "conv2d_backward_ref";
    gbtd_conv2d_shape s;
    GBTD_CHECK(nn_conv_shape(fn, s0, &s));
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, wt);
    NN_NONNULL(fn, dy);
    const int64_t cig = s.c_in / s.groups, cog = s.c_out / s.groups;
    if (db)
        for (int64_t o = 0; o < s.c_out; o++) {
            double acc = 0.0;
            for (int64_t n = 0; n < s.n; n++)
                for (int64_t t = 0; t < s.h_out * s.w_out; t++)
                    acc += (double)dy[(n * s.c_out + o) * s.h_out * s.w_out + t];
            db[o] += (R)acc;
        }
    if (dw)
        for (int64_t o = 0; o < s.c_out; o++) {
            const int64_t c0 = (o / cog) * cig;
            for (int64_t c = 0; c < cig; c++)
                for (int64_t p = 0; p < s.kh; p++)
                    for (int64_t q = 0; q < s.kw; q++) {
                        double acc = 0.0;
                        for (int64_t n = 0; n < s.n; n++)
                            for (int64_t i = 0; i < s.h_out; i++)
                                for (int64_t j = 0; j < s.w_out; j++) {
                                    const int64_t iy = i * s.stride + p - s.pad;
                                    const int64_t ix = j * s.stride + q - s.pad;
                                    if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
                                    acc += (double)dy[((n * s.c_out + o) * s.h_out + i) * s.w_out + j] *
                                           (double)x[((n * s.c_in + c0 + c) * s.h + iy) * s.w + ix];
                                }
                        dw[((o * cig + c) * s.kh + p) * s.kw + q] += (R)acc;
                    }
        }
    if (dx)
        for (int64_t n = 0; n < s.n; n++)
            for (int64_t ci = 0; ci < s.c_in; ci++) {
                const int64_t g = ci / cig, c = ci - g * cig;
                for (int64_t iy = 0; iy < s.h; iy++)
                    for (int64_t ix = 0; ix < s.w; ix++) {
                        double acc = 0.0;
                        for (int64_t o = g * cog; o < (g + 1) * cog; o++)
                            for (int64_t p = 0; p < s.kh; p++)
                                for (int64_t q = 0; q < s.kw; q++) {
                                    const int64_t ty = iy + s.pad - p, tx = ix + s.pad - q;
                                    if (ty < 0 || tx < 0 || ty % s.stride || tx % s.stride) continue;
                                    const int64_t i = ty / s.stride, j = tx / s.stride;
                                    if (i >= s.h_out || j >= s.w_out) continue;
                                    acc += (double)wt[((o * cig + c) * s.kh + p) * s.kw + q] *
                                           (double)dy[((n * s.c_out + o) * s.h_out + i) * s.w_out + j];
                                }
                        dx[((n * s.c_in + ci) * s.h + iy) * s.w + ix] += (R)acc;
                    }
            }
    return GBTD_OK;
}

int FN(gbtd_bn_forward_train)(const gbtd_bn_shape *s, const R *x, const R *gamma, const R *beta,
                              R eps, R momentum, R *running_mean, R *running_var, R *mean,
                              R *rstd, R *y)
{
    static const char *fn = "bn_forward_train_ref";
    GBTD_CHECK(nn_bn_shape(fn, s));
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, mean);
    NN_NONNULL(fn, rstd);
    NN_NONNULL(fn, y);
    const int64_t m = s->n * s->hw;
    if (m < 2) return gbtd_error(GBTD_EINVAL, "%s: batch statistics need n*h*w >= 2", fn);
    for (int64_t c = 0; c < s->c; c++) {
        double sum = 0.0, sq = 0.0;
        for (int64_t n = 0; n < s->n; n++)
            for (int64_t t = 0; t < s->hw; t++) sum += (double)x[(n * s->c + c) * s->hw + t];
        const double mu = sum / (double)m;
        for (int64_t n = 0; n < s->n; n++)
            for (int64_t t = 0; t < s->hw; t++) {
                const double d = (double)x[(n * s->c + c) * s->hw + t] - mu;
                sq += d * d;
            }
        const double var = sq / (double)m;
        const double r = 1.0 / sqrt(var + (double)eps);
        const double g = gamma ? (double)gamma[c] : 1.0, bb = beta ? (double)beta[c] : 0.0;
        for (int64_t n = 0; n < s->n; n++)
            for (int64_t t = 0; t < s->hw; t++) {
                const int64_t k = (n * s->c + c) * s->hw + t;
                y[k] = (R)(g * ((double)x[k] - mu) * r + bb);
            }
        mean[c] = (R)mu;
        rstd[c] = (R)r;
        if (running_mean)
            running_mean[c] = (R)((1.0 - (double)momentum) * (double)running_mean[c] +
                                  (double)momentum * mu);
        if (running_var)
            running_var[c] = (R)((1.0 - (double)momentum) * (double)running_var[c] +
                                 (double)momentum * var * (double)m / (double)(m - 1));
    }
    return GBTD_OK;
}

int FN(gbtd_bn_forward_eval)(const gbtd_bn_shape *s, const R *x, const R *gamma, const R *beta,
                             R eps, const R *running_mean, const R *running_var, R *y)
{
    static const char *fn = "bn_forward_eval_ref";
    GBTD_CHECK(nn_bn_shape(fn, s));
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, running_mean);
    NN_NONNULL(fn, running_var);
    NN_NONNULL(fn, y);
    for (int64_t c = 0; c < s->c; c++) {
        const double r = 1.0 / sqrt((double)running_var[c] + (double)eps);
        const double g = gamma ? (double)gamma[c] : 1.0, bb = beta ? (double)beta[c] : 0.0;
        for (int64_t n = 0; n < s->n; n++)
            for (int64_t t = 0; t < s->hw; t++) {
                const int64_t k = (n * s->c + c) * s->hw + t;
                y[k] = (R)(g * ((double)x[k] - (double)running_mean[c]) * r + bb);
            }
    }
    return GBTD_OK;
}

int FN(gbtd_bn_backward)(const gbtd_bn_shape *s, const R *x, const R *gamma, const R *mean,
                         const R *rstd, const R *dy, R *dx, R *dgamma, R *dbeta)
{
    static const char *fn = "bn_backward_ref";
    GBTD_CHECK(nn_bn_shape(fn, s));
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, mean);
    NN_NONNULL(fn, rstd);
    NN_NONNULL(fn, dy);
    const double m = (double)(s->n * s->hw);
    for (int64_t c = 0; c < s->c; c++) {
        double sdy = 0.0, sdyxh = 0.0;
        const double mu = (double)mean[c], r = (double)rstd[c];
        for (int64_t n = 0; n < s->n; n++)
            for (int64_t t = 0; t < s->hw; t++) {
                const int64_t k = (n * s->c + c) * s->hw + t;
                sdy += (double)dy[k];
                sdyxh += (double)dy[k] * ((double)x[k] - mu) * r;
            }
        if (dgamma) dgamma[c] += (R)sdyxh;
        if (dbeta) dbeta[c] += (R)sdy;
        if (!dx) continue;
        const double g = gamma ? (double)gamma[c] : 1.0;
        for (int64_t n = 0; n < s->n; n++)
            for (int64_t t = 0; t < s->hw; t++) {
                const int64_t k = (n * s->c + c) * s->hw + t;
                const double xh = ((double)x[k] - mu) * r;
                dx[k] += (R)(g * r * ((double)dy[k] - sdy / m - xh * sdyxh / m));
            }
    }
    return GBTD_OK;
}

int FN(gbtd_linear_forward)(int64_t n, int64_t in, int64_t out, const R *x, const R *wt,
                            const R *b, R *y)
{
    static const char *fn = "linear_forward_ref";
    NN_ATLEAST(fn, n, 1);
    NN_ATLEAST(fn, in, 1);
    NN_ATLEAST(fn, out, 1);
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, wt);
    NN_NONNULL(fn, y);
    for (int64_t r = 0; r < n; r++)
        for (int64_t o = 0; o < out; o++) {
            double acc = b ? (double)b[o] : 0.0;
            for (int64_t i = 0; i < in; i++) acc += (double)x[r * in + i] * (double)wt[o * in + i];
            y[r * out + o] = (R)acc;
        }
    return GBTD_OK;
}

int FN(gbtd_linear_backward)(int64_t n, int64_t in, int64_t out, const R *x, const R *wt,
                             const R *dy, R *dx, R *dw, R *db)
{
    static const char *fn = "linear_backward_ref";
    NN_ATLEAST(fn, n, 1);
    NN_ATLEAST(fn, in, 1);
    NN_ATLEAST(fn, out, 1);
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, wt);
    NN_NONNULL(fn, dy);
    if (dx)
        for (int64_t r = 0; r < n; r++)
            for (int64_t i = 0; i < in; i++) {
                double acc = 0.0;
                for (int64_t o = 0; o < out; o++) acc += (double)dy[r * out + o] * (double)wt[o * in + i];
                dx[r * in + i] += (R)acc;
            }
    if (dw)
        for (int64_t o = 0; o < out; o++)
            for (int64_t i = 0; i < in; i++) {
                double acc = 0.0;
                for (int64_t r = 0; r < n; r++) acc += (double)dy[r * out + o] * (double)x[r * in + i];
                dw[o * in + i] += (R)acc;
            }
    if (db)
        for (int64_t o = 0; o < out; o++) {
            double acc = 0.0;
            for (int64_t r = 0; r < n; r++) acc += (double)dy[r * out + o];
            db[o] += (R)acc;
        }
    return GBTD_OK;
}

#ifdef REF_DOUBLE

int FN(gbtd_relu_forward)(int64_t len, const R *x, R *y)
{
    NN_ATLEAST("relu_forward_refd", len, 1);
    for (int64_t i = 0; i < len; i++) y[i] = x[i] > 0 ? x[i] : 0;
    return GBTD_OK;
}

int FN(gbtd_relu_backward)(int64_t len, const R *y, const R *dy, R *dx)
{
    NN_ATLEAST("relu_backward_refd", len, 1);
    for (int64_t i = 0; i < len; i++)
        if (y[i] > 0) dx[i] += dy[i];
    return GBTD_OK;
}

int FN(gbtd_maxpool2d_forward)(const gbtd_pool2d_shape *s0, const R *x, R *y, int32_t *argmax)
{
    gbtd_pool2d_shape s;
    GBTD_CHECK(nn_pool_shape("maxpool2d_forward_refd", s0, &s));
    for (int64_t pl = 0; pl < s.n * s.c; pl++)
        for (int64_t i = 0; i < s.h_out; i++)
            for (int64_t j = 0; j < s.w_out; j++) {
                R best = 0;
                int64_t arg = -1;
                for (int64_t p = 0; p < s.k; p++)
                    for (int64_t q = 0; q < s.k; q++) {
                        const int64_t iy = i * s.stride + p - s.pad, ix = j * s.stride + q - s.pad;
                        if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
                        const R v = x[(pl * s.h + iy) * s.w + ix];
                        if (arg < 0 || v > best) {
                            best = v;
                            arg = iy * s.w + ix;
                        }
                    }
                y[(pl * s.h_out + i) * s.w_out + j] = best;
                argmax[(pl * s.h_out + i) * s.w_out + j] = (int32_t)arg;
            }
    return GBTD_OK;
}

int FN(gbtd_maxpool2d_backward)(const gbtd_pool2d_shape *s0, const int32_t *argmax, const R *dy,
                                R *dx)
{
    gbtd_pool2d_shape s;
    GBTD_CHECK(nn_pool_shape("maxpool2d_backward_refd", s0, &s));
    for (int64_t pl = 0; pl < s.n * s.c; pl++)
        for (int64_t t = 0; t < s.h_out * s.w_out; t++)
            dx[pl * s.h * s.w + argmax[pl * s.h_out * s.w_out + t]] += dy[pl * s.h_out * s.w_out + t];
    return GBTD_OK;
}

int FN(gbtd_avgpool2d_forward)(const gbtd_pool2d_shape *s0, const R *x, R *y)
{
    gbtd_pool2d_shape s;
    GBTD_CHECK(nn_pool_shape("avgpool2d_forward_refd", s0, &s));
    for (int64_t pl = 0; pl < s.n * s.c; pl++)
        for (int64_t i = 0; i < s.h_out; i++)
            for (int64_t j = 0; j < s.w_out; j++) {
                double acc = 0.0;
                for (int64_t p = 0; p < s.k; p++)
                    for (int64_t q = 0; q < s.k; q++) {
                        const int64_t iy = i * s.stride + p - s.pad, ix = j * s.stride + q - s.pad;
                        if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
                        acc += (double)x[(pl * s.h + iy) * s.w + ix];
                    }
                y[(pl * s.h_out + i) * s.w_out + j] = (R)(acc / (double)(s.k * s.k));
            }
    return GBTD_OK;
}

int FN(gbtd_avgpool2d_backward)(const gbtd_pool2d_shape *s0, const R *dy, R *dx)
{
    gbtd_pool2d_shape s;
    GBTD_CHECK(nn_pool_shape("avgpool2d_backward_refd", s0, &s));
    for (int64_t pl = 0; pl < s.n * s.c; pl++)
        for (int64_t i = 0; i < s.h_out; i++)
            for (int64_t j = 0; j < s.w_out; j++) {
                const R g = dy[(pl * s.h_out + i) * s.w_out + j] / (R)(s.k * s.k);
                for (int64_t p = 0; p < s.k; p++)
                    for (int64_t q = 0; q < s.k; q++) {
                        const int64_t iy = i * s.stride + p - s.pad, ix = j * s.stride + q - s.pad;
                        if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
                        dx[(pl * s.h + iy) * s.w + ix] += g;
                    }
            }
    return GBTD_OK;
}

int FN(gbtd_global_avgpool_forward)(int64_t n, int64_t c, int64_t hw, const R *x, R *y)
{
    NN_ATLEAST("global_avgpool_forward_refd", n * c * hw, 1);
    for (int64_t pl = 0; pl < n * c; pl++) {
        double acc = 0.0;
        for (int64_t t = 0; t < hw; t++) acc += (double)x[pl * hw + t];
        y[pl] = (R)(acc / (double)hw);
    }
    return GBTD_OK;
}

int FN(gbtd_global_avgpool_backward)(int64_t n, int64_t c, int64_t hw, const R *dy, R *dx)
{
    NN_ATLEAST("global_avgpool_backward_refd", n * c * hw, 1);
    for (int64_t pl = 0; pl < n * c; pl++)
        for (int64_t t = 0; t < hw; t++) dx[pl * hw + t] += dy[pl] / (R)hw;
    return GBTD_OK;
}

int FN(gbtd_xent_forward)(int64_t n, int64_t k, const R *logits, const int32_t *labels,
                          R smoothing, R *probs, R *losses, R *loss)
{
    NN_ATLEAST("xent_forward_refd", n, 1);
    NN_ATLEAST("xent_forward_refd", k, 1);
    for (int64_t r = 0; r < n; r++)
        if (labels[r] < 0 || labels[r] >= k)
            return gbtd_error(GBTD_ERANGE, "xent_forward_refd: label %d of row %lld not in [0, %lld)",
                              (int)labels[r], (long long)r, (long long)k);
    double total = 0.0;
    for (int64_t r = 0; r < n; r++) {
        const R *z = logits + r * k;
        double mx = (double)z[0], se = 0.0;
        for (int64_t j = 1; j < k; j++) mx = fmax(mx, (double)z[j]);
        for (int64_t j = 0; j < k; j++) se += exp((double)z[j] - mx);
        const double lse = mx + log(se);
        double l = 0.0;
        for (int64_t j = 0; j < k; j++) {
            const double q = (j == labels[r] ? 1.0 - (double)smoothing : 0.0) + (double)smoothing / (double)k;
            l -= q * ((double)z[j] - lse);
            probs[r * k + j] = (R)exp((double)z[j] - lse);
        }
        if (losses) losses[r] = (R)l;
        total += l;
    }
    *loss = (R)(total / (double)n);
    return GBTD_OK;
}

int FN(gbtd_xent_backward)(int64_t n, int64_t k, const R *probs, const int32_t *labels,
                           R smoothing, R dloss, R *dlogits)
{
    NN_ATLEAST("xent_backward_refd", n, 1);
    NN_ATLEAST("xent_backward_refd", k, 1);
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < k; j++) {
            const double q = (j == labels[r] ? 1.0 - (double)smoothing : 0.0) + (double)smoothing / (double)k;
            dlogits[r * k + j] += (R)((double)dloss * ((double)probs[r * k + j] - q) / (double)n);
        }
    return GBTD_OK;
}

int FN(gbtd_shortcut_a_forward)(int64_t n, int64_t c, int64_t h, int64_t w, int64_t pad_c,
                                const R *x, R *y)
{
    NN_ATLEAST("shortcut_a_forward_refd", n * c * h * w, 1);
    const int64_t co = c + 2 * pad_c, ho = (h + 1) / 2, wo = (w + 1) / 2;
    for (int64_t b = 0; b < n; b++)
        for (int64_t o = 0; o < co; o++)
            for (int64_t i = 0; i < ho; i++)
                for (int64_t j = 0; j < wo; j++) {
                    const int64_t ci = o - pad_c;
                    y[((b * co + o) * ho + i) * wo + j] =
                        (ci < 0 || ci >= c) ? 0 : x[((b * c + ci) * h + 2 * i) * w + 2 * j];
                }
    return GBTD_OK;
}

int FN(gbtd_shortcut_a_backward)(int64_t n, int64_t c, int64_t h, int64_t w, int64_t pad_c,
                                 const R *dy, R *dx)
{
    NN_ATLEAST("shortcut_a_backward_refd", n * c * h * w, 1);
    const int64_t co = c + 2 * pad_c, ho = (h + 1) / 2, wo = (w + 1) / 2;
    for (int64_t b = 0; b < n; b++)
        for (int64_t ci = 0; ci < c; ci++)
            for (int64_t i = 0; i < ho; i++)
                for (int64_t j = 0; j < wo; j++)
                    dx[((b * c + ci) * h + 2 * i) * w + 2 * j] += dy[((b * co + ci + pad_c) * ho + i) * wo + j];
    return GBTD_OK;
}

#endif /* REF_DOUBLE */
