/* gbtd core: seeded random numbers (GSL's MT19937). The same seed gives the same numbers on
 * every machine: uniform numbers come straight from the generator, normal numbers from GSL's
 * ziggurat, neither depends on the thread count. */
#ifndef GBTD_CORE_RNG_H
#define GBTD_CORE_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gbtd_rng gbtd_rng;

/* Allocate a generator seeded with `seed`. Returns GBTD_OK or GBTD_ENOMEM. */
int gbtd_rng_alloc(uint64_t seed, gbtd_rng **out);
void gbtd_rng_free(gbtd_rng *r);
/* Reseed in place. */
void gbtd_rng_seed(gbtd_rng *r, uint64_t seed);

/* Uniform on [0, 1). */
double gbtd_rng_uniform(gbtd_rng *r);
/* Normal with mean 0 and standard deviation 1. */
double gbtd_rng_normal(gbtd_rng *r);
/* Uniform integer in [0, n), n >= 1. */
uint64_t gbtd_rng_uint(gbtd_rng *r, uint64_t n);

#ifdef __cplusplus
}
#endif
#endif
