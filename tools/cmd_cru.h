/* Helpers shared by gbtd compress, finetune, sweep and demo (the CRU pipeline commands). */
#ifndef GBTD_TOOLS_CMD_CRU_H
#define GBTD_TOOLS_CMD_CRU_H

#include <stdbool.h>
#include <stdint.h>

#include "cru/build.h"
#include "gbtd.h"
#include "nn/arch.h"
#include "nn/train.h"

typedef struct cru_cli_opts {
    int stages[GBTD_ARCH_MAX_STAGES];
    int nstages;
    int terms;
    int64_t rank_in, rank_out; /* 0: from the budget */
    double budget;             /* 0: ranks given */
    int groups_of;
    bool extra, act, fold;
    const char *data, *dir, *norm;
    int64_t limit;             /* test images evaluated (0: all) */
    int64_t bn_images;         /* training images for batch-norm re-estimation (0: none) */
    int64_t refit_images;      /* training images for the response refit (0: none) */
    bool intercept;            /* the refit also fits a constant per channel (into the BN) */
    int iters;                 /* ALS sweeps of the BTD for R > 1 (0: the library's 200) */
    bool json, quiet;
    int threads;
    uint64_t seed;
} cru_cli_opts;

typedef struct cru_run {
    gbtd_net src, cru;
    gbtd_cru_stage st[GBTD_ARCH_MAX_STAGES];
    int nstages;
    gbtd_dataset tr, te;
    bool have_data;
    bool imnet;                /* ImageNet normalisation (the CIFAR safetensors models) */
    double acc_src, acc_cru;   /* test top-1 in [0, 1], -1 when not measured */
    double acc_raw;            /* CRU-Net top-1 before batch-norm re-estimation (-1: none) */
    double acc_built;          /* CRU-Net top-1 as built, before the response refit (-1: none) */
    gbtd_cru_refit_info refit; /* members 0: no refit */
    double t_factor, t_eval, t_bn, t_refit;
} cru_run;

void cru_cli_opts_default(cru_cli_opts *o);
/* Consume the option at argv[*i] if it is one of the shared ones: 1 consumed, 0 not ours,
 * -1 after a usage error. */
int cru_cli_parse(const char *cmd, int argc, char **argv, int *i, cru_cli_opts *o);
/* Load the data (when o->data) and the weights, check shapes, factor the stages, build the
 * CRU-Net and evaluate both (with data). Returns 0 or the exit status after printing. */
int cru_cli_compress(const char *cmd, const char *file, const cru_cli_opts *o, cru_run *r);
/* Same from an already loaded source network (moved into r) and data (tr/te may be NULL). */
int cru_cli_compress_net(const char *cmd, gbtd_net *src, const cru_cli_opts *o, cru_run *r);
void cru_run_free(cru_run *r);
/* Per-stage report (text or, with o->json, one JSON object). */
void cru_cli_print(const cru_cli_opts *o, const cru_run *r, const char *file, const char *out,
                   const char *json_extra);
/* Normalisation for the run's data (NULL, NULL: data set constants). */
void cru_cli_norm(const cru_run *r, const float **mean, const float **std);
/* Top-1 of net on r->te (limit images), in [0, 1]. */
int cru_cli_eval(gbtd_net *net, const cru_run *r, int64_t limit, double *top1);

#endif
