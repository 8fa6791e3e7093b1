/* Unit tests of the weights-file parsers of lib/io: safetensors, .npz and the Keras HDF5
 * layout. Files written by the safetensors package, NumPy and h5py (fixtures made by
 * tests/io/make_fixtures.py) are read back bit-exactly; round trips in every dtype; hostile files
 * (truncated, lying lengths, bad offsets, wrong dtypes, huge shapes, invalid UTF-8, deep JSON)
 * are refused with a message naming the file; allocation failure at each allocation leaks
 * nothing. The real ResNet-20 weights are listed when ../shared/data is there.
 *
 * usage: test_formats FIXTURE_DIR SCRATCH_DIR [MODELS_DIR] */
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "io/io.h"
#include "io_test_util.h"

static const char *models;

static int shape_is(const gbtd_named_tensor *t, int nd, const int64_t *sh)
{
    if (t == NULL || t->ndim != nd) return 0;
    for (int k = 0; k < nd; k++)
        if (t->shape[k] != sh[k]) return 0;
    return 1;
}

/* Item holds val(i) in its dtype (rounded once from float64). */
static int holds_val(const gbtd_named_tensor *t)
{
    if (t == NULL) return 0;
    const int64_t n = gbtd_named_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        const double v = val(i);
        switch (t->dtype) {
        case GBTD_DTYPE_F64:
            if (((const double *)t->data)[i] != v) return 0;
            break;
        case GBTD_DTYPE_F32:
            if (((const float *)t->data)[i] != (float)v) return 0;
            break;
        case GBTD_DTYPE_F16:
            /* NumPy rounds float64 -> float16 directly; for these values (k/7, |k| <= 50) the
             * float32 intermediate cannot sit on a float16 tie, so both roundings agree. */
            if (((const uint16_t *)t->data)[i] != gbtd_float_to_f16((float)v)) return 0;
            break;
        case GBTD_DTYPE_BF16:
            if (((const uint16_t *)t->data)[i] != gbtd_float_to_bf16((float)v)) return 0;
            break;
        default: return 0;
        }
    }
    return 1;
}

static int holds_ints(const gbtd_named_tensor *t)
{
    if (t == NULL || t->dtype != GBTD_DTYPE_I64) return 0;
    for (int64_t i = 0; i < gbtd_named_tensor_numel(t); i++)
        if (((const int64_t *)t->data)[i] != (37 * i) % 101 - 50) return 0;
    return 1;
}


/* ---- safetensors --------------------------------------------------------------------------- */

