/* gbtd decompose: Tucker, CP or BTD of a tensor read from .npy or HDF5; factors written to
 * HDF5 (layout in docs/formats.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "gbtd.h"

#define CMD "decompose"

static void decompose_help(FILE *f)
{
    fprintf(f,
            "usage: gbtd decompose --method tucker|cp|btd [options] INPUT[:DATASET] -o OUT.h5\n\n"
            "Decomposes the tensor in INPUT (.npy, or an HDF5 dataset; DATASET may be left out\n"
            "when the file holds exactly one) and writes the factors to OUT.h5 (layout in\n"
            "docs/formats.md; written to a temporary name, then renamed).\n\n"
            "  --method M         tucker (HOOI; partial Tucker with --modes), cp (ALS), btd\n"
            "  --ranks a,b,...    tucker: one rank per factored mode (one value: all modes);\n"
            "                     cp: the rank R; btd: the rank of each term per factored mode\n"
            "  --error-target E   tucker without --ranks: smallest ranks whose truncated HOSVD\n"
            "                     has relative error <= E; cp/btd: stop once the error is <= E\n"
            "  --terms R          btd: number of terms\n"
            "  --modes m,n,...    tucker/btd: factored modes (0-based; default all)\n"
            "  --solver als|nls   btd solver (default nls)\n"
            "  --init I           tucker: hosvd|random; cp: random|svd;\n"
            "                     btd: gevd (default)|random|hosvd\n"
            "  --tol T            stop when the relative change of the error is <= T (1e-10)\n"
            "  --max-iter N       iterations per run (>= 1)\n"
            "  --time-budget S    seconds\n"
            "  --seed S           random seed (default 42)\n"
            "  --restarts N       cp/btd: runs from different starts, best kept (default 1)\n"
            "  --no-line-search   cp: plain ALS\n"
            "  --json             summary as one JSON object on stdout\n"
            "  --quiet            no progress on stderr\n"
            "  -o, --output FILE  output .h5 (required)\n\n"
            "Exit status: 0 done, 2 bad usage or an impossible request (rank larger than the\n"
            "dimension, more than the data holds, a mode that does not exist, NaN/Inf input,\n"
            "zero iterations), 1 other failures.\n");
}

typedef struct progress {
    bool quiet, tty;
    double last;
    int lines;
} progress;

static int on_iter(int iter, double e, double t, void *ctx)
{
    progress *p = ctx;
    if (p->quiet) return 0;
    if (p->tty) {
        fprintf(stderr, "\riter %5d  rel.error %.6e  %8.2f s", iter, e, t);
        p->lines = 1;
    } else if (iter == 1 || t - p->last >= 1.0) {
        fprintf(stderr, "iter %5d  rel.error %.6e  %8.2f s\n", iter, e, t);
        p->last = t;
    }
    return 0;
}

static bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Read INPUT[:DATASET] as a double tensor. */
static int load_input(const char *spec, gbtd_tensor *x, char *label, size_t lablen)
{
    char path[4096];
    const char *dataset = NULL;
    snprintf(path, sizeof path, "%s", spec);
    if (!file_exists(path)) {
        char *colon = strrchr(path, ':');
        if (colon) {
            *colon = '\0';
            dataset = colon + 1;
        }
    }
    snprintf(label, lablen, "%s", spec);
    gbtd_file_format fmt = GBTD_FORMAT_UNKNOWN;
    int rc = gbtd_file_format_detect(path, &fmt);
    if (rc != GBTD_OK) return rc;
    if (fmt == GBTD_FORMAT_NPY) {
        if (dataset && *dataset)
            return gbtd_error(GBTD_EINVAL, "%s: a .npy file holds one array; drop ':%s'", path,
                              dataset);
        return gbtd_npy_load(path, x, NULL);
    }
    if (fmt != GBTD_FORMAT_HDF5)
        return gbtd_error(GBTD_EUNSUPPORTED, "%s: %s files are not read by decompose (use .npy or"
                          " HDF5)", path, gbtd_file_format_name(fmt));
    gbtd_h5 *f = NULL;
    GBTD_CHECK(gbtd_h5_open(path, &f));
    char name[1024] = "";
    if (dataset && *dataset) {
        snprintf(name, sizeof name, "%s", dataset);
    } else {
        gbtd_tensor_desc_list l = {0};
        rc = gbtd_h5_list(f, &l);
        if (rc == GBTD_OK && l.count == 1) {
            snprintf(name, sizeof name, "%s", l.items[0].name);
        } else if (rc == GBTD_OK) {
            rc = gbtd_error(GBTD_EINVAL, "%s holds %d datasets; name one as %s:DATASET", path,
                            l.count, path);
        }
        gbtd_tensor_desc_list_free(&l);
    }
    if (rc == GBTD_OK) rc = gbtd_h5_read_tensor(f, name, x, NULL);
    gbtd_h5_close(f);
    return rc;
}

