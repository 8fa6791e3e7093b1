#include <stdio.h>

#include "cli.h"
#include "gbtd.h"

int cmd_info(int argc, char **argv)
{
    if (argc < 2) return cli_usage_error("info", "missing FILE");
    return cli_usage_error("info", "not available yet");
}
