/* gbtd io: NumPy .npz, a zip archive whose members "name.npy" are .npy images.
 *
 * Reading walks the central directory (found through the end-of-central-directory record),
 * checks every offset and size against the file, follows ZIP64 extra fields, inflates deflated
 * members with zlib (raw deflate) and checks each CRC-32. Writing produces a plain zip (no
 * ZIP64, so members and archive stay below 4 GiB) with stored or deflated members. */
#include <string.h>
#include <zlib.h>

#include "io/io_internal.h"

enum {
    SIG_LOCAL = 0x04034b50,
    SIG_CENTRAL = 0x02014b50,
    SIG_EOCD = 0x06054b50,
    SIG_EOCD64 = 0x06064b50,
    SIG_EOCD64_LOC = 0x07064b50,
    LOCAL_LEN = 30,
    CENTRAL_LEN = 46,
    EOCD_LEN = 22,
    MAX_MEMBERS = 1 << 20,
};

static const size_t NPZ_MAX_FILE = (size_t)1 << 40;

/* Zip64 extended information: replaces the 32-bit fields that are 0xffffffff, in order. */
static int zip64_extra(const unsigned char *x, size_t xl, uint64_t *usize, uint64_t *csize,
                       uint64_t *off)
{
    size_t p = 0;
    while (p + 4 <= xl) {
        const unsigned id = io_le16(x + p), n = io_le16(x + p + 2);
        if (p + 4 + n > xl) return -1;
        if (id == 0x0001) {
            const unsigned char *d = x + p + 4;
            size_t q = 0;
            uint64_t *fields[3] = {usize, csize, off};
            for (int k = 0; k < 3; k++) {
                if (fields[k] == NULL || *fields[k] != 0xffffffffu) continue;
                if (q + 8 > n) return -1;
                *fields[k] = io_le64(d + q);
                q += 8;
            }
            return 0;
        }
        p += 4 + n;
    }
    return 0;
}

static int inflate_member(const unsigned char *src, size_t clen, unsigned char *dst, size_t ulen,
                          const char *path, const char *name)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK)
        return gbtd_error(GBTD_ENOMEM, "%s: zlib initialisation failed", path);
    int rc = GBTD_OK, zr = Z_OK;
    size_t in_done = 0, out_done = 0;
    /* Feed in chunks that fit zlib's 32-bit counters. */
    while (zr == Z_OK) {
        if (z.avail_in == 0 && in_done < clen) {
            size_t c = clen - in_done > (1u << 30) ? (1u << 30) : clen - in_done;
            z.next_in = (unsigned char *)(uintptr_t)(src + in_done);
            z.avail_in = (uInt)c;
            in_done += c;
        }
        if (z.avail_out == 0 && out_done < ulen) {
            size_t c = ulen - out_done > (1u << 30) ? (1u << 30) : ulen - out_done;
            z.next_out = dst + out_done;
            z.avail_out = (uInt)c;
            out_done += c;
        }
        if (z.avail_in == 0 && z.avail_out == 0) break;
        zr = inflate(&z, Z_NO_FLUSH);
        if (zr == Z_BUF_ERROR && z.avail_in == 0 && in_done == clen) break;
    }
    if (zr != Z_STREAM_END || z.total_out != ulen)
        rc = gbtd_error(GBTD_EFORMAT, "%s: member '%s' does not inflate to its declared %zu bytes%s%s",
                        path, name, ulen, z.msg ? ": " : "", z.msg ? z.msg : "");
    inflateEnd(&z);
    return rc;
}

