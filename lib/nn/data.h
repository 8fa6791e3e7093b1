/* gbtd nn: image classification data sets and a batch loader.
 *
 * Data sets are held as 8-bit images (n x C x H x W, channel planes row-major, like the CIFAR-10
 * binary layout) and int32 labels. The loader turns them into float32 NCHW batches:
 * x = (pixel / 255 - mean[c]) / std[c], after an optional seeded augmentation (random crop
 * from the image zero-padded by `crop_pad` pixels on each side, random horizontal flip), and
 * prepares the next batch in a background thread while the caller trains on the current one.
 *
 * Determinism: the order of an epoch is a permutation drawn from (seed, epoch), and the
 * augmentation of batch b of epoch e from (seed, epoch, b) alone, so the batches do not depend
 * on the thread timing or on the thread count.
 *
 * File errors name the file and the problem: GBTD_EIO (cannot open / read), GBTD_EFORMAT (wrong
 * magic number, truncated, inconsistent counts, label out of range). */
#ifndef GBTD_NN_DATA_H
#define GBTD_NN_DATA_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GBTD_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef struct gbtd_dataset {
    char name[32];   /* "fashion-mnist", "cifar10" */
    int64_t n;       /* images */
    int c, h, w;     /* image shape */
    int classes;
    uint8_t *images; /* n x c x h x w */
    int32_t *labels; /* n, in [0, classes) */
} gbtd_dataset;

/* IDX files (optionally gzip-compressed): images magic 0x00000803 (n, rows, cols), labels magic
 * 0x00000801 (n), unsigned bytes; labels must be < classes. */
int gbtd_dataset_load_idx(const char *images_path, const char *labels_path, int classes,
                          gbtd_dataset *out);
/* Fashion-MNIST from dir (NULL: GBTD_FASHION_MNIST_DIR): train-*-ubyte.gz or t10k-*-ubyte.gz. */
int gbtd_dataset_load_fashion_mnist(const char *dir, bool train, gbtd_dataset *out);
/* CIFAR-10 binary batches: records of 1 label byte + 3072 pixel bytes (R, G, B planes 32x32).
 * load_cifar10 reads data_batch_1..5.bin (train) or test_batch.bin from dir;
 * load_cifar_file appends the records of one file to *out (zeroed *out: a new data set). */
int gbtd_dataset_load_cifar10(const char *dir, bool train, gbtd_dataset *out);
int gbtd_dataset_load_cifar_file(const char *path, gbtd_dataset *out);
/* Keep only the first n images (n <= d->n). */
int gbtd_dataset_truncate(gbtd_dataset *d, int64_t n);
void gbtd_dataset_free(gbtd_dataset *d);
/* Per-channel mean and standard deviation of the pixels scaled to [0, 1] (c values each). */
int gbtd_dataset_stats(const gbtd_dataset *d, float *mean, float *std);

typedef struct gbtd_loader_opts {
    int batch;          /* images per batch (>= 1) */
    bool shuffle;       /* new permutation every epoch */
    bool drop_last;     /* skip a final partial batch */
    int crop_pad;       /* random crop with this zero padding (0: no crop) */
    bool flip;          /* random horizontal flip with probability 1/2 */
    uint64_t seed;
    float mean[4], std[4]; /* per channel; std 0 means: use the data set's statistics */
    bool prefetch;      /* prepare the next batch in a background thread */
} gbtd_loader_opts;

/* batch 128, no shuffle, no augmentation, seed 0, mean/std from the data, prefetch on. */
gbtd_loader_opts gbtd_loader_opts_default(void);
/* Normalisation constants for a named data set ("fashion-mnist", "cifar10"); false if unknown. */
bool gbtd_dataset_norm(const char *name, float *mean, float *std);

typedef struct gbtd_loader gbtd_loader;

/* The data set must outlive the loader. Errors: GBTD_EINVAL, GBTD_ENOMEM, GBTD_EIO (thread). */
int gbtd_loader_create(const gbtd_dataset *d, const gbtd_loader_opts *opts, gbtd_loader **out);
void gbtd_loader_free(gbtd_loader *l);
/* Batches per epoch. */
int64_t gbtd_loader_batches(const gbtd_loader *l);
/* Begin epoch `epoch` (draws its order, starts preparing its first batch). */
int gbtd_loader_start_epoch(gbtd_loader *l, int epoch);
/* The next batch of the epoch: *x (n x C x H x W), *y (n labels), valid until the next call.
 * *n = 0 at the end of the epoch. */
int gbtd_loader_next(gbtd_loader *l, const float **x, const int32_t **y, int *n);

#ifdef __cplusplus
}
#endif
#endif
