/* Helpers shared by the CRU pipeline commands (compress, finetune, sweep, demo). */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_cru.h"
#include "nn_cli.h"

void cru_cli_opts_default(cru_cli_opts *o)
{
    memset(o, 0, sizeof *o);
    o->terms = 1;
    o->fold = true;
    o->threads = 0;
}

int cru_cli_parse(const char *cmd, int argc, char **argv, int *i, cru_cli_opts *o)
{
    const char *a = argv[*i];
    const bool has = *i + 1 < argc;
    long long v;
    int64_t list[GBTD_ARCH_MAX_STAGES + 1];
    if (!strcmp(a, "--stages") && has) {
        int n = cli_parse_list(cmd, "--stages", argv[++*i], list, GBTD_ARCH_MAX_STAGES);
        if (n < 1) return n < 0 ? -1 : (cli_usage_error(cmd, "--stages: empty list"), -1);
        for (int k = 0; k < n; k++) {
            if (list[k] < 1 || list[k] > 99) {
                cli_usage_error(cmd, "--stages: stage %lld out of range", (long long)list[k]);
                return -1;
            }
            for (int j = 0; j < k; j++)
                if (list[j] == list[k]) {
                    cli_usage_error(cmd, "--stages: stage %lld given twice", (long long)list[k]);
                    return -1;
                }
            o->stages[k] = (int)list[k];
        }
        o->nstages = n;
    } else if (!strcmp(a, "--terms") && has) {
        if (!cli_parse_int(cmd, "--terms", argv[++*i], 1, 4096, &v)) return -1;
        o->terms = (int)v;
    } else if (!strcmp(a, "--ranks") && has) {
        int n = cli_parse_list(cmd, "--ranks", argv[++*i], list, 2);
        if (n < 0) return -1;
        if (n != 2 || list[0] < 1 || list[1] < 1) {
            cli_usage_error(cmd, "--ranks needs two positive ranks RIN,ROUT");
            return -1;
        }
        o->rank_in = list[0];
        o->rank_out = list[1];
    } else if (!strcmp(a, "--budget") && has) {
        double b;
        if (!cli_parse_double(cmd, "--budget", argv[++*i], &b)) return -1;
        if (!(b > 0 && b <= 1)) {
            cli_usage_error(cmd, "--budget %s: a fraction in (0, 1]", argv[*i]);
            return -1;
        }
        o->budget = b;
    } else if (!strcmp(a, "--groups-of") && has) {
        if (!cli_parse_int(cmd, "--groups-of", argv[++*i], 1, 100000, &v)) return -1;
        o->groups_of = (int)v;
    } else if (!strcmp(a, "--extra")) {
        o->extra = true;
    } else if (!strcmp(a, "--act")) {
        o->act = true;
    } else if (!strcmp(a, "--no-fold")) {
        o->fold = false;
    } else if (!strcmp(a, "--data") && has) {
        o->data = argv[++*i];
    } else if (!strcmp(a, "--data-dir") && has) {
        o->dir = argv[++*i];
    } else if (!strcmp(a, "--norm") && has) {
        o->norm = argv[++*i];
        if (strcmp(o->norm, "data") && strcmp(o->norm, "imagenet")) {
            cli_usage_error(cmd, "--norm %s (data or imagenet)", o->norm);
            return -1;
        }
    } else if (!strcmp(a, "--limit") && has) {
        if (!cli_parse_int(cmd, "--limit", argv[++*i], 1, 1LL << 40, &v)) return -1;
        o->limit = v;
    } else if (!strcmp(a, "--bn-images") && has) {
        if (!cli_parse_int(cmd, "--bn-images", argv[++*i], 0, 1LL << 40, &v)) return -1;
        o->bn_images = v;
    } else if (!strcmp(a, "--refit") && has) {
        if (!cli_parse_int(cmd, "--refit", argv[++*i], 0, 1LL << 40, &v)) return -1;
        o->refit_images = v;
    } else if (!strcmp(a, "--intercept")) {
        o->intercept = true;
    } else if (!strcmp(a, "--iters") && has) {
        if (!cli_parse_int(cmd, "--iters", argv[++*i], 1, 100000, &v)) return -1;
        o->iters = (int)v;
    } else if (!strcmp(a, "--json")) {
        o->json = true;
    } else if (!strcmp(a, "--quiet")) {
        o->quiet = true;
    } else if (!strcmp(a, "--threads") && has) {
        if (!cli_parse_int(cmd, "--threads", argv[++*i], 0, 1024, &v)) return -1;
        o->threads = (int)v;
    } else if (!strcmp(a, "--seed") && has) {
        if (!cli_parse_int(cmd, "--seed", argv[++*i], 0, (1LL << 62), &v)) return -1;
        o->seed = (uint64_t)v;
    } else {
        return 0;
    }
    return 1;
}

