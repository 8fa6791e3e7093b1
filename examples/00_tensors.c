/* 00_tensors: the dense tensor of gbtd — allocate, fill, index, take views (no copies), compute
 * norms, and read an error message. Build: cc 00_tensors.c $(pkg-config --cflags --libs gbtd) */
#include <math.h>
#include <stdio.h>

#include "gbtd.h"

static void print_tensor_info(const char *what, const gbtd_tensor *t)
{
    char shape[64];
    printf("%-22s shape %-12s strides (", what, gbtd_shape_str(t->ndim, t->shape, shape, sizeof shape));
    for (int k = 0; k < t->ndim; k++) printf("%s%lld", k ? ", " : "", (long long)t->stride[k]);
    printf(")  contiguous %s\n", gbtd_tensor_is_contiguous(t) ? "yes" : "no");
}

int main(void)
{
    /* A 2 x 3 x 4 tensor, row-major (C order) like NumPy: x[i, j, k] = 100 i + 10 j + k. */
    const int64_t shape[3] = {2, 3, 4};
    gbtd_tensor x;
    if (gbtd_tensor_alloc(&x, 3, shape) != GBTD_OK) {
        fprintf(stderr, "%s\n", gbtd_last_error());
        return 1;
    }
    for (int64_t i = 0; i < 2; i++)
        for (int64_t j = 0; j < 3; j++)
            for (int64_t k = 0; k < 4; k++) {
                const int64_t idx[3] = {i, j, k};
                *gbtd_tensor_ptr(&x, idx) = (double)(100 * i + 10 * j + k);
            }
    print_tensor_info("x", &x);
    printf("numel %lld, x[1, 2, 3] = %g\n", (long long)gbtd_tensor_numel(&x),
           *gbtd_tensor_ptr(&x, (const int64_t[]){1, 2, 3}));

    /* Views share x's memory. A sub-tensor: x[1, 0:3:2, 1:3] (NumPy slice notation). */
    gbtd_tensor sub;
    gbtd_tensor_view_sub(&x, (const int64_t[]){1, 0, 1}, (const int64_t[]){1, 2, 2},
                         (const int64_t[]){1, 2, 1}, &sub);
    print_tensor_info("x[1, 0:3:2, 1:3]", &sub);
    printf("  values:");
    for (int64_t j = 0; j < 2; j++)
        for (int64_t k = 0; k < 2; k++) printf(" %g", *gbtd_tensor_ptr(&sub, (const int64_t[]){0, j, k}));
    printf("\n");

    /* A permutation of modes (NumPy transpose): mode k of the view is mode perm[k] of x. */
    gbtd_tensor xt;
    gbtd_tensor_view_permute(&x, (const int[]){2, 0, 1}, &xt);
    print_tensor_info("x.transpose(2, 0, 1)", &xt);
    printf("  xt[3, 1, 2] = %g (x[1, 2, 3])\n", *gbtd_tensor_ptr(&xt, (const int64_t[]){3, 1, 2}));

    /* Writing through a view changes x; cloning makes a contiguous copy. */
    gbtd_tensor_scale(&sub, -1.0);
    printf("after negating the view: x[1, 2, 2] = %g\n",
           *gbtd_tensor_ptr(&x, (const int64_t[]){1, 2, 2}));
    gbtd_tensor copy;
    gbtd_tensor_clone(&copy, &xt);
    print_tensor_info("clone of the transpose", &copy);

    /* Norms and inner products. */
    double ip = 0.0;
    gbtd_tensor_inner(&x, &x, &ip);
    printf("||x||_F = %.6f, sqrt(<x, x>) = %.6f\n", gbtd_tensor_norm(&x), sqrt(ip));

    /* Seeded random fills: the same seed gives the same numbers on every machine. */
    gbtd_rng *rng;
    gbtd_rng_alloc(42, &rng);
    gbtd_tensor_fill_normal(&x, rng, 0.0, 1.0);
    printf("normal fill (seed 42): x[0, 0, 0:3] = %.6f %.6f %.6f, ||x||_F = %.6f\n", x.data[0],
           x.data[1], x.data[2], gbtd_tensor_norm(&x));

    /* Errors come back as status codes with a one-line detail. */
    gbtd_tensor bad;
    const int rc = gbtd_tensor_view_sub(&x, (const int64_t[]){0, 0, 3}, (const int64_t[]){1, 1, 2},
                                        NULL, &bad);
    printf("out-of-range view: %s (%s)\n", gbtd_strerror(rc), gbtd_last_error());

    gbtd_rng_free(rng);
    gbtd_tensor_free(&copy);
    gbtd_tensor_free(&x);
    return 0;
}