static void test_st_python_files(void)
{
    gbtd_tensor_set s;
    CHECK_OK(gbtd_safetensors_read(fix("st_mixed.safetensors"), &s), "safetensors read package file");
    const int64_t s1[4] = {4, 2, 3, 3}, s2[1] = {4}, s3[2] = {3, 5}, s4[2] = {2, 3}, s5[1] = {3};
    const gbtd_named_tensor *w = gbtd_tensor_set_find(&s, "conv.weight"),
                            *b = gbtd_tensor_set_find(&s, "conv.bias"),
                            *h = gbtd_tensor_set_find(&s, "half"),
                            *d = gbtd_tensor_set_find(&s, "double"),
                            *c = gbtd_tensor_set_find(&s, "count"),
                            *sc = gbtd_tensor_set_find(&s, "scalar");
    CHECK(s.count == 6, "safetensors: 6 tensors");
    CHECK(shape_is(w, 4, s1) && w->dtype == GBTD_DTYPE_F32 && holds_val(w), "safetensors F32 4-d bit-exact");
    CHECK(shape_is(b, 1, s2) && holds_val(b), "safetensors F32 1-d bit-exact");
    CHECK(shape_is(h, 2, s3) && h->dtype == GBTD_DTYPE_F16 && holds_val(h), "safetensors F16 bit-exact");
    CHECK(shape_is(d, 2, s4) && d->dtype == GBTD_DTYPE_F64 && holds_val(d), "safetensors F64 bit-exact");
    CHECK(shape_is(c, 1, s5) && holds_ints(c), "safetensors I64 exact");
    CHECK(sc && sc->ndim == 0 && sc->dtype == GBTD_DTYPE_F32 && holds_val(sc), "safetensors 0-d scalar");
    CHECK(w && !w->owned && s.map != NULL, "safetensors data are served from the mapping");
    const gbtd_attr *fm = gbtd_attr_list_find(&s.meta, "format"), *nt = gbtd_attr_list_find(&s.meta, "note");
    CHECK(s.meta.count == 2 && fm && !strcmp(fm->strs[0], "np") && nt && !strcmp(nt->strs[0], "gbtd"),
          "safetensors __metadata__ kept");
    gbtd_tensor x;
    CHECK_OK(gbtd_named_tensor_to_tensor(h, &x), "float16 item to double tensor");
    int ok = x.ndim == 2;
    for (int i = 0; ok && i < 15; i++) ok = x.data[i] == (double)gbtd_f16_to_float(gbtd_float_to_f16((float)val(i)));
    CHECK(ok, "float16 item converts to double exactly");
    gbtd_tensor_free(&x);
    float fb[72];
    CHECK_OK(gbtd_named_tensor_to_float(w, fb), "F32 item to float");
    CHECK(fb[71] == (float)val(71), "F32 item to float values");

    /* Round trip: write what was read, read it again, same bytes. */
    CHECK_OK(gbtd_safetensors_write(tmp("rt.safetensors"), &s), "safetensors write");
    gbtd_tensor_set r;
    CHECK_OK(gbtd_safetensors_read(tmp("rt.safetensors"), &r), "safetensors read own file");
    ok = r.count == s.count && r.meta.count == 2;
    for (int i = 0; ok && i < s.count; i++) {
        const gbtd_named_tensor *a = &s.items[i], *e = gbtd_tensor_set_find(&r, a->name);
        ok = e && e->dtype == a->dtype && shape_is(e, a->ndim, a->shape) && e->nbytes == a->nbytes &&
             !memcmp(e->data, a->data, a->nbytes);
    }
    CHECK(ok, "safetensors round trip: names, dtypes, shapes, bytes and metadata");
    gbtd_tensor_set_free(&r);
    gbtd_tensor_set_free(&s);

    CHECK_OK(gbtd_safetensors_read(fix("st_bf16.safetensors"), &s), "safetensors read torch bf16 file");
    b = gbtd_tensor_set_find(&s, "w");
    CHECK(shape_is(b, 2, s4) && b->dtype == GBTD_DTYPE_BF16 && holds_val(b),
          "safetensors BF16 from torch equals round-to-nearest-even bfloat16");
    gbtd_tensor_set_free(&s);
}

