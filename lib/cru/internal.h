/* gbtd cru: helpers shared by the library's CRU files (not installed). */
#ifndef GBTD_CRU_INTERNAL_H
#define GBTD_CRU_INTERNAL_H

#include "nn/data.h"

/* The normalisation of d into m, s (4 values each, unused ones 0): mean/std when both are given,
 * else the data set's named constants, else its statistics. */
int gbtd_cru_norm_(const gbtd_dataset *d, const float *mean, const float *std, float *m, float *s);

#endif