void cru_run_free(cru_run *r)
{
    gbtd_net_free(&r->src);
    gbtd_net_free(&r->cru);
    for (int s = 0; s < r->nstages; s++) gbtd_cru_stage_free(&r->st[s]);
    if (r->have_data) {
        gbtd_dataset_free(&r->tr);
        gbtd_dataset_free(&r->te);
    }
    memset(r, 0, sizeof *r);
}

void cru_cli_norm(const cru_run *r, const float **mean, const float **std)
{
    static const float im_m[3] = {0.485f, 0.456f, 0.406f}, im_s[3] = {0.229f, 0.224f, 0.225f};
    *mean = r->imnet ? im_m : NULL;
    *std = r->imnet ? im_s : NULL;
}

int cru_cli_eval(gbtd_net *net, const cru_run *r, int64_t limit, double *top1)
{
    gbtd_dataset sub = r->te;
    if (limit > 0 && limit < sub.n) sub.n = limit;
    const float *m, *s;
    cru_cli_norm(r, &m, &s);
    gbtd_eval_result e;
    memset(&e, 0, sizeof e);
    int rc = gbtd_evaluate(net, &sub, m, s, 250, &e);
    if (!rc) *top1 = e.top1;
    gbtd_eval_result_free(&e);
    return rc;
}

static int factor_progress_(int iter, double err, double secs, void *ctx)
{
    (void)ctx;
    if (cli_stderr_is_tty())
        fprintf(stderr, "\r  iteration %d, error %.4f, %.1f s   ", iter, err, secs);
    return 0;
}

/* After a step that changed the CRU-Net: keep its previous top-1 in *before, measure it again
 * (with data). Returns 0 or the exit status after printing. */
static int reeval_(const char *cmd, const cru_cli_opts *o, cru_run *r, double *before)
{
    if (!r->have_data) return 0;
    *before = r->acc_cru;
    const double t0 = cli_now();
    int rc = cru_cli_eval(&r->cru, r, o->limit, &r->acc_cru);
    if (rc) return cli_fail(cmd, rc, "evaluation failed");
    r->t_eval += cli_now() - t0;
    return 0;
}

static int refit_progress_(const char *layer, int i, int n, double before, double after,
                           void *ctx)
{
    (void)ctx;
    if (cli_stderr_is_tty())
        fprintf(stderr, "\r  %d/%d %s: response error %.4f -> %.4f   ", i, n, layer, before, after);
    return 0;
}

