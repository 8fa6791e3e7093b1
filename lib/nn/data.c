/* gbtd nn: Fashion-MNIST (IDX, gzip) and CIFAR-10 (binary batches) readers, and the batch
 * loader with seeded augmentation and a prefetching thread. */
#include "nn/data.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "core/rng.h"
#include "core/status.h"

void gbtd_dataset_free(gbtd_dataset *d)
{
    if (!d) return;
    gbtd_free(d->images);
    gbtd_free(d->labels);
    memset(d, 0, sizeof *d);
}

/* ---- IDX ------------------------------------------------------------------------------- */

/* Read exactly len bytes; GBTD_EFORMAT "truncated" when the file ends early. */
static int gz_read_(gzFile f, void *buf, size_t len, const char *path, const char *what)
{
    uint8_t *p = buf;
    while (len > 0) {
        unsigned chunk = len > (1u << 30) ? (1u << 30) : (unsigned)len;
        int got = gzread(f, p, chunk);
        if (got < 0) {
            int e;
            const char *msg = gzerror(f, &e);
            return gbtd_error(GBTD_EFORMAT, "%s: cannot decompress %s (%s)", path, what, msg);
        }
        if (got == 0)
            return gbtd_error(GBTD_EFORMAT, "%s: truncated (file ends inside the %s)", path, what);
        p += got;
        len -= (size_t)got;
    }
    return GBTD_OK;
}

