/* bench/train: training and inference images/s of gbtd against PyTorch (same networks, same
 * batch 128, same thread count, 28x28 single-channel inputs), best of N steps each, and the
 * peak resident memory of each side. Per network, R rounds of PyTorch then gbtd (each side's
 * best round kept), so that the two sides of a ratio are measured minutes apart at most. The last
 * line is one JSON object.
 * usage: train [PYTHON SCRIPT] [--threads N] [--steps N] [--rounds R] [--net NAME]
 *        (NAME: one network only; R defaults to 2) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "gbtd.h"
#include "nn/arch.h"
#include "nn/train.h"

static double now_(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* PyTorch's training and inference images/s and peak RSS (kB) for one network: one process of
 * SCRIPT per network, so that its figures are taken right beside gbtd's. 0 if it fails. */
static int torch_run(const char *python, const char *script, int threads, int batch, int steps,
                     const char *spec, double *train, double *infer, long *rss)
{
    char cmd[2048], line[512], name[128];
    snprintf(cmd, sizeof cmd, "'%s' '%s' %d %d %d '%s' 2>/dev/null", python, script, threads,
             batch, steps, spec);
    FILE *p = popen(cmd, "r");
    int ok = 0;
    double a, b;
    long r;
    while (p && fgets(line, sizeof line, p))
        if (sscanf(line, "%127s %lf %lf %ld", name, &a, &b, &r) == 4 && !strcmp(name, spec)) {
            *train = a;
            *infer = b;
            *rss = r;
            ok = 1;
        }
    if (p) pclose(p);
    return ok;
}

/* gbtd's training and inference images/s for one network, best of `steps` each. */
static int gbtd_run(const char *name, int batch, int steps, double *train, double *infer)
{
    char spec[128];
    snprintf(spec, sizeof spec, "%s:input=1x28x28", name);
    gbtd_net net;
    gbtd_sgd opt;
    if (gbtd_net_from_spec(spec, &net)) return 0;
    if (gbtd_sgd_init(&opt, &net, NULL)) {
        gbtd_net_free(&net);
        return 0;
    }
    float *x = malloc((size_t)batch * 784 * sizeof(float));
    int32_t *y = malloc((size_t)batch * sizeof(int32_t));
    gbtd_rng *rng;
    gbtd_rng_alloc(1, &rng);
    for (int i = 0; i < batch * 784; i++) x[i] = (float)gbtd_rng_normal(rng);
    for (int i = 0; i < batch; i++) y[i] = (int32_t)gbtd_rng_uint(rng, 10);
    gbtd_rng_free(rng);
    double loss, best = 1e9, bi = 1e9;
    gbtd_train_step(&net, &opt, x, y, batch, 0.01, 0, &loss, NULL); /* warm-up */
    for (int k = 0; k < steps; k++) {
        double t = now_();
        gbtd_train_step(&net, &opt, x, y, batch, 0.01, 0, &loss, NULL);
        t = now_() - t;
        if (t < best) best = t;
    }
    gbtd_net_forward(&net, x, batch, false, NULL);
    for (int k = 0; k < steps; k++) {
        double t = now_();
        gbtd_net_forward(&net, x, batch, false, NULL);
        t = now_() - t;
        if (t < bi) bi = t;
    }
    *train = batch / best;
    *infer = batch / bi;
    free(x);
    free(y);
    gbtd_sgd_free(&opt);
    gbtd_net_free(&net);
    return 1;
}

static double maxd(double a, double b) { return a > b ? a : b; }

int main(int argc, char **argv)
{
    const char *python = NULL, *script = NULL, *only = NULL;
    int threads = 2, steps = 5, batch = 128, rounds = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--net") && i + 1 < argc) only = argv[++i];
        else if (!python) python = argv[i];
        else script = argv[i];
    }
    if (steps < 1 || rounds < 1 || threads < 1) {
        fprintf(stderr, "train: --steps, --rounds and --threads must be at least 1\n");
        return 2;
    }
    static const char *const specs[] = {"resnet-20", "bottleneck-29", "resnext-29-8x4d",
                                        "resnext-29-32x1d", "cru-net-35@x14x7-8x4d"};
    enum { NS = 5 };
    double gt[NS] = {0}, gi[NS] = {0}, pt[NS] = {0}, pi[NS] = {0};
    long prss = 0;
    gbtd_set_threads(threads);
    /* Per network and round, PyTorch then gbtd, each side's best round kept: on a shared machine
     * the speed available drifts over minutes, so both sides of a ratio are measured side by side
     * and more than once. */
    for (int s = 0; s < NS; s++) {
        if (only && strcmp(only, specs[s])) continue;
        for (int r = 0; r < rounds; r++) {
            double a = 0, b = 0, c = 0, d = 0;
            long rss = 0;
            if (python && script &&
                torch_run(python, script, threads, batch, steps, specs[s], &a, &b, &rss)) {
                pt[s] = maxd(pt[s], a);
                pi[s] = maxd(pi[s], b);
                if (rss > prss) prss = rss;
            }
            if (!gbtd_run(specs[s], batch, steps, &c, &d)) {
                fprintf(stderr, "%s: %s\n", specs[s], gbtd_last_error());
                return 1;
            }
            gt[s] = maxd(gt[s], c);
            gi[s] = maxd(gi[s], d);
            fprintf(stderr, "round %d %-24s gbtd train %7.1f infer %7.1f | torch train %7.1f "
                    "infer %7.1f\n", r + 1, specs[s], c, d, a, b);
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long grss = ru.ru_maxrss;
    printf("%-24s %10s %10s %7s %10s %10s %7s\n", "network (28x28, batch 128)", "gbtd train",
           "torch", "ratio", "gbtd infer", "torch", "ratio");
    for (int s = 0; s < NS; s++)
        printf("%-24s %10.1f %10.1f %7.2f %10.1f %10.1f %7.2f\n", specs[s], gt[s], pt[s],
               pt[s] > 0 ? gt[s] / pt[s] : 0, gi[s], pi[s], pi[s] > 0 ? gi[s] / pi[s] : 0);
    printf("peak RSS: gbtd %ld MiB (all networks, one process), PyTorch %ld MiB (largest of its "
           "per-network processes) (threads %d, best of %d rounds)\n", grss / 1024, prss / 1024,
           threads, rounds);
    printf("{\"bench\": \"train\", \"threads\": %d, \"batch\": %d, \"rounds\": %d, "
           "\"gbtd_rss_kb\": %ld, \"torch_rss_kb\": %ld, \"nets\": [", threads, batch, rounds,
           grss, prss);
    for (int s = 0; s < NS; s++)
        printf("%s{\"net\": \"%s\", \"gbtd_train\": %.1f, \"torch_train\": %.1f, "
               "\"gbtd_infer\": %.1f, \"torch_infer\": %.1f}", s ? ", " : "", specs[s], gt[s],
               pt[s], gi[s], pi[s]);
    printf("]}\n");
    return 0;
}
