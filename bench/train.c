/* bench/train: training and inference images/s of gbtd against PyTorch (same networks, same
 * batch 128, same thread count, 28x28 single-channel inputs), best of N steps each, and the
 * peak resident memory of each side. The last line is one JSON object.
 * usage: train [PYTHON SCRIPT] [--threads N] [--steps N] [--net NAME] (NAME: one network only) */
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

int main(int argc, char **argv)
{
    const char *python = NULL, *script = NULL, *only = NULL;
    int threads = 2, steps = 5, batch = 128;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--net") && i + 1 < argc) only = argv[++i];
        else if (!python) python = argv[i];
        else script = argv[i];
    }
    static const char *const specs[] = {"resnet-20", "bottleneck-29", "resnext-29-8x4d",
                                        "resnext-29-32x1d", "cru-net-35@x14x7-8x4d"};
    enum { NS = 5 };
    double gt[NS], gi[NS], pt[NS] = {0}, pi[NS] = {0};
    long prss = 0;
    gbtd_set_threads(threads);
    for (int s = 0; s < NS; s++) {
        if (only && strcmp(only, specs[s])) {
            gt[s] = gi[s] = 0;
            continue;
        }
        char spec[128];
        snprintf(spec, sizeof spec, "%s:input=1x28x28", specs[s]);
        gbtd_net net;
        gbtd_sgd opt;
        if (gbtd_net_from_spec(spec, &net) || gbtd_sgd_init(&opt, &net, NULL)) {
            fprintf(stderr, "%s: %s\n", spec, gbtd_last_error());
            return 1;
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
        gt[s] = batch / best;
        gi[s] = batch / bi;
        fprintf(stderr, "gbtd %-24s train %8.1f img/s  infer %8.1f img/s\n", specs[s], gt[s], gi[s]);
        free(x);
        free(y);
        gbtd_sgd_free(&opt);
        gbtd_net_free(&net);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long grss = ru.ru_maxrss;
    if (python && script) {
        char cmd[4096];
        int len = snprintf(cmd, sizeof cmd, "'%s' '%s' %d %d %d", python, script, threads, batch,
                           steps);
        for (int s = 0; s < NS; s++)
            if (!only || !strcmp(only, specs[s]))
                len += snprintf(cmd + len, sizeof cmd - (size_t)len, " '%s'", specs[s]);
        snprintf(cmd + len, sizeof cmd - (size_t)len, " 2>/dev/null");
        FILE *p = popen(cmd, "r");
        char line[512], name[128];
        double a, b;
        long r;
        while (p && fgets(line, sizeof line, p))
            if (sscanf(line, "%127s %lf %lf %ld", name, &a, &b, &r) == 4)
                for (int s = 0; s < NS; s++)
                    if (!strcmp(name, specs[s])) {
                        pt[s] = a;
                        pi[s] = b;
                        if (r > prss) prss = r;
                    }
        if (p) pclose(p);
    }
    printf("%-24s %10s %10s %7s %10s %10s %7s\n", "network (28x28, batch 128)", "gbtd train",
           "torch", "ratio", "gbtd infer", "torch", "ratio");
    for (int s = 0; s < NS; s++)
        printf("%-24s %10.1f %10.1f %7.2f %10.1f %10.1f %7.2f\n", specs[s], gt[s], pt[s],
               pt[s] > 0 ? gt[s] / pt[s] : 0, gi[s], pi[s], pi[s] > 0 ? gi[s] / pi[s] : 0);
    printf("peak RSS: gbtd %ld MiB, PyTorch %ld MiB (threads %d)\n", grss / 1024, prss / 1024,
           threads);
    printf("{\"bench\": \"train\", \"threads\": %d, \"batch\": %d, \"gbtd_rss_kb\": %ld, "
           "\"torch_rss_kb\": %ld, \"nets\": [", threads, batch, grss, prss);
    for (int s = 0; s < NS; s++)
        printf("%s{\"net\": \"%s\", \"gbtd_train\": %.1f, \"torch_train\": %.1f, "
               "\"gbtd_infer\": %.1f, \"torch_infer\": %.1f}", s ? ", " : "", specs[s], gt[s],
               pt[s], gi[s], pi[s]);
    printf("]}\n");
    return 0;
}