static int npz_parse(const char *path, const unsigned char *b, size_t len, gbtd_tensor_set *out)
{
    if (len < EOCD_LEN)
        return gbtd_error(GBTD_EFORMAT, "%s: too short for a zip archive", path);
    /* The end record sits in the last 22 + 65535 bytes (it may carry a comment). */
    size_t eo = len - EOCD_LEN, stop = len > EOCD_LEN + 65535u ? len - EOCD_LEN - 65535u : 0;
    while (io_le32(b + eo) != SIG_EOCD) {
        if (eo == stop) return gbtd_error(GBTD_EFORMAT, "%s: no zip end-of-central-directory record", path);
        eo--;
    }
    if (io_le16(b + eo + 4) != 0 || io_le16(b + eo + 6) != 0)
        return gbtd_error(GBTD_EUNSUPPORTED, "%s: multi-part zip archives are not supported", path);
    uint64_t count = io_le16(b + eo + 10), cd_size = io_le32(b + eo + 12), cd_off = io_le32(b + eo + 16);
    if (count == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) {
        /* ZIP64: the locator just before the end record points at the ZIP64 end record. */
        if (eo < 20 || io_le32(b + eo - 20) != SIG_EOCD64_LOC)
            return gbtd_error(GBTD_EFORMAT, "%s: ZIP64 archive without its locator", path);
        uint64_t e64 = io_le64(b + eo - 20 + 8);
        if (e64 > len || len - e64 < 56 || io_le32(b + e64) != SIG_EOCD64)
            return gbtd_error(GBTD_EFORMAT, "%s: bad ZIP64 end record", path);
        count = io_le64(b + e64 + 32);
        cd_size = io_le64(b + e64 + 40);
        cd_off = io_le64(b + e64 + 48);
    }
    if (cd_off > len || cd_size > len - cd_off)
        return gbtd_error(GBTD_EFORMAT, "%s: central directory lies outside the file", path);
    if (count > MAX_MEMBERS || count * CENTRAL_LEN > cd_size)
        return gbtd_error(GBTD_EFORMAT, "%s: %llu members do not fit the central directory", path,
                          (unsigned long long)count);
    size_t p = (size_t)cd_off;
    const size_t cd_end = (size_t)(cd_off + cd_size);
    for (uint64_t i = 0; i < count; i++) {
        if (cd_end - p < CENTRAL_LEN || io_le32(b + p) != SIG_CENTRAL)
            return gbtd_error(GBTD_EFORMAT, "%s: corrupt central directory entry %llu", path,
                              (unsigned long long)i);
        const unsigned flags = io_le16(b + p + 8), method = io_le16(b + p + 10);
        const uint32_t crc = io_le32(b + p + 16);
        uint64_t csize = io_le32(b + p + 20), usize = io_le32(b + p + 24);
        const size_t nl = io_le16(b + p + 28), xl = io_le16(b + p + 30), cl = io_le16(b + p + 32);
        uint64_t loff = io_le32(b + p + 42);
        if (cd_end - p - CENTRAL_LEN < nl + xl + cl)
            return gbtd_error(GBTD_EFORMAT, "%s: central directory entry %llu runs past its end", path,
                              (unsigned long long)i);
        const char *nm = (const char *)b + p + CENTRAL_LEN;
        char name[512];
        if (nl == 0 || nl >= sizeof name || memchr(nm, '\0', nl))
            return gbtd_error(GBTD_EFORMAT, "%s: member %llu has a bad name", path,
                              (unsigned long long)i);
        memcpy(name, nm, nl);
        name[nl] = '\0';
        if (zip64_extra(b + p + CENTRAL_LEN + nl, xl, &usize, &csize, &loff) != 0)
            return gbtd_error(GBTD_EFORMAT, "%s: member '%s' has a malformed ZIP64 field", path, name);
        p += CENTRAL_LEN + nl + xl + cl;
        if (flags & 1)
            return gbtd_error(GBTD_EUNSUPPORTED, "%s: member '%s' is encrypted", path, name);
        if (method != 0 && method != 8)
            return gbtd_error(GBTD_EUNSUPPORTED, "%s: member '%s' uses compression method %u "
                                                 "(only stored and deflated)", path, name, method);
        if (nl < 5 || strcmp(name + nl - 4, ".npy") != 0)
            return gbtd_error(GBTD_EFORMAT, "%s: member '%s' is not a .npy file", path, name);
        /* Local header: its own name and extra lengths decide where the data start. */
        if (loff > len || len - loff < LOCAL_LEN || io_le32(b + loff) != SIG_LOCAL)
            return gbtd_error(GBTD_EFORMAT, "%s: member '%s' has a bad local header offset", path, name);
        const uint64_t data = loff + LOCAL_LEN + io_le16(b + loff + 26) + io_le16(b + loff + 28);
        if (data > len || csize > len - data)
            return gbtd_error(GBTD_EFORMAT, "%s: member '%s' runs past the end of the file", path, name);
        if (method == 0 && csize != usize)
            return gbtd_error(GBTD_EFORMAT, "%s: stored member '%s' has different sizes", path, name);
        /* Deflate cannot expand data more than about 1032:1; larger claims are lies. */
        if (method == 8 && usize > csize * 1032 + 1024)
            return gbtd_error(GBTD_EFORMAT, "%s: member '%s' claims an impossible %llu bytes", path,
                              name, (unsigned long long)usize);
        const unsigned char *img = b + data;
        unsigned char *buf = NULL;
        if (method == 8) {
            buf = gbtd_malloc((size_t)usize);
            if (buf == NULL) return GBTD_ENOMEM;
            int rc = inflate_member(b + data, (size_t)csize, buf, (size_t)usize, path, name);
            if (rc != GBTD_OK) {
                gbtd_free(buf);
                return rc;
            }
            img = buf;
        }
        uLong c = crc32(0L, Z_NULL, 0);
        for (uint64_t done = 0; done < usize;) {
            uInt k = usize - done > (1u << 30) ? (1u << 30) : (uInt)(usize - done);
            c = crc32(c, img + done, k);
            done += k;
        }
        int rc = GBTD_OK;
        if ((uint32_t)c != crc)
            rc = gbtd_error(GBTD_EFORMAT, "%s: member '%s' fails its CRC-32 check", path, name);
        char what[700];
        snprintf(what, sizeof what, "%s: member '%s'", path, name);
        name[nl - 4] = '\0';
        if (rc == GBTD_OK) rc = io_npy_image_to_set(img, (size_t)usize, what, name, out);
        gbtd_free(buf);
        if (rc != GBTD_OK) return rc;
    }
    return GBTD_OK;
}