static void test_st_roundtrip_dtypes(void)
{
    gbtd_tensor_set s;
    memset(&s, 0, sizeof s);
    gbtd_tensor x;
    const int64_t sh[3] = {2, 3, 4};
    gbtd_tensor_alloc(&x, 3, sh);
    for (int i = 0; i < 24; i++) x.data[i] = val(i);
    const gbtd_dtype dts[4] = {GBTD_DTYPE_F64, GBTD_DTYPE_F32, GBTD_DTYPE_F16, GBTD_DTYPE_BF16};
    const char *names[4] = {"f64", "f32", "f16", "bf16"};
    for (int k = 0; k < 4; k++)
        CHECK_OK(gbtd_tensor_set_add_tensor(&s, names[k], &x, dts[k]), "set add tensor");
    const uint8_t bytes[5] = {0, 1, 2, 255, 7};
    const int64_t bs[1] = {5};
    CHECK_OK(gbtd_tensor_set_add(&s, "u8", GBTD_DTYPE_U8, 1, bs, bytes), "set add u8");
    CHECK_STATUS(gbtd_tensor_set_add(&s, "u8", GBTD_DTYPE_U8, 1, bs, bytes), GBTD_EINVAL,
                 "set refuses a duplicate name");
    CHECK_STATUS(gbtd_tensor_set_add_tensor(&s, "i", &x, GBTD_DTYPE_I32), GBTD_EUNSUPPORTED,
                 "set add_tensor refuses int32");
    gbtd_attr_list_set_string(&s.meta, "origin", "gbtd test");
    CHECK_OK(gbtd_safetensors_write(tmp("dt.safetensors"), &s), "safetensors write 5 dtypes");
    gbtd_tensor_set r;
    CHECK_OK(gbtd_safetensors_read(tmp("dt.safetensors"), &r), "safetensors read 5 dtypes");
    int ok = r.count == 5;
    for (int k = 0; ok && k < 4; k++) {
        const gbtd_named_tensor *t = gbtd_tensor_set_find(&r, names[k]);
        ok = shape_is(t, 3, sh) && t->dtype == dts[k] && holds_val(t);
    }
    const gbtd_named_tensor *u = gbtd_tensor_set_find(&r, "u8");
    CHECK(ok && u && !memcmp(u->data, bytes, 5), "safetensors F64/F32/F16/BF16/U8 round trip exact");
    CHECK(((uintptr_t)r.items[0].data % 8) == 0, "safetensors writer keeps the data 8-byte aligned");
    gbtd_tensor_set_free(&r);
    /* npz round trip of the same set (no bf16 in NumPy: drop it). */
    gbtd_tensor_set n;
    memset(&n, 0, sizeof n);
    for (int k = 0; k < 5; k++)
        if (k != 3) gbtd_tensor_set_add(&n, s.items[k].name, s.items[k].dtype, s.items[k].ndim,
                                        s.items[k].shape, s.items[k].data);
    for (int comp = 0; comp < 2; comp++) {
        const char *p = tmp(comp ? "rt_deflate.npz" : "rt_stored.npz");
        CHECK_OK(gbtd_npz_write(p, &n, comp), comp ? "npz write deflated" : "npz write stored");
        CHECK_OK(gbtd_npz_read(p, &r), "npz read own file");
        ok = r.count == 4;
        for (int i = 0; ok && i < 4; i++)
            ok = !strcmp(r.items[i].name, n.items[i].name) && r.items[i].dtype == n.items[i].dtype &&
                 shape_is(&r.items[i], n.items[i].ndim, n.items[i].shape) &&
                 !memcmp(r.items[i].data, n.items[i].data, n.items[i].nbytes);
        CHECK(ok, comp ? "npz deflated round trip exact, order kept" : "npz stored round trip exact, order kept");
        gbtd_tensor_set_free(&r);
    }
    CHECK_STATUS(gbtd_npz_write(tmp("bf.npz"), &s, false), GBTD_EUNSUPPORTED, "npz refuses bfloat16");
    CHECK(access(tmp("bf.npz"), F_OK) != 0, "refused npz write left no file");
    gbtd_tensor_set_free(&n);
    gbtd_tensor_set_free(&s);
    gbtd_tensor_free(&x);
}

/* Build a safetensors file from a header text and `data_len` bytes of data. */
static const char *st_make(const char *fname, const char *header, size_t data_len, uint64_t lie)
{
    size_t hl = strlen(header);
    unsigned char *b = calloc(8 + hl + data_len + 1, 1);
    uint64_t n = lie ? lie : hl;
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)(n >> (8 * k));
    memcpy(b + 8, header, hl);
    const char *p = tmp(fname);
    write_bytes(p, b, 8 + hl + data_len);
    free(b);
    return p;
}

static void expect_st(const char *p, int code, const char *label)
{
    gbtd_tensor_set s;
    char name[160];
    snprintf(name, sizeof name, "safetensors refuses %s", label);
    CHECK_STATUS(gbtd_safetensors_read(p, &s), code, name);
    snprintf(name, sizeof name, "safetensors %s: message names the file, set empty", label);
    CHECK(error_names(p) && s.count == 0 && s.map == NULL, name);
}

