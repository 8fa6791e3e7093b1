/* gbtd nn: instantiation of the reference kernels in float (_ref) and double (_refd). */
#include <math.h>

#include "nn/ops_internal.h"

#define R float
#define FN(name) name##_ref
#include "nn/ref_impl.h"
#undef R
#undef FN

#define R double
#define FN(name) name##_refd
#define REF_DOUBLE 1
#include "nn/ref_impl.h"
#undef REF_DOUBLE
#undef R
#undef FN
