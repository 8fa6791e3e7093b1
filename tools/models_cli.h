/* Helpers of the gbtd tool for recognised networks (gbtd info, gbtd export). */
#ifndef GBTD_TOOLS_MODELS_CLI_H
#define GBTD_TOOLS_MODELS_CLI_H

#include <stdbool.h>
#include <stdio.h>

/* Print the network that the weights file at `path` holds (or why none was recognised): as
 * indented text lines, or as a JSON fragment `, "network": {...}` (`"network": null, "why":
 * "..."` when unrecognised) to be placed inside an object. Files that cannot be read as
 * weights print nothing. */
void models_cli_report(FILE *f, const char *path, bool json);

#endif
