/* gbtd models: helpers shared by the module's sources (not installed). */
#ifndef GBTD_MODELS_INTERNAL_H
#define GBTD_MODELS_INTERNAL_H

#include <stddef.h>

#include "models/models.h"

/* Build the (unfinalised) graph of arch; stride_on_1x1 selects the v1 post-activation
 * bottleneck (stride on the first 1x1), otherwise gbtd_arch_build. */
int models_build_graph_(const gbtd_arch *arch, bool stride_on_1x1, gbtd_net *net);

/* Name in the file of a network entry (prefix + name, or the Keras name). Returns false when
 * the entry has no counterpart in this layout. *transpose is set for the Keras Dense kernel. */
bool models_file_name_(const gbtd_model_info *info, const char *entry, char *out, size_t len,
                       bool *transpose);

/* Check that the network's entries and the set's tensors correspond one to one (names and
 * shapes); on failure write the reason to why[len] and return an error status. */
int models_match_(const gbtd_model_info *info, const gbtd_net *net, const gbtd_tensor_set *s,
                  char *why, size_t len);

/* Is the tensor ignored by every layout (num_batches_tracked counters)? */
bool models_ignored_(const char *name);

#endif
