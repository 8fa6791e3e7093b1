#include "core/rng.h"

#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>

#include "core/status.h"

struct gbtd_rng {
    gsl_rng *g;
};

/* GSL's MT19937 takes an unsigned long seed and treats 0 as its default seed; fold the upper
 * half in so that 64-bit seeds differ, and keep the mapping fixed across platforms. */
static unsigned long fold_seed(uint64_t seed)
{
    uint64_t s = seed ^ (seed >> 32) * UINT64_C(0x9E3779B97F4A7C15);
    return (unsigned long)(s & 0xffffffffu) + 1u;
}

int gbtd_rng_alloc(uint64_t seed, gbtd_rng **out)
{
    *out = NULL;
    gbtd_rng *r = gbtd_malloc(sizeof *r);
    if (r == NULL) return GBTD_ENOMEM;
    r->g = gsl_rng_alloc(gsl_rng_mt19937);
    if (r->g == NULL) {
        gbtd_free(r);
        return gbtd_error(GBTD_ENOMEM, "rng: gsl_rng_alloc failed");
    }
    gsl_rng_set(r->g, fold_seed(seed));
    *out = r;
    return GBTD_OK;
}

void gbtd_rng_free(gbtd_rng *r)
{
    if (r == NULL) return;
    gsl_rng_free(r->g);
    gbtd_free(r);
}

void gbtd_rng_seed(gbtd_rng *r, uint64_t seed) { gsl_rng_set(r->g, fold_seed(seed)); }

double gbtd_rng_uniform(gbtd_rng *r) { return gsl_rng_uniform(r->g); }

double gbtd_rng_normal(gbtd_rng *r) { return gsl_ran_gaussian_ziggurat(r->g, 1.0); }

uint64_t gbtd_rng_uint(gbtd_rng *r, uint64_t n)
{
    if (n <= 1) return 0;
    if (n <= 0xffffffffu) return gsl_rng_uniform_int(r->g, (unsigned long)n);
    /* Two draws for ranges past 32 bits; rejection keeps it unbiased. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    for (;;) {
        uint64_t v = ((uint64_t)gsl_rng_get(r->g) << 32) ^ (uint64_t)gsl_rng_get(r->g);
        if (v < limit) return v % n;
    }
}
