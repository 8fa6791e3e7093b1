/* Helpers shared by gbtd train and gbtd eval. */
#ifndef GBTD_TOOLS_NN_CLI_H
#define GBTD_TOOLS_NN_CLI_H

#include <stddef.h>

#include "nn/data.h"

/* Load the training and test sets of "fashion-mnist" or "cifar10" (tr may be NULL: test only).
 * Returns 0 or the exit status after printing the error. */
int nn_cli_load_data(const char *cmd, const char *data, const char *dir, gbtd_dataset *tr,
                     gbtd_dataset *te);
/* spec + ":input=CxHxW" of the data set (or ",input=..."), unless spec sets input= itself. */
void nn_cli_spec_for_data(const char *spec, const gbtd_dataset *d, char *out, size_t len);

#endif