static uint32_t be32_(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static int idx_open_(const char *path, gzFile *f)
{
    FILE *probe = fopen(path, "rb");
    if (!probe) return gbtd_error(GBTD_EIO, "%s: cannot open", path);
    fclose(probe);
    *f = gzopen(path, "rb");
    if (!*f) return gbtd_error(GBTD_EIO, "%s: cannot open", path);
    return GBTD_OK;
}

int gbtd_dataset_load_idx(const char *images_path, const char *labels_path, int classes,
                          gbtd_dataset *out)
{
    if (!images_path || !labels_path || !out || classes < 1 || classes > 256)
        return gbtd_error(GBTD_EINVAL, "load_idx: NULL path or classes %d out of 1..256", classes);
    memset(out, 0, sizeof *out);
    gzFile fi = NULL, fl = NULL;
    uint8_t hdr[16];
    int rc = idx_open_(images_path, &fi);
    if (!rc) rc = idx_open_(labels_path, &fl);
    if (!rc) rc = gz_read_(fi, hdr, 16, images_path, "header");
    uint32_t n = 0, rows = 0, cols = 0;
    if (!rc) {
        if (be32_(hdr) != 0x00000803u)
            rc = gbtd_error(GBTD_EFORMAT, "%s: wrong magic number 0x%08x (IDX images need "
                            "0x00000803)", images_path, be32_(hdr));
        n = be32_(hdr + 4);
        rows = be32_(hdr + 8);
        cols = be32_(hdr + 12);
        if (!rc && (n == 0 || rows == 0 || cols == 0 || rows > 4096 || cols > 4096 ||
                    n > (1u << 28)))
            rc = gbtd_error(GBTD_EFORMAT, "%s: implausible sizes %u x %u x %u", images_path, n,
                            rows, cols);
    }
    if (!rc) rc = gz_read_(fl, hdr, 8, labels_path, "header");
    if (!rc && be32_(hdr) != 0x00000801u)
        rc = gbtd_error(GBTD_EFORMAT, "%s: wrong magic number 0x%08x (IDX labels need "
                        "0x00000801)", labels_path, be32_(hdr));
    if (!rc && be32_(hdr + 4) != n)
        rc = gbtd_error(GBTD_EFORMAT, "%s: %u labels for %u images in %s", labels_path,
                        be32_(hdr + 4), n, images_path);
    size_t npix = (size_t)n * rows * cols;
    uint8_t *lab8 = NULL;
    if (!rc) {
        out->images = gbtd_malloc(npix);
        out->labels = gbtd_malloc((size_t)n * sizeof(int32_t));
        lab8 = gbtd_malloc(n);
        if (!out->images || !out->labels || !lab8) rc = GBTD_ENOMEM;
    }
    if (!rc) rc = gz_read_(fi, out->images, npix, images_path, "pixel data");
    if (!rc) rc = gz_read_(fl, lab8, n, labels_path, "label data");
    for (uint32_t i = 0; !rc && i < n; i++) {
        if (lab8[i] >= classes)
            rc = gbtd_error(GBTD_EFORMAT, "%s: label %u of image %u out of range 0..%d",
                            labels_path, lab8[i], i, classes - 1);
        out->labels[i] = lab8[i];
    }
    gbtd_free(lab8);
    if (fi) gzclose(fi);
    if (fl) gzclose(fl);
    if (rc) {
        gbtd_dataset_free(out);
        return rc;
    }
    out->n = n;
    out->c = 1;
    out->h = (int)rows;
    out->w = (int)cols;
    out->classes = classes;
    snprintf(out->name, sizeof out->name, "idx");
    return GBTD_OK;
}

int gbtd_dataset_load_fashion_mnist(const char *dir, bool train, gbtd_dataset *out)
{
    if (!dir) dir = GBTD_FASHION_MNIST_DIR;
    char pi[4096], pl[4096];
    const char *pre = train ? "train" : "t10k";
    snprintf(pi, sizeof pi, "%s/%s-images-idx3-ubyte.gz", dir, pre);
    snprintf(pl, sizeof pl, "%s/%s-labels-idx1-ubyte.gz", dir, pre);
    GBTD_CHECK(gbtd_dataset_load_idx(pi, pl, 10, out));
    snprintf(out->name, sizeof out->name, "fashion-mnist");
    return GBTD_OK;
}

/* ---- CIFAR-10 -------------------------------------------------------------------------- */

#define CIFAR_REC 3073

int gbtd_dataset_load_cifar_file(const char *path, gbtd_dataset *out)
{
    if (!path || !out) return gbtd_error(GBTD_EINVAL, "load_cifar_file: NULL argument");
    if (out->n > 0 && (out->c != 3 || out->h != 32 || out->w != 32))
        return gbtd_error(GBTD_EINVAL, "%s: cannot append CIFAR images to a %dx%dx%d data set",
                          path, out->c, out->h, out->w);
    FILE *f = fopen(path, "rb");
    if (!f) return gbtd_error(GBTD_EIO, "%s: cannot open", path);
    int rc = GBTD_OK;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) rc = gbtd_error(GBTD_EIO, "%s: cannot seek", path);
    if (!rc && (size == 0 || size % CIFAR_REC))
        rc = gbtd_error(GBTD_EFORMAT, "%s: size %ld is not a whole number of %d-byte CIFAR "
                        "records (truncated or not a CIFAR-10 binary batch)", path, size,
                        CIFAR_REC);
    int64_t add = size / CIFAR_REC, n0 = out->n;
    uint8_t *img = NULL, *rec = NULL;
    int32_t *lab = NULL;
    if (!rc) {
        img = gbtd_malloc((size_t)(n0 + add) * 3072);
        lab = gbtd_malloc((size_t)(n0 + add) * sizeof(int32_t));
        rec = gbtd_malloc(CIFAR_REC);
        if (!img || !lab || !rec) rc = GBTD_ENOMEM;
    }
    if (!rc && n0 > 0) {
        memcpy(img, out->images, (size_t)n0 * 3072);
        memcpy(lab, out->labels, (size_t)n0 * sizeof(int32_t));
    }
    for (int64_t i = 0; !rc && i < add; i++) {
        if (fread(rec, 1, CIFAR_REC, f) != CIFAR_REC) {
            rc = gbtd_error(GBTD_EIO, "%s: read failed at record %lld", path, (long long)i);
            break;
        }
        if (rec[0] > 9)
            rc = gbtd_error(GBTD_EFORMAT, "%s: label %u of record %lld out of range 0..9", path,
                            rec[0], (long long)i);
        lab[n0 + i] = rec[0];
        memcpy(img + (size_t)(n0 + i) * 3072, rec + 1, 3072);
    }
    fclose(f);
    gbtd_free(rec);
    if (rc) {
        gbtd_free(img);
        gbtd_free(lab);
        return rc;
    }
    gbtd_free(out->images);
    gbtd_free(out->labels);
    out->images = img;
    out->labels = lab;
    out->n = n0 + add;
    out->c = 3;
    out->h = out->w = 32;
    out->classes = 10;
    snprintf(out->name, sizeof out->name, "cifar10");
    return GBTD_OK;
}