int cru_cli_compress_net(const char *cmd, gbtd_net *src, const cru_cli_opts *o, cru_run *r)
{
    r->src = *src;
    memset(src, 0, sizeof *src);
    r->acc_src = r->acc_cru = -1;
    if (r->have_data && (r->te.c != r->src.in_c || r->te.h != r->src.in_h || r->te.w != r->src.in_w))
        return cli_usage_error(cmd, "data set %s has %dx%dx%d images, the network takes %dx%dx%d",
                               r->te.name, r->te.c, r->te.h, r->te.w, r->src.in_c, r->src.in_h,
                               r->src.in_w);
    if (o->rank_in == 0 && o->budget == 0)
        return cli_usage_error(cmd, "give --ranks RIN,ROUT or --budget FRACTION");
    if (o->rank_in > 0 && o->budget > 0)
        return cli_usage_error(cmd, "give either --ranks or --budget, not both");
    double t0 = cli_now();
    for (int s = 0; s < o->nstages; s++) {
        int rc = gbtd_cru_stage_find(&r->src, o->stages[s], &r->st[s]);
        if (rc) return cli_fail(cmd, rc, "cannot factor this stage");
        r->nstages = s + 1;
        gbtd_cru_stage_opts so = gbtd_cru_stage_opts_default();
        so.terms = o->terms;
        so.rank_in = o->rank_in;
        so.rank_out = o->rank_out;
        so.budget = o->budget > 0 ? o->budget : 0.5;
        so.groups_of = o->groups_of;
        so.fold_bn = o->fold;
        so.extra = o->extra;
        so.act = o->act;
        so.btd.seed = o->seed ? o->seed : so.btd.seed;
        if (o->iters > 0) so.btd.max_iter = o->iters;
        if (!o->quiet) {
            so.btd.callback = factor_progress_;
            fprintf(stderr, "factoring stage %d (%d members) ...\n", o->stages[s],
                    r->st[s].nmembers);
        }
        rc = gbtd_cru_stage_factor(&r->src, &r->st[s], &so);
        if (!o->quiet && cli_stderr_is_tty()) fprintf(stderr, "\r%60s\r", "");
        if (rc) return cli_fail(cmd, rc, "cannot factor this stage");
    }
    r->t_factor = cli_now() - t0;
    int rc = gbtd_cru_build(&r->src, r->st, r->nstages, &r->cru);
    if (rc) return cli_fail(cmd, rc, "cannot build the CRU-Net");
    r->acc_raw = r->acc_built = -1;
    if (r->have_data) {
        t0 = cli_now();
        if (!o->quiet) fprintf(stderr, "evaluating source and CRU-Net on %lld test images ...\n",
                               (long long)(o->limit > 0 && o->limit < r->te.n ? o->limit : r->te.n));
        rc = cru_cli_eval(&r->src, r, o->limit, &r->acc_src);
        if (!rc) rc = cru_cli_eval(&r->cru, r, o->limit, &r->acc_cru);
        if (rc) return cli_fail(cmd, rc, "evaluation failed");
        r->t_eval = cli_now() - t0;
    }
    if (o->refit_images > 0 && r->tr.n > 0) {
        t0 = cli_now();
        if (!o->quiet)
            fprintf(stderr, "refitting each member's own 1x1 to the source's responses on %lld "
                    "training images ...\n",
                    (long long)(o->refit_images < r->tr.n ? o->refit_images : r->tr.n));
        gbtd_cru_refit_opts ro = gbtd_cru_refit_opts_default();
        ro.images = o->refit_images;
        cru_cli_norm(r, &ro.mean, &ro.std);
        ro.seed = o->seed;
        ro.intercept = o->intercept;
        if (o->act) { /* the new BN-ReLUs pass their input on first; the source's BNs stay */
            rc = gbtd_cru_act_init(&r->cru, &r->tr, ro.images, 128, ro.mean, ro.std, o->seed, true);
            if (rc) return cli_fail(cmd, rc, "cannot set up the new BN-ReLU layers");
        }
        if (!o->quiet) ro.on_member = refit_progress_;
        rc = gbtd_cru_refit(&r->cru, &r->src, &r->tr, &ro, &r->refit);
        if (!o->quiet && cli_stderr_is_tty()) fprintf(stderr, "\r%72s\r", "");
        if (rc) return cli_fail(cmd, rc, "response refit failed");
        r->t_refit = cli_now() - t0;
        const int st = reeval_(cmd, o, r, &r->acc_built);
        if (st) return st;
    }
    if (o->bn_images > 0 && r->tr.n > 0) {
        t0 = cli_now();
        if (!o->quiet)
            fprintf(stderr, "re-estimating batch-norm statistics on %lld training images ...\n",
                    (long long)(o->bn_images < r->tr.n ? o->bn_images : r->tr.n));
        const float *m, *s;
        cru_cli_norm(r, &m, &s);
        /* --act: the new BN-ReLU layers pass their input on (plus a constant that the member's
         * own batch norm removes), then every batch norm is re-estimated once more */
        rc = o->act ? gbtd_cru_act_init(&r->cru, &r->tr, o->bn_images, 128, m, s, o->seed, false)
                    : GBTD_OK;
        if (!rc)
            rc = gbtd_cru_bn_reestimate(&r->cru, &r->tr, o->bn_images, 128, m, s,
                                        o->seed + (o->act ? 2 : 0));
        if (rc) return cli_fail(cmd, rc, "batch-norm re-estimation failed");
        r->t_bn = cli_now() - t0;
        const int st = reeval_(cmd, o, r, &r->acc_raw);
        if (st) return st;
    }
    return 0;
}

int cru_cli_compress(const char *cmd, const char *file, const cru_cli_opts *o, cru_run *r)
{
    memset(r, 0, sizeof *r);
    if (o->bn_images > 0 && !o->data)
        return cli_usage_error(cmd, "--bn-images needs --data (the training images)");
    if (o->refit_images > 0 && !o->data)
        return cli_usage_error(cmd, "--refit needs --data (the training images)");
    if (o->intercept && o->refit_images <= 0)
        return cli_usage_error(cmd, "--intercept is an option of the refit: it needs --refit N");
    if (o->data) {
        const bool train = o->bn_images > 0 || o->refit_images > 0;
        int st = nn_cli_load_data(cmd, o->data, o->dir, train ? &r->tr : NULL, &r->te);
        if (st) return st;
        r->have_data = true;
    }
    gbtd_file_format fmt = GBTD_FORMAT_UNKNOWN;
    int rc = gbtd_file_format_detect(file, &fmt);
    if (rc) {
        cru_run_free(r);
        return cli_fail(cmd, rc, "cannot read the weights");
    }
    r->imnet = o->norm ? !strcmp(o->norm, "imagenet") : fmt == GBTD_FORMAT_SAFETENSORS;
    gbtd_net src;
    /* safetensors files hold CIFAR networks (3 x 32 x 32); a data set of another image size
     * is then refused by the shape check below, naming both */
    rc = gbtd_cru_load_net(file, 0, 0, 0, &src);
    if (rc) {
        cru_run_free(r);
        return cli_fail(cmd, rc, "cannot load the network");
    }
    int st = cru_cli_compress_net(cmd, &src, o, r);
    if (st) cru_run_free(r);
    return st;
}

