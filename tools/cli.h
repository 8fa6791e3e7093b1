/* Shared helpers of the gbtd command-line tool: each command is one function
 * `int cmd_<name>(int argc, char **argv)` returning the exit status (0 ok, 1 runtime failure,
 * 2 usage error or refused input). Results go to stdout, progress to stderr. */
#ifndef GBTD_TOOLS_CLI_H
#define GBTD_TOOLS_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

/* Print "gbtd <cmd>: <message>" (with gbtd_last_error() detail when status != 0) to stderr and
 * return the exit status that matches `status`: 2 for input/usage problems
 * (EINVAL, ERANGE, ESHAPE, EFORMAT, ENOTFOUND, ENONFINITE, EUNSUPPORTED, EIO), 1 otherwise. */
int cli_fail(const char *cmd, int status, const char *what);
/* Print a usage error and return EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Parse helpers: return false (after printing a usage error) on bad text. */
bool cli_parse_int(const char *cmd, const char *opt, const char *text, long long lo, long long hi,
                   long long *out);
bool cli_parse_double(const char *cmd, const char *opt, const char *text, double *out);
/* Parse "a,b,c" into up to max int64 values; returns count or -1 after a usage error. */
int cli_parse_list(const char *cmd, const char *opt, const char *text, int64_t *out, int max);
/* True when stderr is a terminal (progress lines are redrawn in place then). */
bool cli_stderr_is_tty(void);
/* Monotonic wall-clock seconds. */
double cli_now(void);
/* JSON string escaping to a stream. */
void cli_json_string(FILE *f, const char *s);

int cmd_demo(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_arch(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_decompose(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_compress(int argc, char **argv);
int cmd_finetune(int argc, char **argv);
int cmd_sweep(int argc, char **argv);

#endif