static void test_st_hostile(void)
{
    const char *ok1 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    gbtd_tensor_set s;
    CHECK_OK(gbtd_safetensors_read(st_make("ok.st", ok1, 8, 0), &s), "hand-made safetensors accepted");
    gbtd_tensor_set_free(&s);
    /* Odd header length: data misaligned for float, copied out and still read exactly. */
    char odd[128];
    snprintf(odd, sizeof odd, "%s", ok1);
    while ((8 + strlen(odd)) % 4 != 1) strcat(odd, " ");
    CHECK_OK(gbtd_safetensors_read(st_make("odd.st", odd, 8, 0), &s), "misaligned data accepted");
    CHECK(s.count == 1 && s.items[0].owned && ((uintptr_t)s.items[0].data % 4) == 0,
          "misaligned tensor copied to aligned memory");
    gbtd_tensor_set_free(&s);

    expect_st(tmp("missing.st"), GBTD_EIO, "a missing file");
    expect_st(st_make("empty.st", "", 0, 0), GBTD_EFORMAT, "an empty file");
    expect_st(st_make("long.st", ok1, 8, 1000), GBTD_EFORMAT, "a header length beyond the file");
    expect_st(st_make("huge.st", ok1, 8, UINT64_C(200000000)), GBTD_EFORMAT,
              "a header length above 100 MB");
    CHECK(strstr(gbtd_last_error(), "limit") != NULL, "huge header message names the limit");
    expect_st(st_make("max.st", ok1, 8, UINT64_MAX), GBTD_EFORMAT, "a header length of 2^64-1");
    expect_st(st_make("short.st", ok1, 4, 0), GBTD_EFORMAT, "data shorter than the offsets");
    expect_st(st_make("trail.st", ok1, 12, 0), GBTD_EFORMAT, "bytes after the last tensor");
    expect_st(st_make("range.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 8, 0),
              GBTD_EFORMAT, "offsets out of range");
    expect_st(st_make("overlap.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, 0),
              GBTD_EFORMAT, "overlapping tensors");
    CHECK(strstr(gbtd_last_error(), "overlap") != NULL, "overlap message says so");
    expect_st(st_make("hole.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, 0),
              GBTD_EFORMAT, "a hole before a tensor");
    expect_st(st_make("size.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, 0),
              GBTD_EFORMAT, "a size not matching dtype x shape");
    expect_st(st_make("rev.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, 0),
              GBTD_EFORMAT, "reversed offsets");
    expect_st(st_make("dtype.st", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8, 0),
              GBTD_EUNSUPPORTED, "an unknown dtype");
    expect_st(st_make("dup.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                                "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8, 0),
              GBTD_EFORMAT, "duplicate names");
    expect_st(st_make("neg.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[-8],\"data_offsets\":[0,8]}}", 8, 0),
              GBTD_EFORMAT, "a negative shape");
    expect_st(st_make("ovf.st", "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],"
                                "\"data_offsets\":[0,8]}}", 8, 0),
              GBTD_EOVERFLOW, "a huge shape");
    expect_st(st_make("big.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[99999999999999999999],"
                                "\"data_offsets\":[0,8]}}", 8, 0),
              GBTD_EFORMAT, "a shape beyond int64");
    expect_st(st_make("nd9.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,8],"
                                "\"data_offsets\":[0,8]}}", 8, 0),
              GBTD_EUNSUPPORTED, "nine dimensions");
    expect_st(st_make("utf8.st", "{\"a\xff\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8, 0),
              GBTD_EFORMAT, "invalid UTF-8");
    CHECK(strstr(gbtd_last_error(), "UTF-8") != NULL, "UTF-8 message says so");
    expect_st(st_make("over.st", "{\"a\xc0\xaf\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8, 0),
              GBTD_EFORMAT, "overlong UTF-8");
    char deep[4200];
    size_t p = 0;
    p += (size_t)snprintf(deep + p, sizeof deep - p, "{\"__metadata__\":");
    for (int i = 0; i < 2000; i++) deep[p++] = '[';
    for (int i = 0; i < 2000; i++) deep[p++] = ']';
    deep[p++] = '}';
    deep[p] = '\0';
    expect_st(st_make("deep.st", deep, 0, 0), GBTD_EFORMAT, "JSON nested 2000 deep");
    CHECK(strstr(gbtd_last_error(), "deep") != NULL, "deep nesting message says so");
    expect_st(st_make("arr.st", "[1,2,3]", 0, 0), GBTD_EFORMAT, "a header that is an array");
    expect_st(st_make("bad.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]", 8, 0),
              GBTD_EFORMAT, "unterminated JSON");
    expect_st(st_make("meta.st", "{\"__metadata__\":{\"k\":3}}", 0, 0), GBTD_EFORMAT,
              "a non-string metadata value");
    expect_st(st_make("keys.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8],\"x\":1}}", 8, 0),
              GBTD_EFORMAT, "an extra key in an entry");
    expect_st(st_make("noff.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"offsets\":[0,8]}}", 8, 0),
              GBTD_EFORMAT, "a missing data_offsets");

    /* The package file truncated at many offsets, and with flipped header bytes. */
    size_t n;
    unsigned char *b = read_bytes(fix("st_mixed.safetensors"), &n);
    int refused = 1;
    for (size_t cut = 0; cut < n; cut += (cut < 64 ? 7 : 61)) {
        write_bytes(tmp("cut.st"), b, cut);
        if (gbtd_safetensors_read(tmp("cut.st"), &s) != GBTD_EFORMAT || !error_names(tmp("cut.st")))
            refused = 0;
        gbtd_tensor_set_free(&s);
    }
    CHECK(refused, "safetensors truncated at every tested offset: refused as corrupt");
    const uint64_t hl = b[0] | (uint64_t)b[1] << 8;
    int sane = 1;
    for (size_t off = 8; off < 8 + hl; off++) {
        const unsigned char vals[3] = {'"', '9', 0x80};
        for (int k = 0; k < 3; k++) {
            unsigned char save = b[off];
            b[off] = vals[k];
            write_bytes(tmp("flip.st"), b, n);
            int rc = gbtd_safetensors_read(tmp("flip.st"), &s);
            if (rc == GBTD_OK) {
                /* A flip that still parses must describe the data consistently. */
                size_t tot = 0;
                for (int i = 0; i < s.count; i++) tot += s.items[i].nbytes;
                if (tot != n - 8 - hl) sane = 0;
            } else if (rc != GBTD_EFORMAT && rc != GBTD_EUNSUPPORTED && rc != GBTD_EOVERFLOW) {
                sane = 0;
            }
            gbtd_tensor_set_free(&s);
            b[off] = save;
        }
    }
    char label[96];
    snprintf(label, sizeof label, "safetensors: %llu single-byte header corruptions refused or consistent",
             (unsigned long long)(3 * hl));
    CHECK(sane, label);
    free(b);
}

static void test_st_resnet20(void)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/resnet20-cifar10.safetensors", models ? models : "");
    if (models == NULL || access(p, R_OK) != 0) {
        printf("skip resnet20: %s not found\n", p);
        return;
    }
    gbtd_tensor_set s;
    CHECK_OK(gbtd_safetensors_read(p, &s), "safetensors read resnet20-cifar10");
    int64_t params = 0, all = 0;
    int f32 = 1;
    for (int i = 0; i < s.count; i++) {
        const int64_t n = gbtd_named_tensor_numel(&s.items[i]);
        all += n;
        if (!strstr(s.items[i].name, "running_") && !strstr(s.items[i].name, "num_batches"))
            params += n;
        if (s.items[i].dtype != GBTD_DTYPE_F32) f32 = 0;
    }
    char name[128];
    snprintf(name, sizeof name, "resnet20: 97 tensors, 269722 parameters (got %d, %lld), all F32",
             s.count, (long long)params);
    CHECK(s.count == 97 && params == 269722 && all == 271098 && f32, name);
    const gbtd_named_tensor *c1 = gbtd_tensor_set_find(&s, "conv1.weight");
    const int64_t c1s[4] = {16, 3, 3, 3};
    CHECK(shape_is(c1, 4, c1s), "resnet20 conv1.weight is 16x3x3x3");
    gbtd_tensor_set_free(&s);
}

/* ---- npz ----------------------------------------------------------------------------------- */

static void test_npz_numpy_files(void)
{
    const char *files[2] = {"npz_stored.npz", "npz_deflated.npz"};
    for (int f = 0; f < 2; f++) {
        gbtd_tensor_set s;
        char name[128];
        snprintf(name, sizeof name, "npz read %s", files[f]);
        CHECK_OK(gbtd_npz_read(fix(files[f]), &s), name);
        const int64_t sa[2] = {3, 4}, sb[1] = {5}, sc[2] = {2, 2};
        const gbtd_named_tensor *a = gbtd_tensor_set_find(&s, "a"), *b = gbtd_tensor_set_find(&s, "b"),
                                *c = gbtd_tensor_set_find(&s, "c");
        snprintf(name, sizeof name, "npz %s: f8, f4, i8 members bit-exact", files[f]);
        CHECK(s.count == 3 && shape_is(a, 2, sa) && a->dtype == GBTD_DTYPE_F64 && holds_val(a) &&
                  shape_is(b, 1, sb) && b->dtype == GBTD_DTYPE_F32 && holds_val(b) &&
                  shape_is(c, 2, sc) && holds_ints(c),
              name);
        gbtd_tensor_set_free(&s);
    }
}

static void expect_npz(const char *p, int code, const char *label)
{
    gbtd_tensor_set s;
    char name[160];
    snprintf(name, sizeof name, "npz refuses %s", label);
    CHECK_STATUS(gbtd_npz_read(p, &s), code, name);
    snprintf(name, sizeof name, "npz %s: message names the file, set empty", label);
    CHECK(error_names(p) && s.count == 0, name);
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void test_npz_hostile(void)
{
    expect_npz(tmp("missing.npz"), GBTD_EIO, "a missing file");
    expect_npz(fix("np_f8_3x4.npy"), GBTD_EFORMAT, "a .npy file");
    size_t n;
    unsigned char *b = read_bytes(fix("npz_stored.npz"), &n);
    int refused = 1;
    for (size_t cut = 0; cut < n; cut += 13) {
        write_bytes(tmp("cut.npz"), b, cut);
        gbtd_tensor_set s;
        int rc = gbtd_npz_read(tmp("cut.npz"), &s);
        if (rc != GBTD_EFORMAT || !error_names(tmp("cut.npz"))) refused = 0;
        gbtd_tensor_set_free(&s);
    }
    CHECK(refused, "npz truncated at every 13th offset: refused as corrupt");
    /* Locate the end record and the first central entry to corrupt them precisely. */
    size_t eo = n - 22;
    while (le32(b + eo) != 0x06054b50) eo--;
    const size_t cd = le32(b + eo + 16);
    unsigned char *c = malloc(n);
    struct {
        size_t off;
        unsigned char v;
        int code;
        const char *label;
    } flips[] = {
        {cd + 42, 0x7f, GBTD_EFORMAT, "a bad local header offset"},
        {cd + 20, 0xff, GBTD_EFORMAT, "a lying compressed size"},
        {cd + 10, 12, GBTD_EUNSUPPORTED, "bzip2 compression"},
        {cd + 8, 1, GBTD_EUNSUPPORTED, "an encrypted member"},
        {cd + 16, 0x55, GBTD_EFORMAT, "a wrong CRC-32"},
        {eo + 16, 0xee, GBTD_EFORMAT, "a central directory offset past the end"},
        {eo + 10, 0x40, GBTD_EFORMAT, "a lying member count"},
        {eo + 6, 1, GBTD_EUNSUPPORTED, "a multi-part archive"},
        {cd + 46 + 1, '\0', GBTD_EFORMAT, "a NUL in a member name"},
        {cd + 46 + 3, 'x', GBTD_EFORMAT, "a member that is not .npy"},
        {eo, 'X', GBTD_EFORMAT, "a missing end record"},
    };
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        memcpy(c, b, n);
        c[flips[i].off] = flips[i].v;
        write_bytes(tmp("flip.npz"), c, n);
        expect_npz(tmp("flip.npz"), flips[i].code, flips[i].label);
    }
    /* A flipped data byte of a stored member is caught by the CRC. */
    memcpy(c, b, n);
    c[le32(b + cd + 42) + 30 + 5 + 120] ^= 1;
    write_bytes(tmp("crc.npz"), c, n);
    expect_npz(tmp("crc.npz"), GBTD_EFORMAT, "a corrupted data byte");
    CHECK(strstr(gbtd_last_error(), "CRC") != NULL, "data corruption reported as a CRC failure");
    free(c);
    free(b);

    /* Deflated: flip bytes inside the compressed stream, never a crash. */
    b = read_bytes(fix("npz_deflated.npz"), &n);
    int sane = 1;
    for (size_t off = 40; off < 200 && off < n; off++) {
        b[off] ^= 0x21;
        write_bytes(tmp("fz.npz"), b, n);
        gbtd_tensor_set s;
        int rc = gbtd_npz_read(tmp("fz.npz"), &s);
        if (rc != GBTD_OK && rc != GBTD_EFORMAT && rc != GBTD_EUNSUPPORTED && rc != GBTD_EOVERFLOW)
            sane = 0;
        gbtd_tensor_set_free(&s);
        b[off] ^= 0x21;
    }
    CHECK(sane, "npz deflated: 160 corrupted stream bytes refused or read, no crash");
    free(b);
}

/* ---- Keras --------------------------------------------------------------------------------- */

static void test_keras(void)
{
    gbtd_tensor_set s;
    gbtd_keras_opts o = gbtd_keras_opts_default();
    CHECK(o.kernels_oihw, "keras default converts kernels to OIHW");
    CHECK_OK(gbtd_keras_h5_read(fix("keras_small.h5"), &o, &s), "keras read save_weights layout");
    static const char *names[] = {"conv1/kernel:0", "conv1/bias:0", "bn1/gamma:0", "bn1/beta:0",
                                  "bn1/moving_mean:0", "bn1/moving_variance:0", "dense/kernel:0",
                                  "dense/bias:0"};
    int ok = s.count == 8;
    for (int i = 0; ok && i < 8; i++) ok = !strcmp(s.items[i].name, names[i]);
    CHECK(ok, "keras: 8 weights in layer and weight_names order");
    const gbtd_named_tensor *k = gbtd_tensor_set_find(&s, "conv1/kernel:0");
    const int64_t oihw[4] = {4, 2, 3, 3};
    ok = shape_is(k, 4, oihw);
    /* W[o, i, h, w] = K[h, w, i, o], K row-major (3, 3, 2, 4) holding val(). */
    for (int o2 = 0; ok && o2 < 4; o2++)
        for (int i = 0; i < 2; i++)
            for (int h = 0; h < 3; h++)
                for (int w = 0; w < 3; w++)
                    if (((float *)k->data)[((o2 * 2 + i) * 3 + h) * 3 + w] !=
                        (float)val(((h * 3 + w) * 2 + i) * 4 + o2))
                        ok = 0;
    CHECK(ok, "keras HWIO kernel converted to OIHW exactly");
    const gbtd_named_tensor *mv = gbtd_tensor_set_find(&s, "bn1/moving_variance:0");
    CHECK(mv && mv->ndim == 1 && ((float *)mv->data)[0] == fabsf((float)val(0)) + 1,
          "keras moving_variance values");
    const gbtd_named_tensor *dk = gbtd_tensor_set_find(&s, "dense/kernel:0");
    const int64_t ds[2] = {4, 3};
    CHECK(shape_is(dk, 2, ds) && holds_val(dk), "keras dense kernel kept as (in, out)");
    const gbtd_attr *kv = gbtd_attr_list_find(&s.meta, "keras_version");
    CHECK(kv && !strcmp(kv->strs[0], "2.11.0"), "keras version kept as metadata");
    gbtd_tensor_set_free(&s);
    o.kernels_oihw = false;
    CHECK_OK(gbtd_keras_h5_read(fix("keras_small.h5"), &o, &s), "keras read without conversion");
    k = gbtd_tensor_set_find(&s, "conv1/kernel:0");
    const int64_t hwio[4] = {3, 3, 2, 4};
    CHECK(shape_is(k, 4, hwio) && holds_val(k), "keras kernel kept HWIO on request");
    gbtd_tensor_set_free(&s);
    CHECK_STATUS(gbtd_keras_h5_read(fix("h5py_mixed.h5"), NULL, &s), GBTD_EFORMAT,
                 "keras refuses an HDF5 file without layer_names");
    CHECK(error_names(fix("h5py_mixed.h5")) && strstr(gbtd_last_error(), "layer_names"),
          "keras message names the file and layer_names");
    CHECK_STATUS(gbtd_keras_h5_read(tmp("missing.h5"), NULL, &s), GBTD_EIO, "keras missing file");
    /* A layer listed without its group, a weight listed without its dataset. */
    gbtd_attr_list a;
    memset(&a, 0, sizeof a);
    const char *ln[2] = {"l1", "ghost"};
    gbtd_attr_list_set_strings(&a, "layer_names", ln, 2);
    gbtd_h5 *f;
    gbtd_h5_create(tmp("kbad.h5"), &f);
    gbtd_h5_write_attrs(f, "/", &a);
    gbtd_attr_list_free(&a);
    const char *wn[1] = {"l1/kernel:0"};
    gbtd_attr_list_set_strings(&a, "weight_names", wn, 1);
    gbtd_h5_write_attrs(f, "/l1", &a);
    gbtd_attr_list_free(&a);
    gbtd_h5_close(f);
    CHECK_STATUS(gbtd_keras_h5_read(tmp("kbad.h5"), NULL, &s), GBTD_EFORMAT, "keras missing weight");
    CHECK(strstr(gbtd_last_error(), "l1/kernel:0") != NULL, "keras missing weight named");
}

/* ---- allocation failure -------------------------------------------------------------------- */

#define ALLOC_LOOP(label, op, cleanup)                                                            \
    do {                                                                                          \
        int all_ok_ = 1, k_;                                                                      \
        for (k_ = 0; k_ < 500; k_++) {                                                            \
            long before_ = check_alloc_live();                                                    \
            check_alloc_fail_after(k_);                                                           \
            int rc_ = (op);                                                                       \
            check_alloc_fail_after(-1);                                                           \
            if (rc_ == GBTD_OK) {                                                                 \
                cleanup;                                                                          \
                break;                                                                            \
            }                                                                                     \
            if (rc_ != GBTD_ENOMEM || check_alloc_live() != before_) all_ok_ = 0;                 \
            cleanup;                                                                              \
        }                                                                                         \
        char name_[160];                                                                          \
        snprintf(name_, sizeof name_, "%s: ENOMEM at each of %d allocations, no leak", label, k_); \
        CHECK(all_ok_ && k_ > 0 && k_ < 500, name_);                                              \
    } while (0)

static void test_alloc_failures(void)
{
    check_alloc_install();
    const long base = check_alloc_live();
    gbtd_tensor_set s, r;
    CHECK_OK(gbtd_safetensors_read(fix("st_mixed.safetensors"), &s), "read for alloc tests");
    ALLOC_LOOP("safetensors_read", gbtd_safetensors_read(fix("st_mixed.safetensors"), &r),
               gbtd_tensor_set_free(&r));
    ALLOC_LOOP("safetensors_write", gbtd_safetensors_write(tmp("al.safetensors"), &s), (void)0);
    ALLOC_LOOP("npz_read deflated", gbtd_npz_read(fix("npz_deflated.npz"), &r), gbtd_tensor_set_free(&r));
    gbtd_tensor_set n;
    gbtd_npz_read(fix("npz_stored.npz"), &n);
    ALLOC_LOOP("npz_write deflated", gbtd_npz_write(tmp("al.npz"), &n, true), (void)0);
    ALLOC_LOOP("keras_h5_read", gbtd_keras_h5_read(fix("keras_small.h5"), NULL, &r),
               gbtd_tensor_set_free(&r));
    gbtd_tensor_desc_list l;
    ALLOC_LOOP("io_list safetensors", gbtd_io_list(fix("st_mixed.safetensors"), NULL, &l),
               gbtd_tensor_desc_list_free(&l));
    gbtd_tensor x;
    const int64_t sh[2] = {3, 5};
    gbtd_tensor_alloc(&x, 2, sh);
    gbtd_tensor_set t;
    memset(&t, 0, sizeof t);
    gbtd_tensor_set_add_tensor(&t, "first", &x, GBTD_DTYPE_F32); /* the set has room now */
    ALLOC_LOOP("tensor_set_add_tensor f16", gbtd_tensor_set_add_tensor(&t, "x", &x, GBTD_DTYPE_F16),
               (void)0);
    CHECK(t.count == 2, "tensor set holds both items after the failure loop");
    gbtd_tensor_set_free(&t);
    gbtd_tensor_free(&x);
    gbtd_tensor_set_free(&n);
    gbtd_tensor_set_free(&s);
    CHECK(check_alloc_live() == base, "formats: nothing left allocated after the failure loops");
    gbtd_set_allocator(NULL);
}

static void test_list(void)
{
    gbtd_tensor_desc_list l;
    gbtd_file_format f;
    CHECK_OK(gbtd_io_list(fix("st_mixed.safetensors"), &f, &l), "io_list safetensors");
    CHECK(f == GBTD_FORMAT_SAFETENSORS && l.count == 6, "io_list safetensors: 6 tensors");
    gbtd_tensor_desc_list_free(&l);
    CHECK_OK(gbtd_io_list(fix("npz_deflated.npz"), &f, &l), "io_list npz");
    CHECK(f == GBTD_FORMAT_NPZ && l.count == 3 && !strcmp(l.items[2].name, "c") && l.items[2].bytes == 32,
          "io_list npz: 3 members, names without .npy");
    gbtd_tensor_desc_list_free(&l);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_formats FIXTURE_DIR SCRATCH_DIR [MODELS_DIR]\n");
        return 2;
    }
    fixdir = argv[1];
    static char sdir[1024];
    snprintf(sdir, sizeof sdir, "%s/formats_scratch", argv[2]);
    mkdir(sdir, 0755);
    scratch = sdir;
    models = argc > 3 ? argv[3] : NULL;
    test_st_python_files();
    test_st_roundtrip_dtypes();
    test_st_hostile();
    test_st_resnet20();
    test_npz_numpy_files();
    test_npz_hostile();
    test_keras();
    test_list();
    test_alloc_failures();
    return check_finish();
}
