/* gbtd sweep: the rank / cardinality trade-off of a stage's collective factorization at fixed
 * parameter budgets (kernel error per (R, rank)), as a table, CSV, JSON and a gnuplot PNG. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_cru.h"

static void usage_(FILE *f)
{
    fprintf(f,
            "usage: gbtd sweep WEIGHTS --stage S [--budgets F,F,...] [--terms R,R,...]\n"
            "                  [--groups-of N] [--csv OUT.csv] [--png OUT.png] [--json] [--quiet]\n\n"
            "For each budget (fraction of the stage's conv parameters, default 0.25,0.5) and each\n"
            "number of terms R (default 1,2,4,8), the largest ranks that fit, the relative kernel\n"
            "error of the collective BTD, and the independent per-member Tucker-2 at no more\n"
            "parameters. Percent budgets in --budgets are given as fractions (0.5 = 50 %%).\n");
}

typedef struct row {
    double budget;
    int terms;
    int64_t ri, ro, params, indep_rank, indep_params;
    double err, indep_err, secs;
} row;

/* Write via a temporary name and rename. */
static int write_csv_(const char *path, const row *rows, int n)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    fprintf(f, "budget,terms,rank_in,rank_out,params,kernel_error,independent_rank,"
               "independent_params,independent_error,seconds\n");
    for (int i = 0; i < n; i++)
        fprintf(f, "%.4g,%d,%lld,%lld,%lld,%.6g,%lld,%lld,%.6g,%.3f\n", rows[i].budget,
                rows[i].terms, (long long)rows[i].ri, (long long)rows[i].ro,
                (long long)rows[i].params, rows[i].err, (long long)rows[i].indep_rank,
                (long long)rows[i].indep_params, rows[i].indep_err, rows[i].secs);
    if (fclose(f) || rename(tmp, path)) {
        remove(tmp);
        return -1;
    }
    return 0;
}

static int plot_(const char *png, const char *csv, int stage)
{
    char tmp[4096], cmd[8192];
    snprintf(tmp, sizeof tmp, "%s.tmp%ld.png", png, (long)getpid());
    FILE *g = popen("gnuplot 2>/dev/null", "w");
    if (!g) return -1;
    fprintf(g, "set terminal png size 800,500\nset output '%s'\nset datafile separator ','\n"
               "set key autotitle columnhead\nset logscale x 2\nset xlabel 'terms R'\n"
               "set ylabel 'relative kernel error'\nset title 'stage %d: collective BTD at fixed "
               "budgets (dashed: independent Tucker-2)'\n", tmp, stage);
    snprintf(cmd, sizeof cmd, "plot for [b in system(\"tail -n +2 '%s' | cut -d, -f1 | sort -u\")] "
             "'%s' using ($1 == b ? $2 : NaN):6 with linespoints title 'budget '.b, "
             "for [b in system(\"tail -n +2 '%s' | cut -d, -f1 | sort -u\")] '%s' using "
             "($1 == b ? $2 : NaN):9 with lines dt 2 notitle\n", csv, csv, csv, csv);
    fputs(cmd, g);
    int st = pclose(g);
    if (st != 0 || rename(tmp, png)) {
        remove(tmp);
        return -1;
    }
    return 0;
}

