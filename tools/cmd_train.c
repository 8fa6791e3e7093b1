/* gbtd train SPEC --data ...: train a network, progress on stderr (a line per epoch; on a terminal
 * also a running line inside the epoch), checkpoint out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "gbtd.h"
#include "nn/arch.h"
#include "nn/train.h"
#include "nn_cli.h"

static void usage_(FILE *f)
{
    fprintf(f,
            "usage: gbtd train SPEC --data fashion-mnist|cifar10 [options]\n"
            "  --data-dir DIR      data folder (default %s for fashion-mnist)\n"
            "  --epochs N          10          --batch N       128\n"
            "  --lr X              0.1 peak    --schedule S    cosine | step | constant\n"
            "  --warmup E          warm-up epochs (linear), 0\n"
            "  --milestones A,B    step schedule: epochs at which lr *= 0.1\n"
            "  --momentum X        0.9         --nesterov\n"
            "  --wd X              weight decay 5e-4 (not on BN and biases unless --wd-all)\n"
            "  --label-smoothing X 0           --augment       random crop (pad 4) + flip\n"
            "  --max-steps N       stop after N steps in total\n"
            "  --threads N         OpenMP and OpenBLAS threads (default 1)\n"
            "  --seed N            0 (initialisation, data order, augmentation)\n"
            "  -o CKPT             write an HDF5 checkpoint after every epoch\n"
            "  --resume CKPT       continue a run from its checkpoint\n"
            "  --limit N           use only the first N training images\n"
            "  --quiet             no progress      --json   summary as JSON on stdout\n"
            "SPEC gets ':input=CxHxW' of the data set unless it sets input= itself.\n",
            GBTD_FASHION_MNIST_DIR);
}

typedef struct progress {
    bool quiet;
    const char *ckpt;
    gbtd_net *net;
    gbtd_sgd *opt;
    gbtd_train_state *st;
    gbtd_epoch_info last;
    int save_rc;
    double shown_at; /* when the running line was last written (0: not on screen) */
} progress;

/* On a terminal: one line rewritten in place at most twice a second. */
static int on_step_(const gbtd_step_info *s, void *ctx)
{
    progress *p = ctx;
    const double t = cli_now();
    if (p->shown_at > 0 && t - p->shown_at < 0.5 && s->epoch_step < s->epoch_steps) return 0;
    fprintf(stderr,
            "\repoch %d/%d  step %lld/%lld  loss %.4f  train %.2f%%  %.0f img/s  ETA %.0f s  ",
            s->epoch, s->epochs, (long long)s->epoch_step, (long long)s->epoch_steps, s->loss,
            100 * s->top1, s->images_per_s, s->eta_s);
    fflush(stderr);
    p->shown_at = t;
    return 0;
}

static int on_epoch_(const gbtd_epoch_info *e, void *ctx)
{
    progress *p = ctx;
    p->last = *e;
    if (p->shown_at > 0) { /* clear the running line */
        fprintf(stderr, "\r%*s\r", 100, "");
        p->shown_at = 0;
    }
    if (!p->quiet) {
        fprintf(stderr, "epoch %d/%d  step %lld  loss %.4f  train %.2f%%", e->epoch, e->epochs,
                (long long)e->step, e->loss, 100 * e->top1);
        if (e->test_top1 >= 0) fprintf(stderr, "  test %.2f%% (loss %.4f)", 100 * e->test_top1,
                                       e->test_loss);
        fprintf(stderr, "  lr %.4g  %.0f img/s  %.1f s  ETA %.0f s\n", e->lr, e->images_per_s,
                e->seconds, e->eta_s);
    }
    if (p->ckpt) {
        p->save_rc = gbtd_checkpoint_save(p->ckpt, p->net, p->opt, p->st);
        if (p->save_rc) return 1;
    }
    return 0;
}

