/* Helpers shared by the lib/io tests: fixture and scratch paths, the fixture value formula of
 * make_fixtures.py, raw file reads and writes. Header-only; each test sets fixdir and scratch
 * from its arguments. */
#ifndef GBTD_TESTS_IO_UTIL_H
#define GBTD_TESTS_IO_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

static const char *fixdir, *scratch;

/* fixdir/name and scratch/name; four rotating buffers, so a few may be live at once. */
static inline const char *io_path_(const char *dir, const char *name)
{
    static char buf[4][1024];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static inline const char *fix(const char *name) { return io_path_(fixdir, name); }
static inline const char *tmp(const char *name) { return io_path_(scratch, name); }

/* The fixture value formula of make_fixtures.py, in float64. */
static inline double val(int64_t i) { return (double)((37 * i) % 101 - 50) / 7.0; }

static inline int write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) return 0;
    size_t w = n ? fwrite(b, 1, n, f) : 0;
    fclose(f);
    return w == n;
}

/* The whole file in a malloc'd buffer (one spare byte), its length in *n; NULL if unreadable. */
static inline unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    *n = 0;
    if (f == NULL) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

/* True when the last error detail names the file. */
static inline int error_names(const char *path) { return strstr(gbtd_last_error(), path) != NULL; }

#endif