int cmd_sweep(int argc, char **argv)
{
    const char *file = NULL, *csv = NULL, *png = NULL;
    int64_t budgets_pm[16] = {250, 500}, terms[16] = {1, 2, 4, 8};
    double budgets[16] = {0.25, 0.5};
    int nb = 2, nt = 4, groups_of = 0;
    long long stage = 0, v;
    bool json = false, quiet = false;
    (void)budgets_pm;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const bool has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage_(stdout);
            return EXIT_OK;
        }
        if (!strcmp(a, "--stage") && has) {
            if (!cli_parse_int("sweep", a, argv[++i], 1, 99, &stage)) return EXIT_USAGE;
        } else if (!strcmp(a, "--budgets") && has) {
            char buf[512];
            snprintf(buf, sizeof buf, "%s", argv[++i]);
            nb = 0;
            for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
                if (nb == 16) return cli_usage_error("sweep", "--budgets: at most 16");
                if (!cli_parse_double("sweep", "--budgets", t, &budgets[nb])) return EXIT_USAGE;
                if (!(budgets[nb] > 0 && budgets[nb] <= 1))
                    return cli_usage_error("sweep", "--budgets: %s is not a fraction in (0, 1]", t);
                nb++;
            }
            if (nb == 0) return cli_usage_error("sweep", "--budgets: empty list");
        } else if (!strcmp(a, "--terms") && has) {
            nt = cli_parse_list("sweep", a, argv[++i], terms, 16);
            if (nt < 0) return EXIT_USAGE;
            for (int k = 0; k < nt; k++)
                if (terms[k] < 1) return cli_usage_error("sweep", "--terms: R must be >= 1");
            if (nt == 0) return cli_usage_error("sweep", "--terms: empty list");
        } else if (!strcmp(a, "--groups-of") && has) {
            if (!cli_parse_int("sweep", a, argv[++i], 1, 100000, &v)) return EXIT_USAGE;
            groups_of = (int)v;
        } else if (!strcmp(a, "--csv") && has) csv = argv[++i];
        else if (!strcmp(a, "--png") && has) png = argv[++i];
        else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--quiet")) quiet = true;
        else if (a[0] == '-') return cli_usage_error("sweep", "unknown option '%s'", a);
        else if (!file) file = a;
        else return cli_usage_error("sweep", "more than one weights file ('%s')", a);
    }
    if (!file) return cli_usage_error("sweep", "no weights file (gbtd sweep --help)");
    if (!stage) return cli_usage_error("sweep", "no stage (--stage S)");
    if (png && !csv) return cli_usage_error("sweep", "--png needs --csv (the plot reads it)");
    gbtd_net net;
    int rc = gbtd_cru_load_net(file, 0, 0, 0, &net);
    if (rc) return cli_fail("sweep", rc, "cannot load the network");
    gbtd_cru_stage st;
    rc = gbtd_cru_stage_find(&net, (int)stage, &st);
    if (rc) {
        gbtd_net_free(&net);
        return cli_fail("sweep", rc, "cannot sweep this stage");
    }
    row *rows = calloc((size_t)(nb * nt), sizeof *rows);
    int n = 0, status = EXIT_OK;
    for (int b = 0; b < nb && rows; b++)
        for (int t = 0; t < nt; t++) {
            gbtd_cru_stage_opts so = gbtd_cru_stage_opts_default();
            so.terms = (int)terms[t];
            so.budget = budgets[b];
            so.groups_of = groups_of;
            so.btd.max_iter = 100;
            if (!quiet) fprintf(stderr, "budget %.3g, R = %d ...\n", budgets[b], so.terms);
            rc = gbtd_cru_stage_factor(&net, &st, &so);
            if (rc == GBTD_ERANGE) { /* this R cannot meet this budget: skip the cell */
                if (!quiet) fprintf(stderr, "  skipped: %s\n", gbtd_last_error());
                continue;
            }
            if (rc) {
                status = cli_fail("sweep", rc, "factorization failed");
                break;
            }
            rows[n++] = (row){budgets[b], so.terms, st.rank_in, st.rank_out, st.params_after,
                              st.indep_rank, st.indep_params, st.kernel_error, st.indep_error,
                              st.seconds};
        }
    if (!rows) status = cli_fail("sweep", GBTD_ENOMEM, "out of memory");
    if (!status && n == 0)
        status = cli_usage_error("sweep", "stage %lld: no (budget, R) cell can be met", stage);
    if (!status && csv && write_csv_(csv, rows, n))
        status = cli_fail("sweep", GBTD_EIO, csv);
    if (!status && png && plot_(png, csv, (int)stage))
        status = cli_fail("sweep", GBTD_EIO, "gnuplot could not draw the PNG (is gnuplot installed?)");
    if (!status) {
        if (json) {
            printf("{\"weights\": ");
            cli_json_string(stdout, file);
            printf(", \"stage\": %lld, \"members\": %d, \"params_before\": %lld, \"rows\": [", stage,
                   st.nmembers, (long long)(st.nmembers * st.member_params));
            for (int i = 0; i < n; i++)
                printf("%s{\"budget\": %.4g, \"terms\": %d, \"rank_in\": %lld, \"rank_out\": %lld, "
                       "\"params\": %lld, \"kernel_error\": %.6g, \"independent_error\": %.6g}",
                       i ? ", " : "", rows[i].budget, rows[i].terms, (long long)rows[i].ri,
                       (long long)rows[i].ro, (long long)rows[i].params, rows[i].err,
                       rows[i].indep_err);
            printf("]}\n");
        } else {
            printf("stage %lld: %d members, %lld conv parameters\n", stage, st.nmembers,
                   (long long)(st.nmembers * st.member_params));
            printf("budget  R    ranks      params   kernel error  independent Tucker-2 error\n");
            for (int i = 0; i < n; i++) {
                char rk[32];
                snprintf(rk, sizeof rk, "%lld,%lld", (long long)rows[i].ri, (long long)rows[i].ro);
                printf("%6.3f  %-3d  %-9s  %7lld  %12.4f  %12.4f\n", rows[i].budget, rows[i].terms,
                       rk, (long long)rows[i].params, rows[i].err, rows[i].indep_err);
            }
        }
    }
    free(rows);
    gbtd_cru_stage_free(&st);
    gbtd_net_free(&net);
    return status;
}
