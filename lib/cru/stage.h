/* gbtd cru: collective factorization of a network stage (the CRU of the paper).
 *
 * Members. A stage "layerS" of a network (nn/net.h, PyTorch names) holds members whose
 * effective kernels have one shape kh x kw x C_in x C_out and one stride:
 *   - basic-block networks (the CIFAR ResNets): every kh x kw convolution of the stage with
 *     C_in = C_out = the stage width, groups 1 and stride 1 ("layer3.4.conv1", ...);
 *   - bottleneck / ResNeXt networks: every unit "layerS.u" whose input and output widths agree
 *     and whose grouped conv has stride 1; its effective kernel is the BTD of its three
 *     convolutions (cru/unit.h).
 * With fold_bn, each member's kernel has the scale gamma / sqrt(var + eps) of the batch norm that
 * follows it folded into its output channels (bottleneck units: the three batch norms), so that
 * the kernel error measures what the network sees.
 *
 * Collective factorization. The members are split into consecutive sharing groups of
 * `groups_of` members (0: one group). For each group the kernels are stacked along the output
 * mode, X+ = [K_1, ..., K_n] (kh x kw x C_in x n C_out), and one BTD with R terms of rank
 * (r_in, r_out) over modes {2, 3} is fitted to X+:
 *     X+ ~ sum_r G_r x_2 A_r x_3 B_r+,   A_r: C_in x r_in, G_r: kh x kw x r_in x r_out,
 *     B_r+: (n C_out) x r_out, whose row block l is the own output factor B_r^(l) of member l.
 * R = 1 is the collective Tucker-2 (fitted by partial HOOI); R > 1 uses gbtd_btd_decompose.
 * Parameters counted (convolution weights only):
 *   before: members x (kh kw C_in C_out)   [bottleneck: C_in D + D (D / groups) kh kw + D C_out]
 *   after : per group R (C_in r_in + kh kw r_in r_out) + n (R r_out C_out [+ (R r_out)^2 with
 *           the extra own 1x1 of the improved form])
 * With ranks 0 they are chosen for a budget (a fraction of "before"): the largest r_out (and
 * r_in = min(r_out, C_in / R)) whose count fits. The comparison the paper argues from: an
 * independent Tucker-2 of every member with ranks (t, t), t the largest whose total count is at
 * most the collective count, and the stage's relative kernel error of both. */
#ifndef GBTD_CRU_STAGE_H
#define GBTD_CRU_STAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"
#include "decomp/btd.h"
#include "nn/net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gbtd_cru_member_kind {
    GBTD_CRU_MEMBER_CONV = 1,  /* one kh x kw convolution (basic blocks) */
    GBTD_CRU_MEMBER_BOTTLENECK /* one bottleneck / ResNeXt unit (1x1, grouped kxk, 1x1) */
} gbtd_cru_member_kind;

typedef struct gbtd_cru_member {
    gbtd_cru_member_kind kind;
    char name[GBTD_NET_NAME_LEN]; /* "layer3.4.conv1" or "layer2.1" */
    int conv[3];                  /* source layer indices: CONV conv[0]; BOTTLENECK conv1..3 */
    int bn[3];                    /* BN layer after each conv (-1 none) */
    int input;                    /* source value the member reads */
} gbtd_cru_member;

typedef struct gbtd_cru_stage_opts {
    int terms;                /* R >= 1 (default 1) */
    int64_t rank_in, rank_out; /* per-term ranks; both 0: chosen for `budget` (default 0) */
    double budget;            /* fraction of the members' conv parameters (default 0.5) */
    int groups_of;            /* members per sharing group, 0 = all in one (default 0) */
    bool fold_bn;             /* fold the batch-norm scales (default true) */
    bool extra;               /* the improved form's own 1x1 per member (default false) */
    bool act;                 /* BN-ReLU after the shared conv and after the extra 1x1 (default false) */
    bool balance;             /* fit each member's kernel divided by its norm (the sum of the
                                 members' squared relative errors is minimised, not the squared
                                 error of X+, in which small kernels count for little; the output
                                 blocks are scaled back) (default true) */
    bool independent;         /* also fit the independent per-member Tucker-2 (default true) */
    gbtd_btd_opts btd;        /* solver options for R > 1 (max_iter 200, ALS) */
    int hooi_iter;            /* HOOI sweeps for R = 1 (default 30) */
} gbtd_cru_stage_opts;