void cru_cli_print(const cru_cli_opts *o, const cru_run *r, const char *file, const char *out,
                   const char *json_extra)
{
    if (o->json) {
        printf("{\"weights\": ");
        cli_json_string(stdout, file ? file : "");
        printf(", \"output\": ");
        cli_json_string(stdout, out ? out : "");
        printf(", \"spec\": ");
        cli_json_string(stdout, r->cru.spec);
        printf(", \"params_source\": %lld, \"params_cru\": %lld, \"stages\": [",
               (long long)r->src.nparams, (long long)r->cru.nparams);
        for (int s = 0; s < r->nstages; s++) {
            const gbtd_cru_stage *st = &r->st[s];
            printf("%s{\"stage\": %d, \"members\": %d, \"groups\": %d, \"terms\": %d, "
                   "\"rank_in\": %lld, \"rank_out\": %lld, \"params_before\": %lld, "
                   "\"params_after\": %lld, \"kernel_error\": %.6g, \"independent_rank\": %lld, "
                   "\"independent_params\": %lld, \"independent_error\": %.6g, \"seconds\": %.3f}",
                   s ? ", " : "", st->stage, st->nmembers, st->ngroups, st->terms,
                   (long long)st->rank_in, (long long)st->rank_out, (long long)st->params_before,
                   (long long)st->params_after, st->kernel_error, (long long)st->indep_rank,
                   (long long)st->indep_params, st->indep_rank ? st->indep_error : -1.0,
                   st->seconds);
        }
        printf("], \"top1_source\": %.4f, \"top1_cru\": %.4f, \"top1_cru_no_bn_reestimation\": "
               "%.4f, \"bn_images\": %lld, \"seconds_factor\": %.3f",
               r->acc_src >= 0 ? 100 * r->acc_src : -1.0, r->acc_cru >= 0 ? 100 * r->acc_cru : -1.0,
               r->acc_raw >= 0 ? 100 * r->acc_raw : -1.0, (long long)o->bn_images, r->t_factor);
        printf(", \"refit_images\": %lld, \"top1_cru_as_built\": %.4f, \"refit_error_before\": "
               "%.6g, \"refit_error_after\": %.6g, \"seconds_refit\": %.3f",
               (long long)r->refit.images, r->acc_built >= 0 ? 100 * r->acc_built : -1.0,
               r->refit.members ? r->refit.error_before : -1.0,
               r->refit.members ? r->refit.error_after : -1.0, r->t_refit);
        if (json_extra) printf(", %s", json_extra);
        printf("}\n");
        return;
    }
    printf("stage  members  groups  R  ranks      conv params before -> after   kernel error"
           "   independent Tucker-2 (rank, params, error)\n");
    for (int s = 0; s < r->nstages; s++) {
        const gbtd_cru_stage *st = &r->st[s];
        char rk[32];
        snprintf(rk, sizeof rk, "%lld,%lld", (long long)st->rank_in, (long long)st->rank_out);
        printf("%5d  %7d  %6d  %d  %-9s  %9lld -> %-9lld (%5.1f %%)  %12.4f", st->stage,
               st->nmembers, st->ngroups, st->terms, rk, (long long)st->params_before,
               (long long)st->params_after, 100.0 * (double)st->params_after / (double)st->params_before,
               st->kernel_error);
        if (st->indep_rank)
            printf("   %lld, %lld, %.4f", (long long)st->indep_rank, (long long)st->indep_params,
                   st->indep_error);
        printf("\n");
    }
    printf("network parameters  %lld -> %lld (%.1f %%)\n", (long long)r->src.nparams,
           (long long)r->cru.nparams, 100.0 * (double)r->cru.nparams / (double)r->src.nparams);
    if (r->acc_src >= 0)
        printf("test top-1          source %.2f %%, CRU-Net before fine-tuning %.2f %%\n",
               100 * r->acc_src, 100 * r->acc_cru);
    if (r->refit.members)
        printf("response refit      %d own 1x1s on %lld images: response error %.4f -> %.4f "
               "(mean over members)\n", r->refit.members, (long long)r->refit.images,
               r->refit.error_before, r->refit.error_after);
    if (r->acc_built >= 0)
        printf("                    (%.2f %% as built, before the response refit)\n",
               100 * r->acc_built);
    if (r->acc_raw >= 0)
        printf("                    (%.2f %% before re-estimating batch norm on %lld images)\n",
               100 * r->acc_raw, (long long)o->bn_images);
    if (out) printf("wrote %s\n", out);
}
