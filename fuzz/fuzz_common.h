/* Shared helper of the libFuzzer targets: the readers take a path, so each input is written to
 * one scratch file per process first. */
#ifndef GBTD_FUZZ_COMMON_H
#define GBTD_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

static const char *fuzz_path(const char *ext)
{
    static char p[256];
    if (!p[0]) snprintf(p, sizeof p, "/tmp/gbtd_fuzz_%ld%s", (long)getpid(), ext);
    return p;
}

static int fuzz_write(const char *path, const uint8_t *d, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) return 0;
    size_t w = n ? fwrite(d, 1, n, f) : 0;
    fclose(f);
    return w == n;
}

#endif