int cmd_train(int argc, char **argv)
{
    const char *spec = NULL, *data = NULL, *dir = NULL, *out = NULL, *resume = NULL;
    gbtd_train_opts o = gbtd_train_opts_default();
    o.sgd.weight_decay = 5e-4;
    long long threads = 1, seed = 0, limit = 0, tmp;
    bool quiet = false, json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED()                                                                                    \
    do {                                                                                          \
        if (!v) return cli_usage_error("train", "%s needs a value", a);                           \
        i++;                                                                                      \
    } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage_(stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--data")) { NEED(); data = v;
        } else if (!strcmp(a, "--data-dir")) { NEED(); dir = v;
        } else if (!strcmp(a, "-o")) { NEED(); out = v;
        } else if (!strcmp(a, "--resume")) { NEED(); resume = v;
        } else if (!strcmp(a, "--epochs")) { NEED();
            if (!cli_parse_int("train", a, v, 1, 100000, &tmp)) return EXIT_USAGE;
            o.epochs = (int)tmp;
        } else if (!strcmp(a, "--batch")) { NEED();
            if (!cli_parse_int("train", a, v, 2, 65536, &tmp)) return EXIT_USAGE;
            o.batch = (int)tmp;
        } else if (!strcmp(a, "--max-steps")) { NEED();
            if (!cli_parse_int("train", a, v, 1, (long long)1 << 40, &tmp)) return EXIT_USAGE;
            o.max_steps = tmp;
        } else if (!strcmp(a, "--threads")) { NEED();
            if (!cli_parse_int("train", a, v, 1, 1024, &threads)) return EXIT_USAGE;
        } else if (!strcmp(a, "--seed")) { NEED();
            if (!cli_parse_int("train", a, v, 0, (long long)1 << 62, &seed)) return EXIT_USAGE;
        } else if (!strcmp(a, "--limit")) { NEED();
            if (!cli_parse_int("train", a, v, 2, (long long)1 << 40, &limit)) return EXIT_USAGE;
        } else if (!strcmp(a, "--lr")) { NEED();
            if (!cli_parse_double("train", a, v, &o.lr) || !(o.lr > 0))
                return cli_usage_error("train", "--lr must be > 0");
        } else if (!strcmp(a, "--momentum")) { NEED();
            if (!cli_parse_double("train", a, v, &o.sgd.momentum) || o.sgd.momentum < 0 ||
                o.sgd.momentum >= 1)
                return cli_usage_error("train", "--momentum must be in [0, 1)");
        } else if (!strcmp(a, "--wd")) { NEED();
            if (!cli_parse_double("train", a, v, &o.sgd.weight_decay) || o.sgd.weight_decay < 0)
                return cli_usage_error("train", "--wd must be >= 0");
        } else if (!strcmp(a, "--warmup")) { NEED();
            if (!cli_parse_double("train", a, v, &o.warmup_epochs) || o.warmup_epochs < 0)
                return cli_usage_error("train", "--warmup must be >= 0");
        } else if (!strcmp(a, "--label-smoothing")) { NEED();
            double ls;
            if (!cli_parse_double("train", a, v, &ls) || ls < 0 || ls >= 1)
                return cli_usage_error("train", "--label-smoothing must be in [0, 1)");
            o.label_smoothing = (float)ls;
        } else if (!strcmp(a, "--schedule")) { NEED();
            if (!strcmp(v, "cosine")) o.schedule = GBTD_LR_COSINE;
            else if (!strcmp(v, "step")) o.schedule = GBTD_LR_STEP;
            else if (!strcmp(v, "constant")) o.schedule = GBTD_LR_CONSTANT;
            else return cli_usage_error("train", "--schedule %s (cosine, step, constant)", v);
        } else if (!strcmp(a, "--milestones")) { NEED();
            int64_t ms[GBTD_LR_MAX_MILESTONES];
            int n = cli_parse_list("train", a, v, ms, GBTD_LR_MAX_MILESTONES);
            if (n < 0) return EXIT_USAGE;
            o.nmilestones = n;
            for (int k = 0; k < n; k++) o.milestones[k] = (int)ms[k];
        } else if (!strcmp(a, "--nesterov")) { o.sgd.nesterov = true;
        } else if (!strcmp(a, "--wd-all")) { o.sgd.decay_bn_bias = true;
        } else if (!strcmp(a, "--augment")) { o.crop_pad = 4; o.flip = true;
        } else if (!strcmp(a, "--quiet")) { quiet = true;
        } else if (!strcmp(a, "--json")) { json = true;
        } else if (a[0] == '-') { return cli_usage_error("train", "unknown option '%s'", a);
        } else if (spec) { return cli_usage_error("train", "more than one SPEC");
        } else { spec = a;
        }
#undef NEED
    }
    if (!spec && !resume) return cli_usage_error("train", "missing SPEC (gbtd arch --list)");
    if (!data) return cli_usage_error("train", "missing --data fashion-mnist|cifar10");
    gbtd_set_threads((int)threads);
    o.seed = (uint64_t)seed;
    gbtd_dataset tr, te;
    int rc = nn_cli_load_data("train", data, dir, &tr, &te);
    if (rc) return rc;
    if (limit > 0 && limit < tr.n) gbtd_dataset_truncate(&tr, limit);
    char full[256], rspec[256];
    if (resume) {
        rc = gbtd_checkpoint_spec(resume, rspec, sizeof rspec);
        if (rc) {
            gbtd_dataset_free(&tr);
            gbtd_dataset_free(&te);
            return cli_fail("train", rc, "cannot read the checkpoint to resume");
        }
        spec = rspec;
    }
    nn_cli_spec_for_data(spec, &tr, full, sizeof full);
    gbtd_net net;
    gbtd_sgd opt;
    memset(&opt, 0, sizeof opt);
    gbtd_train_state st = {0, 0, (uint64_t)seed};
    rc = gbtd_net_from_spec(full, &net);
    if (!rc) rc = gbtd_net_init_params(&net, (uint64_t)seed);
    if (!rc) rc = gbtd_sgd_init(&opt, &net, &o.sgd);
    if (!rc && resume) rc = gbtd_checkpoint_load(resume, &net, &opt, &st);
    if (rc) {
        gbtd_dataset_free(&tr);
        gbtd_dataset_free(&te);
        gbtd_net_free(&net);
        gbtd_sgd_free(&opt);
        return cli_fail("train", rc, "cannot set up the network");
    }
    if (!quiet)
        fprintf(stderr, "gbtd train: %s on %s (%lld images), %lld parameters, %d threads\n", full,
                data, (long long)tr.n, (long long)net.nparams, (int)threads);
    progress p = {quiet, out, &net, &opt, &st, {0}, 0, 0};
    o.on_epoch = on_epoch_;
    if (!quiet && cli_stderr_is_tty()) o.on_step = on_step_;
    o.ctx = &p;
    double t0 = cli_now();
    rc = gbtd_train_run(&net, &opt, &st, &tr, &te, &o);
    double secs = cli_now() - t0;
    int status = EXIT_OK;
    if (p.save_rc) status = cli_fail("train", p.save_rc, "cannot write the checkpoint");
    else if (rc) status = cli_fail("train", rc, "training failed");
    if (!status && json) {
        printf("{\"spec\": ");
        cli_json_string(stdout, full);
        printf(", \"data\": ");
        cli_json_string(stdout, data);
        printf(", \"epochs\": %lld, \"steps\": %lld, \"params\": %lld, \"train_loss\": %.6f, "
               "\"train_top1\": %.4f, \"test_loss\": %.6f, \"test_top1\": %.4f, \"seconds\": %.3f, "
               "\"images_per_s\": %.1f, \"threads\": %d, \"seed\": %lld}\n",
               (long long)st.epoch, (long long)st.step, (long long)net.nparams, p.last.loss,
               100 * p.last.top1, p.last.test_loss, 100 * p.last.test_top1, secs,
               p.last.images_per_s, (int)threads, seed);
    }
    gbtd_dataset_free(&tr);
    gbtd_dataset_free(&te);
    gbtd_net_free(&net);
    gbtd_sgd_free(&opt);
    return status;
}
