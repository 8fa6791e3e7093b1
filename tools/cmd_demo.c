#include <stdio.h>

#include "cli.h"
#include "gbtd.h"

int cmd_demo(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("gbtd %s demo\n", gbtd_version());
    return EXIT_OK;
}
