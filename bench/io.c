/* bench/io: load and recognise a ResNet-50-size safetensors file (~100 MB, generated in the run
 * with torchvision names and no metadata) against reading the same bytes with
 * `cat FILE > /dev/null`, both from the page cache; min and median of N runs, GB/s, and the peak
 * RSS of one load in a fresh child process (the mapping's pages are dropped as they are copied,
 * so it should stay near one copy of the weights).
 *
 * usage: io [--runs N] [--dir DIR]        prints one "io ..." line per case and the ratio */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gbtd.h"
#include "nn/arch.h"
#include "nn/train.h"

static double now_(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Write the file in a child so that the parent's RSS stays small. */
static int generate_(const char *path)
{
    pid_t pid = fork();
    if (pid == 0) {
        gbtd_net net;
        int rc = gbtd_net_from_spec("resnet-50", &net);
        if (!rc) rc = gbtd_net_init_params(&net, 1);
        if (!rc) rc = gbtd_net_save_safetensors(&net, path);
        if (rc) fprintf(stderr, "io: %s\n", gbtd_last_error());
        gbtd_net_free(&net);
        _exit(rc ? 1 : 0);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}

/* One load in a fresh child: its peak RSS in KiB (-1 on failure). */
static long child_rss_(const char *path)
{
    int fd[2];
    if (pipe(fd)) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        gbtd_net net;
        long kb = -1;
        if (gbtd_model_load(path, NULL, &net, NULL) == GBTD_OK) {
            struct rusage ru;
            getrusage(RUSAGE_SELF, &ru);
            kb = ru.ru_maxrss;
            gbtd_net_free(&net);
        }
        if (write(fd[1], &kb, sizeof kb) != (ssize_t)sizeof kb) _exit(1);
        _exit(0);
    }
    close(fd[1]);
    long kb = -1;
    if (read(fd[0], &kb, sizeof kb) != (ssize_t)sizeof kb) kb = -1;
    close(fd[0]);
    waitpid(pid, NULL, 0);
    return kb;
}

int main(int argc, char **argv)
{
    int runs = 7;
    const char *dir = "/tmp";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dir")) dir = argv[i + 1];
    }
    if (runs < 1 || runs > 100) runs = 7;
    char path[1024], cmd[1200];
    snprintf(path, sizeof path, "%s/gbtd_bench_io_%ld.safetensors", dir, (long)getpid());
    if (generate_(path)) return 1;
    struct stat sb;
    stat(path, &sb);
    const double gb = (double)sb.st_size / 1e9;
    snprintf(cmd, sizeof cmd, "cat '%s' > /dev/null", path);
    if (system(cmd) != 0) return 1; /* warm the page cache */

    /* validate before timing: recognised as torchvision resnet50 with its parameter count */
    gbtd_net net;
    gbtd_model_info info;
    if (gbtd_model_load(path, NULL, &net, &info) || strcmp(info.family, "resnet50") ||
        net.nparams != 25557032) {
        fprintf(stderr, "io: validation failed: %s (%s)\n", gbtd_last_error(), info.family);
        remove(path);
        return 1;
    }
    gbtd_net_free(&net);

    double *tc = malloc((size_t)runs * sizeof(double)), *tg = malloc((size_t)runs * sizeof(double));
    for (int r = 0; r < runs; r++) { /* alternate the two, so that noise hits both alike */
        double t0 = now_();
        if (system(cmd) != 0) return 1;
        tc[r] = now_() - t0;
        t0 = now_();
        gbtd_model_load(path, NULL, &net, NULL);
        tg[r] = now_() - t0;
        gbtd_net_free(&net);
    }
    /* phases of one load (best of runs): map + validate the header, recognise, build, copy */
    double ph[4] = {1e9, 1e9, 1e9, 1e9};
    for (int r = 0; r < runs; r++) {
        gbtd_tensor_set s;
        gbtd_model_info mi;
        gbtd_model_opts o = gbtd_model_opts_default();
        o.no_init = true;
        double t[5];
        t[0] = now_();
        gbtd_model_read(path, &s, NULL);
        t[1] = now_();
        gbtd_model_recognize(&s, path, &mi);
        t[2] = now_();
        gbtd_model_build(&mi, &o, &net);
        t[3] = now_();
        gbtd_model_assign(&mi, &s, path, &net);
        t[4] = now_();
        gbtd_net_free(&net);
        gbtd_tensor_set_free(&s);
        for (int k = 0; k < 4; k++) ph[k] = t[k + 1] - t[k] < ph[k] ? t[k + 1] - t[k] : ph[k];
    }
    qsort(tc, (size_t)runs, sizeof(double), cmp_);
    qsort(tg, (size_t)runs, sizeof(double), cmp_);
    long rss = child_rss_(path);
    printf("io case=cat bytes=%lld runs=%d min_s=%.4f median_s=%.4f GB/s=%.2f\n",
           (long long)sb.st_size, runs, tc[0], tc[runs / 2], gb / tc[0]);
    printf("io case=gbtd_load_recognise bytes=%lld runs=%d min_s=%.4f median_s=%.4f GB/s=%.2f "
           "peak_rss_MiB=%.1f file_MiB=%.1f\n",
           (long long)sb.st_size, runs, tg[0], tg[runs / 2], gb / tg[0], rss / 1024.0,
           (double)sb.st_size / 1048576.0);
    printf("io phases_min_s read=%.4f recognise=%.4f build=%.4f assign=%.4f\n", ph[0], ph[1],
           ph[2], ph[3]);
    printf("io ratio gbtd/cat throughput (min) = %.2f (target >= 0.5); median = %.2f\n",
           tc[0] / tg[0], tc[runs / 2] / tg[runs / 2]);
    free(tc);
    free(tg);
    remove(path);
    return 0;
}