int gbtd_dataset_load_cifar10(const char *dir, bool train, gbtd_dataset *out)
{
    if (!dir || !out) return gbtd_error(GBTD_EINVAL, "load_cifar10: NULL argument");
    memset(out, 0, sizeof *out);
    char p[4096];
    for (int b = 1; b <= (train ? 5 : 1); b++) {
        if (train) snprintf(p, sizeof p, "%s/data_batch_%d.bin", dir, b);
        else snprintf(p, sizeof p, "%s/test_batch.bin", dir);
        int rc = gbtd_dataset_load_cifar_file(p, out);
        if (rc) {
            gbtd_dataset_free(out);
            return rc;
        }
    }
    return GBTD_OK;
}

int gbtd_dataset_truncate(gbtd_dataset *d, int64_t n)
{
    if (!d || n < 0 || n > d->n)
        return gbtd_error(GBTD_EINVAL, "dataset_truncate: %lld of %lld images", (long long)n,
                          d ? (long long)d->n : 0LL);
    d->n = n;
    return GBTD_OK;
}

int gbtd_dataset_stats(const gbtd_dataset *d, float *mean, float *std)
{
    if (!d || !d->images || !mean || !std || d->n < 1)
        return gbtd_error(GBTD_EINVAL, "dataset_stats: empty data set");
    int64_t plane = (int64_t)d->h * d->w;
    for (int c = 0; c < d->c; c++) {
        double s = 0, s2 = 0;
        for (int64_t i = 0; i < d->n; i++) {
            const uint8_t *p = d->images + (i * d->c + c) * plane;
            uint64_t a = 0, a2 = 0;
            for (int64_t j = 0; j < plane; j++) {
                a += p[j];
                a2 += (uint64_t)p[j] * p[j];
            }
            s += (double)a;
            s2 += (double)a2;
        }
        double m = s / ((double)d->n * plane), v = s2 / ((double)d->n * plane) - m * m;
        mean[c] = (float)(m / 255.0);
        std[c] = (float)(sqrt(v > 0 ? v : 0) / 255.0);
        if (!(std[c] > 0)) std[c] = 1.0f;
    }
    return GBTD_OK;
}

bool gbtd_dataset_norm(const char *name, float *mean, float *std)
{
    if (!name) return false;
    if (!strcmp(name, "fashion-mnist")) {
        mean[0] = 0.2860f;
        std[0] = 0.3530f;
        return true;
    }
    if (!strcmp(name, "cifar10")) {
        const float m[3] = {0.4914f, 0.4822f, 0.4465f}, s[3] = {0.2470f, 0.2435f, 0.2616f};
        memcpy(mean, m, sizeof m);
        memcpy(std, s, sizeof s);
        return true;
    }
    return false;
}

/* ---- loader ---------------------------------------------------------------------------- */

gbtd_loader_opts gbtd_loader_opts_default(void)
{
    gbtd_loader_opts o;
    memset(&o, 0, sizeof o);
    o.batch = 128;
    o.prefetch = true;
    return o;
}

struct gbtd_loader {
    const gbtd_dataset *d;
    gbtd_loader_opts o;
    float scale[4], shift[4]; /* x = pixel * scale + shift */
    int64_t *perm;
    int epoch;
    int64_t next_batch;       /* index of the batch next() returns */
    float *xbuf[2];
    int32_t *ybuf[2];
    int nbuf[2];
    int64_t ready[2];         /* batch index held by each slot (-1 none) */
    /* prefetch thread */
    bool thread_on, quit;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t req;              /* batch requested from the worker (-1 none) */
    int req_slot;
};