static void shape_text(int ndim, const int64_t *s, char *buf, size_t len)
{
    size_t pos = 0;
    for (int k = 0; k < ndim && pos + 1 < len; k++)
        pos += (size_t)snprintf(buf + pos, len - pos, k ? ",%lld" : "%lld", (long long)s[k]);
}

/* Everything the summary and the file share. */
typedef struct result {
    const char *method, *variant;
    gbtd_decomp_info info;
    int64_t params;
    char ranks[256];
} result;

static int put_common_attrs(gbtd_attr_list *a, const result *r, const gbtd_tensor *x,
                            const char *input)
{
    GBTD_CHECK(gbtd_attr_list_set_string(a, "gbtd_format", "decomposition"));
    GBTD_CHECK(gbtd_attr_list_set_int(a, "format_version", 1));
    GBTD_CHECK(gbtd_attr_list_set_string(a, "method", r->method));
    GBTD_CHECK(gbtd_attr_list_set_string(a, "algorithm", r->variant));
    GBTD_CHECK(gbtd_attr_list_set_ints(a, "shape", x->shape, x->ndim));
    GBTD_CHECK(gbtd_attr_list_set_real(a, "rel_error", r->info.rel_error));
    GBTD_CHECK(gbtd_attr_list_set_int(a, "iterations", r->info.iterations));
    GBTD_CHECK(gbtd_attr_list_set_string(a, "stop", gbtd_stop_reason_str(r->info.stop)));
    GBTD_CHECK(gbtd_attr_list_set_int(a, "params", r->params));
    GBTD_CHECK(gbtd_attr_list_set_string(a, "source", input));
    return GBTD_OK;
}

static int write_tucker(gbtd_h5 *f, const gbtd_tucker *t, gbtd_attr_list *a)
{
    int64_t modes[GBTD_MAX_MODES];
    for (int k = 0; k < t->nmodes; k++) modes[k] = t->modes[k];
    GBTD_CHECK(gbtd_attr_list_set_ints(a, "modes", modes, t->nmodes));
    GBTD_CHECK(gbtd_h5_write_tensor(f, "core", &t->core, GBTD_DTYPE_F64));
    for (int k = 0; k < t->nmodes; k++) {
        char name[64];
        snprintf(name, sizeof name, "factors/%d", k);
        GBTD_CHECK(gbtd_h5_write_tensor(f, name, &t->factors[k], GBTD_DTYPE_F64));
    }
    return GBTD_OK;
}

static int write_cp(gbtd_h5 *f, const gbtd_cp *cp, gbtd_attr_list *a)
{
    GBTD_CHECK(gbtd_attr_list_set_int(a, "rank", cp->rank));
    GBTD_CHECK(gbtd_h5_write_tensor(f, "weights", &cp->weights, GBTD_DTYPE_F64));
    for (int n = 0; n < cp->ndim; n++) {
        char name[64];
        snprintf(name, sizeof name, "factors/%d", n);
        GBTD_CHECK(gbtd_h5_write_tensor(f, name, &cp->factors[n], GBTD_DTYPE_F64));
    }
    return GBTD_OK;
}

