#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gbtd.h"

int cli_fail(const char *cmd, int status, const char *what)
{
    const char *detail = gbtd_last_error();
    if (status == GBTD_OK)
        fprintf(stderr, "gbtd %s: %s\n", cmd, what);
    else if (detail[0])
        fprintf(stderr, "gbtd %s: %s: %s\n", cmd, what, detail);
    else
        fprintf(stderr, "gbtd %s: %s: %s\n", cmd, what, gbtd_strerror(status));
    switch (status) {
    case GBTD_EINVAL:
    case GBTD_ERANGE:
    case GBTD_ESHAPE:
    case GBTD_EFORMAT:
    case GBTD_ENOTFOUND:
    case GBTD_ENONFINITE:
    case GBTD_EUNSUPPORTED:
    case GBTD_EIO:
    case GBTD_OK: return EXIT_USAGE;
    default: return EXIT_RUNTIME;
    }
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "gbtd %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'gbtd %s --help')\n", cmd);
    return EXIT_USAGE;
}

bool cli_parse_int(const char *cmd, const char *opt, const char *text, long long lo, long long hi,
                   long long *out)
{
    char *end = NULL;
    errno = 0;
    long long v = text ? strtoll(text, &end, 10) : 0;
    if (text == NULL || *text == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi) {
        cli_usage_error(cmd, "%s expects an integer in [%lld, %lld], got '%s'", opt, lo, hi,
                        text ? text : "");
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_double(const char *cmd, const char *opt, const char *text, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = text ? strtod(text, &end) : 0.0;
    if (text == NULL || *text == '\0' || *end != '\0' || errno != 0 || !isfinite(v)) {
        cli_usage_error(cmd, "%s expects a finite number, got '%s'", opt, text ? text : "");
        return false;
    }
    *out = v;
    return true;
}

int cli_parse_list(const char *cmd, const char *opt, const char *text, int64_t *out, int max)
{
    int n = 0;
    const char *p = text;
    while (p && *p) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno != 0 || (*end != ',' && *end != '\0') || n == max) {
            cli_usage_error(cmd, "%s expects up to %d comma-separated integers, got '%s'", opt, max,
                            text);
            return -1;
        }
        out[n++] = v;
        p = *end == ',' ? end + 1 : end;
    }
    if (n == 0) {
        cli_usage_error(cmd, "%s expects a list of integers, got '%s'", opt, text ? text : "");
        return -1;
    }
    return n;
}

bool cli_stderr_is_tty(void) { return isatty(STDERR_FILENO) != 0; }

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}