int gbtd_npz_read(const char *path, gbtd_tensor_set *out)
{
    if (out) memset(out, 0, sizeof *out);
    if (path == NULL || out == NULL) return gbtd_error(GBTD_EINVAL, "npz_read: NULL argument");
    unsigned char *b;
    size_t len;
    GBTD_CHECK(io_read_file(path, NPZ_MAX_FILE, &b, &len));
    int rc = npz_parse(path, b, len, out);
    gbtd_free(b);
    if (rc != GBTD_OK) gbtd_tensor_set_free(out);
    return rc;
}

/* ---- writing ------------------------------------------------------------------------------- */

struct member {
    uint32_t crc, csize, usize, off;
    uint16_t method;
};

static void put_local(unsigned char *h, const struct member *m, size_t nl)
{
    io_put32(h, SIG_LOCAL);
    io_put16(h + 4, 20);           /* version needed: 2.0 */
    io_put16(h + 6, 0);            /* flags */
    io_put16(h + 8, m->method);
    io_put16(h + 10, 0);           /* time 00:00 */
    io_put16(h + 12, 0x21);        /* date 1980-01-01 */
    io_put32(h + 14, m->crc);
    io_put32(h + 18, m->csize);
    io_put32(h + 22, m->usize);
    io_put16(h + 26, (uint32_t)nl);
    io_put16(h + 28, 0);
}

static int deflate_buf(const unsigned char *src, size_t n, unsigned char **out, size_t *outlen,
                       const char *path)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return gbtd_error(GBTD_ENOMEM, "%s: zlib initialisation failed", path);
    const uLong bound = deflateBound(&z, (uLong)n);
    unsigned char *d = gbtd_malloc(bound);
    if (d == NULL) {
        deflateEnd(&z);
        return GBTD_ENOMEM;
    }
    z.next_in = (unsigned char *)(uintptr_t)src;
    z.avail_in = (uInt)n;
    z.next_out = d;
    z.avail_out = (uInt)bound;
    int zr = deflate(&z, Z_FINISH);
    *outlen = z.total_out;
    deflateEnd(&z);
    if (zr != Z_STREAM_END) {
        gbtd_free(d);
        return gbtd_error(GBTD_EIO, "%s: deflate failed", path);
    }
    *out = d;
    return GBTD_OK;
}