static int write_btd(gbtd_h5 *f, const gbtd_btd *m, gbtd_attr_list *a)
{
    int64_t modes[GBTD_MAX_MODES];
    for (int k = 0; k < m->nmodes; k++) modes[k] = m->modes[k];
    GBTD_CHECK(gbtd_attr_list_set_ints(a, "modes", modes, m->nmodes));
    GBTD_CHECK(gbtd_attr_list_set_int(a, "nterms", m->nterms));
    GBTD_CHECK(gbtd_attr_list_set_ints(a, "ranks", m->ranks, (int64_t)m->nterms * m->nmodes));
    for (int r = 0; r < m->nterms; r++) {
        char name[96];
        snprintf(name, sizeof name, "terms/%d/core", r);
        GBTD_CHECK(gbtd_h5_write_tensor(f, name, &m->cores[r], GBTD_DTYPE_F64));
        for (int k = 0; k < m->nmodes; k++) {
            snprintf(name, sizeof name, "terms/%d/factors/%d", r, k);
            GBTD_CHECK(gbtd_h5_write_tensor(f, name, &m->factors[r * m->nmodes + k],
                                            GBTD_DTYPE_F64));
        }
    }
    return GBTD_OK;
}

enum method { M_NONE, M_TUCKER, M_CP, M_BTD };

int cmd_decompose(int argc, char **argv)
{
    enum method method = M_NONE;
    const char *input = NULL, *output = NULL, *solver = NULL, *init = NULL;
    int64_t ranks[GBTD_MAX_MODES * 4];
    int nranks = 0, nmodes_opt = 0;
    int64_t modes_opt[GBTD_MAX_MODES + 1];
    long long terms = 0, max_iter = -1, seed = 42, restarts = 1;
    double tol = -1.0, error_target = 0.0, budget = 0.0;
    bool json = false, quiet = false, no_ls = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        char optname[64];
        snprintf(optname, sizeof optname, "%s", a);
        char *eq = strchr(optname, '=');
        if (a[0] == '-' && a[1] == '-' && eq) {
            *eq = '\0';
            val = a + (eq - optname) + 1;
        }
        const char *o = optname;
#define NEED_VAL()                                                                                \
    do {                                                                                          \
        if (!val) {                                                                               \
            if (i + 1 >= argc) return cli_usage_error(CMD, "%s needs a value", o);                \
            val = argv[++i];                                                                      \
        }                                                                                         \
    } while (0)
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            decompose_help(stdout);
            return EXIT_OK;
        } else if (!strcmp(o, "--json")) {
            json = true;
        } else if (!strcmp(o, "--quiet")) {
            quiet = true;
        } else if (!strcmp(o, "--no-line-search")) {
            no_ls = true;
        } else if (!strcmp(o, "--method")) {
            NEED_VAL();
            if (!strcmp(val, "tucker")) method = M_TUCKER;
            else if (!strcmp(val, "cp")) method = M_CP;
            else if (!strcmp(val, "btd")) method = M_BTD;
            else return cli_usage_error(CMD, "--method must be tucker, cp or btd, got '%s'", val);
        } else if (!strcmp(o, "--ranks") || !strcmp(o, "--rank")) {
            NEED_VAL();
            nranks = cli_parse_list(CMD, o, val, ranks, GBTD_MAX_MODES);
            if (nranks < 0) return EXIT_USAGE;
        } else if (!strcmp(o, "--modes")) {
            NEED_VAL();
            nmodes_opt = cli_parse_list(CMD, o, val, modes_opt, GBTD_MAX_MODES);
            if (nmodes_opt < 0) return EXIT_USAGE;
        } else if (!strcmp(o, "--terms")) {
            NEED_VAL();
            if (!cli_parse_int(CMD, o, val, 1, 1000000, &terms)) return EXIT_USAGE;
        } else if (!strcmp(o, "--solver")) {
            NEED_VAL();
            solver = val;
        } else if (!strcmp(o, "--init")) {
            NEED_VAL();
            init = val;
        } else if (!strcmp(o, "--tol")) {
            NEED_VAL();
            if (!cli_parse_double(CMD, o, val, &tol)) return EXIT_USAGE;
            if (tol < 0) return cli_usage_error(CMD, "--tol must be >= 0");
        } else if (!strcmp(o, "--error-target")) {
            NEED_VAL();
            if (!cli_parse_double(CMD, o, val, &error_target)) return EXIT_USAGE;
            if (!(error_target > 0)) return cli_usage_error(CMD, "--error-target must be > 0");
        } else if (!strcmp(o, "--time-budget")) {
            NEED_VAL();
            if (!cli_parse_double(CMD, o, val, &budget)) return EXIT_USAGE;
        } else if (!strcmp(o, "--max-iter")) {
            NEED_VAL();
            if (!cli_parse_int(CMD, o, val, -1000000000LL, 1000000000LL, &max_iter))
                return EXIT_USAGE;
            if (max_iter < 1)
                return cli_usage_error(CMD, "--max-iter %lld: at least one iteration is needed",
                                       max_iter);
        } else if (!strcmp(o, "--seed")) {
            NEED_VAL();
            if (!cli_parse_int(CMD, o, val, 0, 9007199254740991LL, &seed)) return EXIT_USAGE;
        } else if (!strcmp(o, "--restarts")) {
            NEED_VAL();
            if (!cli_parse_int(CMD, o, val, 1, 100000, &restarts)) return EXIT_USAGE;
        } else if (!strcmp(o, "-o") || !strcmp(o, "--output")) {
            NEED_VAL();
            output = val;
        } else if (a[0] == '-' && a[1] != '\0') {
            return cli_usage_error(CMD, "unknown option '%s'", a);
        } else if (input == NULL) {
            input = a;
        } else {
            return cli_usage_error(CMD, "one INPUT expected, got '%s' too", a);
        }