gbtd_cru_stage_opts gbtd_cru_stage_opts_default(void);

typedef struct gbtd_cru_stage {
    int stage;                 /* S of "layerS" */
    int nmembers;
    gbtd_cru_member *members;
    int64_t kh, kw, c_in, c_out;
    int stride, pad;
    int64_t member_params;     /* conv parameters of one member */
    /* the factorization (set by gbtd_cru_stage_factor or gbtd_cru_stage_set_layout) */
    int ngroups;
    int *group_start;          /* ngroups + 1 entries; group g = members [start[g], start[g+1]) */
    int terms;
    int64_t rank_in, rank_out;
    bool extra, act;
    gbtd_btd *models;          /* ngroups models (NULL before fitting) */
    float *scale;              /* nmembers x C_out folded output scales (1 when not folded) */
    int64_t params_before, params_after;
    double kernel_error;       /* ||X+ - model|| / ||X+|| over all groups */
    double *member_error;      /* per member */
    int64_t indep_rank;        /* independent Tucker-2 rank t (0: not computed) */
    int64_t indep_params;
    double indep_error;
    double seconds, indep_seconds;
} gbtd_cru_stage;

/* The members of stage `stage` (1-based, "layerS") of a finalised network, into *out (free with
 * gbtd_cru_stage_free). Errors: GBTD_ENOTFOUND (no such stage, or no two members of equal
 * shape: nothing to share), GBTD_EINVAL, GBTD_ENOMEM. */
int gbtd_cru_stage_find(const gbtd_net *net, int stage, gbtd_cru_stage *out);
void gbtd_cru_stage_free(gbtd_cru_stage *st);

/* Member m's effective kernel (kh x kw x C_in x C_out, double), allocated into *k; with
 * fold_bn the batch-norm scales are folded in (and the output scales written to scale_out,
 * C_out values, when not NULL). */
int gbtd_cru_member_kernel(const gbtd_net *net, const gbtd_cru_stage *st, int m, bool fold_bn,
                           gbtd_tensor *k, float *scale_out);

/* Conv parameters after collective factorization with these settings (see the top). */
int64_t gbtd_cru_stage_count(const gbtd_cru_stage *st, int terms, int64_t rank_in,
                             int64_t rank_out, int groups_of, bool extra);
/* Ranks for a budget fraction; GBTD_ERANGE when even rank 1 does not fit. */
int gbtd_cru_stage_ranks_for_budget(const gbtd_cru_stage *st, int terms, int groups_of,
                                    bool extra, double budget, int64_t *rank_in,
                                    int64_t *rank_out);

/* Record the layout (groups, R, ranks, extra, act) without fitting: what gbtd_cru_build needs
 * to rebuild a CRU-Net's graph before loading its weights. Errors: GBTD_EINVAL, GBTD_ERANGE. */
int gbtd_cru_stage_set_layout(gbtd_cru_stage *st, int terms, int64_t rank_in, int64_t rank_out,
                              int groups_of, bool extra, bool act);

/* Fit the collective factorization of st (members found by gbtd_cru_stage_find on net) with
 * opts (NULL: defaults), filling the layout, models, counts and errors (and the independent
 * comparison when asked). Errors: GBTD_ERANGE (budget that cannot be met, ranks the data cannot
 * hold), GBTD_EINVAL, GBTD_ENOMEM, solver errors. */
int gbtd_cru_stage_factor(const gbtd_net *net, gbtd_cru_stage *st,
                          const gbtd_cru_stage_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