static uint64_t mix_(uint64_t a, uint64_t b)
{
    uint64_t z = a * 0x9E3779B97F4A7C15ull ^ (b + 0xBF58476D1CE4E5B9ull + (a << 6) + (a >> 2));
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int64_t gbtd_loader_batches(const gbtd_loader *l)
{
    if (!l) return 0;
    int64_t b = l->o.batch;
    return l->o.drop_last ? l->d->n / b : (l->d->n + b - 1) / b;
}

/* Fill slot s with batch k of the current epoch (pure function of seed, epoch, k). */
static void fill_(gbtd_loader *l, int64_t k, int s)
{
    const gbtd_dataset *d = l->d;
    const int C = d->c, H = d->h, W = d->w, P = l->o.crop_pad;
    int64_t first = k * l->o.batch, n = d->n - first;
    if (n > l->o.batch) n = l->o.batch;
    gbtd_rng *rng = NULL;
    if (P > 0 || l->o.flip) {
        if (gbtd_rng_alloc(mix_(mix_(l->o.seed, (uint64_t)l->epoch + 1), (uint64_t)k), &rng))
            rng = NULL;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t src = l->perm[first + i];
        const uint8_t *im = d->images + src * C * H * W;
        float *x = l->xbuf[s] + i * C * H * W;
        int dy = 0, dx = 0;
        bool flip = false;
        if (rng && P > 0) {
            dy = (int)gbtd_rng_uint(rng, (uint64_t)(2 * P + 1)) - P;
            dx = (int)gbtd_rng_uint(rng, (uint64_t)(2 * P + 1)) - P;
        }
        if (rng && l->o.flip) flip = gbtd_rng_uniform(rng) < 0.5;
        for (int c = 0; c < C; c++) {
            const float a = l->scale[c], b = l->shift[c];
            for (int y = 0; y < H; y++) {
                int sy = y + dy;
                for (int xx = 0; xx < W; xx++) {
                    int sx = (flip ? W - 1 - xx : xx) + dx;
                    float pix = 0.0f;
                    if (sy >= 0 && sy < H && sx >= 0 && sx < W)
                        pix = im[((int64_t)c * H + sy) * W + sx];
                    x[((int64_t)c * H + y) * W + xx] = pix * a + b;
                }
            }
        }
        l->ybuf[s][i] = d->labels[src];
    }
    l->nbuf[s] = (int)n;
    gbtd_rng_free(rng);
}

static void *worker_(void *arg)
{
    gbtd_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (l->req < 0 && !l->quit) pthread_cond_wait(&l->cv, &l->mu);
        if (l->quit) break;
        int64_t k = l->req;
        int s = l->req_slot;
        pthread_mutex_unlock(&l->mu);
        fill_(l, k, s);
        pthread_mutex_lock(&l->mu);
        l->ready[s] = k;
        l->req = -1;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* Ask for batch k in slot s (worker thread, or synchronously without one). */
static void request_(gbtd_loader *l, int64_t k, int s)
{
    if (k >= gbtd_loader_batches(l)) return;
    if (!l->thread_on) {
        fill_(l, k, s);
        l->ready[s] = k;
        return;
    }
    pthread_mutex_lock(&l->mu);
    while (l->req >= 0) pthread_cond_wait(&l->cv, &l->mu); /* one request at a time */
    l->ready[s] = -1;
    l->req = k;
    l->req_slot = s;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

int gbtd_loader_create(const gbtd_dataset *d, const gbtd_loader_opts *opts, gbtd_loader **out)
{
    if (!d || !out || !d->images || d->n < 1 || d->c < 1 || d->c > 4)
        return gbtd_error(GBTD_EINVAL, "loader_create: empty data set or more than 4 channels");
    gbtd_loader_opts o = opts ? *opts : gbtd_loader_opts_default();
    if (o.batch < 1 || o.crop_pad < 0 || o.crop_pad > d->h || o.crop_pad > d->w)
        return gbtd_error(GBTD_EINVAL, "loader_create: batch %d / crop padding %d out of range",
                          o.batch, o.crop_pad);
    float mean[4], sd[4];
    if (!(o.std[0] > 0)) GBTD_CHECK(gbtd_dataset_stats(d, mean, sd));
    gbtd_loader *l = gbtd_calloc(1, sizeof *l);
    if (!l) return GBTD_ENOMEM;
    l->d = d;
    l->o = o;
    for (int c = 0; c < d->c; c++) {
        float m = o.std[0] > 0 ? o.mean[c] : mean[c], s = o.std[0] > 0 ? o.std[c] : sd[c];
        if (!(s > 0)) s = 1.0f;
        l->scale[c] = 1.0f / (255.0f * s);
        l->shift[c] = -m / s;
    }
    size_t img = (size_t)d->c * d->h * d->w;
    l->perm = gbtd_malloc((size_t)d->n * sizeof(int64_t));
    for (int s = 0; s < 2; s++) {
        l->xbuf[s] = gbtd_malloc((size_t)o.batch * img * sizeof(float));
        l->ybuf[s] = gbtd_malloc((size_t)o.batch * sizeof(int32_t));
        l->ready[s] = -1;
    }
    if (!l->perm || !l->xbuf[0] || !l->xbuf[1] || !l->ybuf[0] || !l->ybuf[1]) {
        gbtd_loader_free(l);
        return GBTD_ENOMEM;
    }
    for (int64_t i = 0; i < d->n; i++) l->perm[i] = i;
    l->req = -1;
    l->epoch = -1;
    if (o.prefetch) {
        pthread_mutex_init(&l->mu, NULL);
        pthread_cond_init(&l->cv, NULL);
        if (pthread_create(&l->th, NULL, worker_, l) != 0) {
            pthread_mutex_destroy(&l->mu);
            pthread_cond_destroy(&l->cv);
        } else {
            l->thread_on = true;
        }
    }
    *out = l;
    return GBTD_OK;
}

static void drain_(gbtd_loader *l)
{
    if (!l->thread_on) return;
    pthread_mutex_lock(&l->mu);
    while (l->req >= 0) pthread_cond_wait(&l->cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
}

void gbtd_loader_free(gbtd_loader *l)
{
    if (!l) return;
    if (l->thread_on) {
        pthread_mutex_lock(&l->mu);
        l->quit = true;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->th, NULL);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
    }
    gbtd_free(l->perm);
    for (int s = 0; s < 2; s++) {
        gbtd_free(l->xbuf[s]);
        gbtd_free(l->ybuf[s]);
    }
    gbtd_free(l);
}

int gbtd_loader_start_epoch(gbtd_loader *l, int epoch)
{
    if (!l || epoch < 0) return gbtd_error(GBTD_EINVAL, "loader_start_epoch: bad argument");
    drain_(l);
    l->epoch = epoch;
    int64_t n = l->d->n;
    for (int64_t i = 0; i < n; i++) l->perm[i] = i;
    if (l->o.shuffle) {
        gbtd_rng *rng;
        GBTD_CHECK(gbtd_rng_alloc(mix_(l->o.seed, 0x5eedu + (uint64_t)epoch), &rng));
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)gbtd_rng_uint(rng, (uint64_t)i + 1);
            int64_t t = l->perm[i];
            l->perm[i] = l->perm[j];
            l->perm[j] = t;
        }
        gbtd_rng_free(rng);
    }
    l->ready[0] = l->ready[1] = -1;
    l->next_batch = 0;
    request_(l, 0, 0);
    return GBTD_OK;
}

int gbtd_loader_next(gbtd_loader *l, const float **x, const int32_t **y, int *n)
{
    if (!l || !x || !y || !n) return gbtd_error(GBTD_EINVAL, "loader_next: NULL argument");
    if (l->epoch < 0) return gbtd_error(GBTD_EINVAL, "loader_next: call start_epoch first");
    int64_t k = l->next_batch;
    if (k >= gbtd_loader_batches(l)) {
        *n = 0;
        return GBTD_OK;
    }
    int s = (int)(k & 1);
    if (l->thread_on) {
        pthread_mutex_lock(&l->mu);
        while (l->ready[s] != k) pthread_cond_wait(&l->cv, &l->mu);
        pthread_mutex_unlock(&l->mu);
    } else if (l->ready[s] != k) {
        fill_(l, k, s);
        l->ready[s] = k;
    }
    l->next_batch = k + 1;
    request_(l, k + 1, 1 - s); /* the other slot: the caller keeps this one until next() */
    *x = l->xbuf[s];
    *y = l->ybuf[s];
    *n = l->nbuf[s];
    return GBTD_OK;
}