int gbtd_npz_write(const char *path, const gbtd_tensor_set *s, bool compress)
{
    if (path == NULL || s == NULL) return gbtd_error(GBTD_EINVAL, "npz_write: NULL argument");
    struct member *ms = gbtd_calloc((size_t)s->count + 1, sizeof *ms);
    if (ms == NULL) return GBTD_ENOMEM;
    char *tmp = NULL;
    FILE *fp = NULL;
    int rc = io_tmp_create(path, &tmp, &fp);
    uint64_t pos = 0;
    int ok = 1;
    for (int i = 0; rc == GBTD_OK && i < s->count; i++) {
        const gbtd_named_tensor *t = &s->items[i];
        const size_t nl = strlen(t->name) + 4;
        if (nl > 0xffff) {
            rc = gbtd_error(GBTD_EINVAL, "%s: tensor name too long", path);
            break;
        }
        unsigned char *head = NULL, *img = NULL, *z = NULL;
        size_t hl, zl = 0;
        rc = io_npy_make_header(t->dtype, t->ndim, t->shape, &head, &hl);
        const uint64_t ul = (uint64_t)hl + t->nbytes;
        if (rc == GBTD_OK && (ul > 0xfffffffeu || pos > 0xfffffffeu - ul))
            rc = gbtd_error(GBTD_EUNSUPPORTED, "%s: archive above 4 GiB needs ZIP64 (not written)", path);
        if (rc == GBTD_OK && (img = gbtd_malloc((size_t)ul)) == NULL) rc = GBTD_ENOMEM;
        if (rc == GBTD_OK) {
            memcpy(img, head, hl);
            if (t->nbytes) memcpy(img + hl, t->data, t->nbytes);
            ms[i].usize = (uint32_t)ul;
            ms[i].crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), img, (uInt)ul);
            ms[i].off = (uint32_t)pos;
            ms[i].method = compress ? 8 : 0;
            if (compress) rc = deflate_buf(img, (size_t)ul, &z, &zl, path);
            else zl = (size_t)ul;
        }
        if (rc == GBTD_OK) {
            ms[i].csize = (uint32_t)zl;
            unsigned char lh[LOCAL_LEN];
            put_local(lh, &ms[i], nl);
            ok &= fwrite(lh, 1, LOCAL_LEN, fp) == LOCAL_LEN;
            ok &= fwrite(t->name, 1, nl - 4, fp) == nl - 4;
            ok &= fwrite(".npy", 1, 4, fp) == 4;
            ok &= fwrite(compress ? z : img, 1, zl, fp) == zl;
            pos += LOCAL_LEN + nl + zl;
            if (pos > 0xfffffffeu)
                rc = gbtd_error(GBTD_EUNSUPPORTED, "%s: archive above 4 GiB needs ZIP64 (not written)",
                                path);
        }
        gbtd_free(head);
        gbtd_free(img);
        gbtd_free(z);
    }
    const uint64_t cd_off = pos;
    for (int i = 0; rc == GBTD_OK && i < s->count; i++) {
        const size_t nl = strlen(s->items[i].name) + 4;
        unsigned char ch[CENTRAL_LEN];
        memset(ch, 0, sizeof ch);
        io_put32(ch, SIG_CENTRAL);
        io_put16(ch + 4, 20); /* made by: 2.0 */
        unsigned char lh[LOCAL_LEN];
        put_local(lh, &ms[i], nl);
        memcpy(ch + 6, lh + 4, 26); /* version needed .. name length, same as the local header */
        io_put32(ch + 42, ms[i].off);
        ok &= fwrite(ch, 1, CENTRAL_LEN, fp) == CENTRAL_LEN;
        ok &= fwrite(s->items[i].name, 1, nl - 4, fp) == nl - 4;
        ok &= fwrite(".npy", 1, 4, fp) == 4;
        pos += CENTRAL_LEN + nl;
    }
    if (rc == GBTD_OK && (s->count > 0xffff || pos > 0xfffffffeu))
        rc = gbtd_error(GBTD_EUNSUPPORTED, "%s: archive needs ZIP64 (not written)", path);
    if (rc == GBTD_OK) {
        unsigned char e[EOCD_LEN];
        memset(e, 0, sizeof e);
        io_put32(e, SIG_EOCD);
        io_put16(e + 8, (uint32_t)s->count);
        io_put16(e + 10, (uint32_t)s->count);
        io_put32(e + 12, (uint32_t)(pos - cd_off));
        io_put32(e + 16, (uint32_t)cd_off);
        ok &= fwrite(e, 1, EOCD_LEN, fp) == EOCD_LEN;
    }
    gbtd_free(ms);
    if (fp) {
        int rc2 = io_fclose_checked(fp, path);
        if (rc == GBTD_OK) rc = rc2;
    }
    if (rc == GBTD_OK && !ok) rc = gbtd_error(GBTD_EIO, "%s: short write", path);
    if (rc != GBTD_OK) {
        io_tmp_abort(tmp);
        return rc;
    }
    return io_tmp_commit(tmp, path);
}
