/* gbtd finetune: train a CRU-Net (from gbtd compress) with SGD, optionally new layers first
 * and with distillation from the source network. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_cru.h"
#include "nn_cli.h"

static void usage_(FILE *f)
{
    fprintf(f,
            "usage: gbtd finetune CRU.h5 --data fashion-mnist|cifar10 [--data-dir DIR] -o OUT.h5\n"
            "                     [--epochs N] [--new-first N] [--steps N] [--batch N] [--lr X]\n"
            "                     [--teacher WEIGHTS [--kd-temp T] [--kd-alpha A]\n"
            "                                        [--feat-beta B [--feat-stages LIST]]]\n"
            "                     [--new-lr-scale S] [--wd X] [--momentum X] [--norm data|imagenet]\n"
            "                     [--augment] [--limit N]\n"
            "                     [--json] [--quiet]\n\n"
            "Fine-tunes all layers (after --new-first epochs of the CRU layers alone) with a cosine\n"
            "learning rate; with --teacher, the loss is (1 - A) cross-entropy + A T^2 KL between\n"
            "the softened logits of the teacher and the CRU-Net. The layers the CRU-Net added\n"
            "learn at S times the rate (default 0.1: a factored chain has ~10x the relative\n"
            "gradient of the convolution it replaces). SGD with momentum (default 0.9) and weight\n"
            "decay (default 5e-4). OUT is a gbtd checkpoint.\n\n"
            "--feat-beta B (with --teacher; default 0: off) adds per-stage feature matching:\n"
            "  B sum_s |F_s - F_s^T|^2 / |F_s^T|^2, F_s the output of stage s (the residual add\n"
            "  ending layerS) in the CRU-Net, F_s^T in the teacher, squared norms over the batch.\n"
            "--feat-stages LIST: the stages matched, e.g. 2,3 (default: every stage of both).\n"
            "With --teacher the feature distance is reported per epoch even without --feat-beta.\n");
}

typedef struct prog {
    bool quiet;
    int64_t last;
} prog;

static int on_step_(int64_t step, int64_t steps, double loss, void *ctx)
{
    prog *p = ctx;
    if (!p->quiet && (cli_stderr_is_tty() || step == steps || step - p->last >= 50)) {
        fprintf(stderr, cli_stderr_is_tty() ? "\r  step %lld/%lld loss %.4f   " : "  step %lld/%lld loss %.4f\n",
                (long long)step, (long long)steps, loss);
        p->last = step;
    }
    return 0;
}

static int on_epoch_(const gbtd_cru_epoch_info *e, void *ctx)
{
    prog *p = ctx;
    if (!p->quiet) {
        fprintf(stderr, "%sepoch %d/%d%s: loss %.4f, train top-1 %.2f %%, test top-1 %.2f %%",
                cli_stderr_is_tty() ? "\r" : "", e->epoch, e->epochs, e->new_only ? " (new layers)" : "",
                e->loss, 100 * e->top1, 100 * e->test_top1);
        if (e->feat_dist >= 0) fprintf(stderr, ", feature distance %.4f", e->feat_dist);
        fprintf(stderr, ", %.1f s\n", e->seconds);
    }
    return 0;
}

int cmd_finetune(int argc, char **argv)
{
    const char *file = NULL, *outp = NULL, *teacher = NULL, *data = NULL, *dir = NULL, *norm = NULL;
    int64_t fst[31];
    int nfst = 0;
    gbtd_cru_finetune_opts fo = gbtd_cru_finetune_opts_default();
    bool json = false, quiet = false, augment = false;
    long long v, limit = 0, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const bool has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage_(stdout);
            return EXIT_OK;
        }
        if (!strcmp(a, "-o") && has) outp = argv[++i];
        else if (!strcmp(a, "--data") && has) data = argv[++i];
        else if (!strcmp(a, "--data-dir") && has) dir = argv[++i];
        else if (!strcmp(a, "--teacher") && has) teacher = argv[++i];
        else if (!strcmp(a, "--norm") && has) norm = argv[++i];
        else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--quiet")) quiet = true;
        else if (!strcmp(a, "--augment")) augment = true;
        else if (!strcmp(a, "--epochs") && has) {
            if (!cli_parse_int("finetune", a, argv[++i], 1, 10000, &v)) return EXIT_USAGE;
            fo.epochs = (int)v;
        } else if (!strcmp(a, "--new-first") && has) {
            if (!cli_parse_int("finetune", a, argv[++i], 0, 10000, &v)) return EXIT_USAGE;
            fo.new_first = (int)v;
        } else if (!strcmp(a, "--steps") && has) {
            if (!cli_parse_int("finetune", a, argv[++i], 1, 1LL << 40, &v)) return EXIT_USAGE;
            fo.max_steps = v;
        } else if (!strcmp(a, "--batch") && has) {
            if (!cli_parse_int("finetune", a, argv[++i], 1, 65536, &v)) return EXIT_USAGE;
            fo.batch = (int)v;
        } else if (!strcmp(a, "--limit") && has) {
            if (!cli_parse_int("finetune", a, argv[++i], 1, 1LL << 40, &limit)) return EXIT_USAGE;
        } else if (!strcmp(a, "--threads") && has) {
            if (!cli_parse_int("finetune", a, argv[++i], 0, 1024, &threads)) return EXIT_USAGE;
        } else if (!strcmp(a, "--lr") && has) {
            if (!cli_parse_double("finetune", a, argv[++i], &fo.lr)) return EXIT_USAGE;
        } else if (!strcmp(a, "--new-lr-scale") && has) {
            if (!cli_parse_double("finetune", a, argv[++i], &fo.new_lr_scale)) return EXIT_USAGE;
        } else if (!strcmp(a, "--wd") && has) {
            if (!cli_parse_double("finetune", a, argv[++i], &fo.weight_decay)) return EXIT_USAGE;
        } else if (!strcmp(a, "--momentum") && has) {
            if (!cli_parse_double("finetune", a, argv[++i], &fo.momentum)) return EXIT_USAGE;
        } else if (!strcmp(a, "--kd-temp") && has) {
            if (!cli_parse_double("finetune", a, argv[++i], &fo.kd_temp)) return EXIT_USAGE;
        } else if (!strcmp(a, "--kd-alpha") && has) {
            if (!cli_parse_double("finetune", a, argv[++i], &fo.kd_alpha)) return EXIT_USAGE;
        } else if (!strcmp(a, "--feat-beta") && has) {
            if (!cli_parse_double("finetune", a, argv[++i], &fo.feat_beta)) return EXIT_USAGE;
        } else if (!strcmp(a, "--feat-stages") && has) {
            nfst = cli_parse_list("finetune", a, argv[++i], fst, 31);
            if (nfst < 0) return EXIT_USAGE;
            fo.feat_stages = 0;
            for (int k = 0; k < nfst; k++) {
                if (fst[k] < 1 || fst[k] > 31)
                    return cli_usage_error("finetune", "--feat-stages: stage %lld (stages are 1 to 31)",
                                           (long long)fst[k]);
                fo.feat_stages |= GBTD_CRU_STAGE_BIT(fst[k]);
            }
        } else if (a[0] == '-') return cli_usage_error("finetune", "unknown option '%s'", a);
        else if (!file) file = a;
        else return cli_usage_error("finetune", "more than one network file ('%s')", a);
    }
    if (!file) return cli_usage_error("finetune", "no network file (gbtd finetune --help)");
    if (!outp) return cli_usage_error("finetune", "no output file (-o OUT.h5)");
    if (!data) return cli_usage_error("finetune", "no data set (--data fashion-mnist|cifar10)");
    if (fo.new_first >= fo.epochs + 1) return cli_usage_error("finetune", "--new-first exceeds --epochs");
    if (!(fo.lr > 0) || !(fo.new_lr_scale > 0) || !(fo.kd_temp > 0) || fo.kd_alpha < 0 ||
        fo.kd_alpha > 1)
        return cli_usage_error("finetune", "--lr, --new-lr-scale and --kd-temp must be > 0, "
                               "--kd-alpha in [0, 1]");
    if (!(fo.weight_decay >= 0) || !isfinite(fo.weight_decay) || !(fo.momentum >= 0) ||
        !(fo.momentum < 1))
        return cli_usage_error("finetune", "--wd must be >= 0, --momentum in [0, 1)");
    if (!(fo.feat_beta >= 0) || !isfinite(fo.feat_beta))
        return cli_usage_error("finetune", "--feat-beta must be a finite number >= 0");
    if ((fo.feat_beta > 0 || nfst > 0) && !teacher)
        return cli_usage_error("finetune", "--feat-beta and --feat-stages need --teacher");
    if (norm && strcmp(norm, "data") && strcmp(norm, "imagenet"))
        return cli_usage_error("finetune", "--norm %s (data or imagenet)", norm);
    const size_t ol = strlen(outp);
    if (!(ol > 3 && !strcmp(outp + ol - 3, ".h5")))
        return cli_usage_error("finetune", "%s: output must end in .h5", outp);
    gbtd_set_threads((int)threads);
    cru_run r;
    memset(&r, 0, sizeof r);
    int st = nn_cli_load_data("finetune", data, dir, &r.tr, &r.te);
    if (st) return st;
    r.have_data = true;
    r.imnet = norm && !strcmp(norm, "imagenet");
    gbtd_net T;
    memset(&T, 0, sizeof T);
    int rc = gbtd_cru_load_net(file, r.te.c, r.te.h, r.te.w, &r.cru);
    if (rc) st = cli_fail("finetune", rc, "cannot load the network");
    if (!st && (r.cru.in_c != r.te.c || r.cru.in_h != r.te.h || r.cru.in_w != r.te.w))
        st = cli_usage_error("finetune", "%s: data set %s has %dx%dx%d images, the network takes "
                             "%dx%dx%d", file, data, r.te.c, r.te.h, r.te.w, r.cru.in_c,
                             r.cru.in_h, r.cru.in_w);
    if (!st && teacher) {
        rc = gbtd_cru_load_net(teacher, r.te.c, r.te.h, r.te.w, &T);
        if (rc) st = cli_fail("finetune", rc, "cannot load the teacher");
        if (!st && (T.in_c != r.cru.in_c || T.in_h != r.cru.in_h || T.in_w != r.cru.in_w ||
                    T.classes != r.cru.classes))
            st = cli_usage_error("finetune", "%s: the teacher's input or classes differ from the "
                                 "network's", teacher);
        for (int k = 0; !st && k < nfst; k++) {
            int sv;
            const bool in_net = gbtd_cru_stage_output(&r.cru, (int)fst[k], &sv) == GBTD_OK;
            if (!in_net || gbtd_cru_stage_output(&T, (int)fst[k], &sv) != GBTD_OK)
                st = cli_usage_error("finetune", "--feat-stages: stage %lld does not exist in %s "
                                     "(its stages: 1 to %d)", (long long)fst[k],
                                     in_net ? teacher : file,
                                     gbtd_cru_net_stages(in_net ? &T : &r.cru));
        }
        fo.teacher = &T;
    }
    double before = -1, t0 = cli_now();
    prog p = {quiet, 0};
    gbtd_cru_epoch_info ei;
    memset(&ei, 0, sizeof ei);
    if (!st) {
        const float *m, *s;
        cru_cli_norm(&r, &m, &s);
        fo.mean = m;
        fo.std = s;
        fo.test_limit = limit;
        fo.on_step = on_step_;
        fo.on_epoch = on_epoch_;
        fo.ctx = &p;
        if (augment) {
            fo.crop_pad = 4;
            fo.flip = true;
        }
        rc = cru_cli_eval(&r.cru, &r, limit, &before);
        if (!rc) rc = gbtd_cru_finetune(&r.cru, &r.tr, &r.te, &fo, &ei);
        if (rc) st = cli_fail("finetune", rc, "fine-tuning failed");
    }
    if (!st) {
        rc = gbtd_checkpoint_save(outp, &r.cru, NULL, NULL);
        if (rc) st = cli_fail("finetune", rc, "cannot write the output");
    }
    if (!st) {
        double secs = cli_now() - t0;
        if (json) {
            printf("{\"network\": \"%s\", \"params\": %lld, \"epochs\": %d, \"top1_before\": %.4f, "
                   "\"top1_after\": %.4f, \"seconds\": %.3f, \"seconds_per_epoch\": %.3f, "
                   "\"feat_beta\": %g, \"feat_stages\": ",
                   file, (long long)r.cru.nparams, fo.epochs, 100 * before, 100 * ei.test_top1,
                   secs, ei.seconds, fo.feat_beta);
            if (nfst == 0) printf(teacher ? "\"all\"" : "null");
            for (int k = 0; k < nfst; k++) printf("%s%lld", k ? ", " : "[", (long long)fst[k]);
            if (nfst) printf("]");
            if (ei.feat_dist >= 0) printf(", \"feat_dist\": %.6f}\n", ei.feat_dist);
            else printf(", \"feat_dist\": null}\n");
        } else {
            printf("network %s (%lld parameters)\ntest top-1 before %.2f %%, after %d epochs "
                   "%.2f %%\n", file, (long long)r.cru.nparams, 100 * before, fo.epochs,
                   100 * ei.test_top1);
            if (ei.feat_dist >= 0)
                printf("feature distance to the teacher (last epoch, training) %.4f%s\n",
                       ei.feat_dist, fo.feat_beta > 0 ? "" : " (not matched: --feat-beta 0)");
            printf("time %.1f s\nwrote %s\n", secs, outp);
        }
    }
    gbtd_net_free(&T);
    cru_run_free(&r);
    return st;
}