#undef NEED_VAL
    }
    if (method == M_NONE) return cli_usage_error(CMD, "--method tucker|cp|btd is required");
    if (input == NULL) return cli_usage_error(CMD, "missing INPUT");
    if (output == NULL) return cli_usage_error(CMD, "missing -o OUT.h5");
    if (method == M_CP && nranks != 1)
        return cli_usage_error(CMD, "cp needs --ranks R (one value)");
    if (method == M_BTD && terms < 1) return cli_usage_error(CMD, "btd needs --terms R");
    if (method == M_BTD && nranks < 1) return cli_usage_error(CMD, "btd needs --ranks");
    if (method == M_TUCKER && nranks < 1 && !(error_target > 0))
        return cli_usage_error(CMD, "tucker needs --ranks or --error-target");
    if (solver && method != M_BTD) return cli_usage_error(CMD, "--solver applies to btd only");
    if (solver && strcmp(solver, "als") && strcmp(solver, "nls"))
        return cli_usage_error(CMD, "--solver must be als or nls, got '%s'", solver);

    gbtd_tensor x = {0};
    char label[4200];
    int rc = load_input(input, &x, label, sizeof label);
    if (rc != GBTD_OK) {
        const char *d = gbtd_last_error();
        fprintf(stderr, "gbtd %s: %s\n", CMD, d[0] ? d : gbtd_strerror(rc));
        return rc == GBTD_ENOMEM ? EXIT_RUNTIME : EXIT_USAGE;
    }
    if (gbtd_tensor_check_finite(&x, label) != GBTD_OK) {
        fprintf(stderr, "gbtd %s: %s (NaN or Inf input cannot be decomposed)\n", CMD,
                gbtd_last_error());
        gbtd_tensor_free(&x);
        return EXIT_USAGE;
    }
    /* Modes: default all; check them here so that the message names the input. */
    int modes[GBTD_MAX_MODES], nmodes = x.ndim;
    for (int k = 0; k < x.ndim; k++) modes[k] = k;
    if (nmodes_opt > 0) {
        nmodes = nmodes_opt;
        for (int k = 0; k < nmodes; k++) {
            if (modes_opt[k] < 0 || modes_opt[k] >= x.ndim) {
                fprintf(stderr, "gbtd %s: mode %lld does not exist: %s has %d modes (0..%d)\n",
                        CMD, (long long)modes_opt[k], label, x.ndim, x.ndim - 1);
                gbtd_tensor_free(&x);
                return EXIT_USAGE;
            }
            modes[k] = (int)modes_opt[k];
        }
    }
    if (method != M_CP && nranks == 1 && nmodes > 1)
        for (int k = 1; k < nmodes; k++) ranks[k] = ranks[0];
    else if (method != M_CP && nranks > 0 && nranks != nmodes) {
        gbtd_tensor_free(&x);
        return cli_usage_error(CMD, "%d ranks given for %d factored modes", nranks, nmodes);
    }
    if (method == M_CP && nmodes_opt > 0) {
        gbtd_tensor_free(&x);
        return cli_usage_error(CMD, "--modes does not apply to cp (every mode is factored)");
    }

    progress prog = {quiet, cli_stderr_is_tty(), 0.0, 0};
    result res;
    memset(&res, 0, sizeof res);
    gbtd_decomp_info_init(&res.info);
    gbtd_tucker tk = {0};
    gbtd_cp cp = {0};
    gbtd_btd bt = {0};
    int64_t *bt_ranks = NULL;
    const double t0 = cli_now();
    if (method == M_TUCKER) {
        gbtd_tucker_opts o = gbtd_tucker_opts_default();
        if (max_iter > 0) o.max_iter = (int)max_iter;
        if (tol >= 0) o.tol = tol;
        o.time_budget = budget;
        o.seed = (uint64_t)seed;
        o.error_target = error_target;
        if (init && !strcmp(init, "random")) o.init = GBTD_TUCKER_INIT_RANDOM;
        else if (init && strcmp(init, "hosvd"))
            rc = cli_usage_error(CMD, "tucker --init must be hosvd or random");
        o.callback = on_iter;
        o.callback_ctx = &prog;
        res.method = "tucker";
        res.variant = nmodes == x.ndim ? "hooi" : "partial_hooi";
        if (rc == GBTD_OK)
            rc = gbtd_tucker_partial_hooi(&x, modes, nmodes, nranks ? ranks : NULL, &tk, &o,
                                          &res.info);
        if (rc == GBTD_OK) {
            res.params = gbtd_tucker_param_count(&tk);
            int64_t rr[GBTD_MAX_MODES];
            for (int k = 0; k < tk.nmodes; k++) rr[k] = tk.factors[k].shape[1];
            shape_text(tk.nmodes, rr, res.ranks, sizeof res.ranks);
        }
    } else if (method == M_CP) {
        gbtd_cp_opts o = gbtd_cp_opts_default();
        if (max_iter > 0) o.max_iter = (int)max_iter;
        if (tol >= 0) o.tol = tol;
        o.time_budget = budget;
        o.seed = (uint64_t)seed;
        o.restarts = (int)restarts;
        o.error_target = error_target;
        o.line_search = !no_ls;
        if (init && !strcmp(init, "svd")) o.init = GBTD_CP_INIT_SVD;
        else if (init && strcmp(init, "random"))
            rc = cli_usage_error(CMD, "cp --init must be random or svd");
        o.callback = on_iter;
        o.callback_ctx = &prog;
        res.method = "cp";
        res.variant = no_ls ? "als" : "als_line_search";
        if (rc == GBTD_OK) rc = gbtd_cp_als(&x, ranks[0], &cp, &o, &res.info);
        if (rc == GBTD_OK) {
            res.params = gbtd_cp_param_count(&cp);
            snprintf(res.ranks, sizeof res.ranks, "%lld", (long long)ranks[0]);
        }
    } else {
        gbtd_btd_opts o = gbtd_btd_opts_default();
        if (max_iter > 0) o.max_iter = (int)max_iter;
        if (tol >= 0) o.tol = tol;
        if (error_target > 0) o.error_tol = error_target;
        o.time_budget = budget;
        o.seed = (uint64_t)seed;
        o.restarts = (int)restarts;
        o.solver = solver && !strcmp(solver, "als") ? GBTD_BTD_ALS : GBTD_BTD_NLS;
        if (init && !strcmp(init, "hosvd")) o.init = GBTD_BTD_INIT_HOSVD;
        else if (init && !strcmp(init, "random")) o.init = GBTD_BTD_INIT_RANDOM;
        else if (init && !strcmp(init, "gevd")) o.init = GBTD_BTD_INIT_GEVD;
        else if (init)
            rc = cli_usage_error(CMD, "btd --init must be gevd, random or hosvd");
        o.callback = on_iter;
        o.callback_ctx = &prog;
        res.method = "btd";
        res.variant = o.solver == GBTD_BTD_ALS ? "als" : "nls";
        bt_ranks = malloc(sizeof(int64_t) * (size_t)terms * (size_t)nmodes);
        if (bt_ranks == NULL) rc = GBTD_ENOMEM;
        for (long long r = 0; rc == GBTD_OK && r < terms; r++)
            for (int k = 0; k < nmodes; k++) bt_ranks[r * nmodes + k] = ranks[k];
        if (rc == GBTD_OK)
            rc = gbtd_btd_decompose(&x, nmodes, modes, (int)terms, bt_ranks, &bt, &res.info, &o);
        if (rc == GBTD_OK) {
            res.params = gbtd_btd_num_params(&bt);
            int n = snprintf(res.ranks, sizeof res.ranks, "%lld x (", terms);
            shape_text(nmodes, ranks, res.ranks + n, sizeof res.ranks - (size_t)n - 2);
            strcat(res.ranks, ")");
        }
    }
    const double elapsed = cli_now() - t0;
    if (prog.lines && !quiet) fputc('\n', stderr);
    if (rc == EXIT_USAGE) {
        gbtd_tensor_free(&x);
        free(bt_ranks);
        return EXIT_USAGE;
    }
    if (rc != GBTD_OK) {
        int st = cli_fail(CMD, rc, label);
        gbtd_tensor_free(&x);
        free(bt_ranks);
        gbtd_decomp_info_free(&res.info);
        return st;
    }

    /* Write the factors. */
    gbtd_h5 *f = NULL;
    gbtd_attr_list attrs = {0};
    rc = gbtd_h5_create(output, &f);
    if (rc == GBTD_OK) rc = put_common_attrs(&attrs, &res, &x, input);
    if (rc == GBTD_OK) {
        if (method == M_TUCKER) rc = write_tucker(f, &tk, &attrs);
        else if (method == M_CP) rc = write_cp(f, &cp, &attrs);
        else rc = write_btd(f, &bt, &attrs);
    }
    if (rc == GBTD_OK) rc = gbtd_h5_write_attrs(f, "/", &attrs);
    if (rc == GBTD_OK) {
        rc = gbtd_h5_close(f);
    } else {
        gbtd_h5_discard(f);
    }
    gbtd_attr_list_free(&attrs);
    int status = EXIT_OK;
    if (rc != GBTD_OK) {
        status = cli_fail(CMD, rc, output);
    } else {
        const double ratio = gbtd_compression_ratio(x.ndim, x.shape, res.params);
        char shp[256];
        shape_text(x.ndim, x.shape, shp, sizeof shp);
        if (json) {
            printf("{\"method\":\"%s\",\"algorithm\":\"%s\",\"input\":", res.method, res.variant);
            cli_json_string(stdout, input);
            printf(",\"shape\":[%s],\"ranks\":", shp);
            cli_json_string(stdout, res.ranks);
            printf(",\"rel_error\":%.17g,\"params\":%lld,\"compression\":%.6g,"
                   "\"iterations\":%d,\"stop\":\"%s\",\"time_s\":%.6f,\"output\":",
                   res.info.rel_error, (long long)res.params, ratio, res.info.iterations,
                   gbtd_stop_reason_str(res.info.stop), elapsed);
            cli_json_string(stdout, output);
            printf("}\n");
        } else {
            printf("method        %s (%s)\n", res.method, res.variant);
            printf("input         %s  (%s)\n", input, shp);
            printf("ranks         %s\n", res.ranks);
            printf("rel. error    %.10e\n", res.info.rel_error);
            printf("parameters    %lld of %lld\n", (long long)res.params,
                   (long long)gbtd_tensor_numel(&x));
            printf("compression   %.2fx\n", ratio);
            printf("iterations    %d (stop: %s)\n", res.info.iterations,
                   gbtd_stop_reason_str(res.info.stop));
            printf("time          %.3f s\n", elapsed);
            printf("output        %s\n", output);
        }
    }
    gbtd_tucker_free(&tk);
    gbtd_cp_free(&cp);
    gbtd_btd_free(&bt);
    free(bt_ranks);
    gbtd_decomp_info_free(&res.info);
    gbtd_tensor_free(&x);
    return status;
}
