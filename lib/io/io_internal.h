/* gbtd io: helpers shared by the format readers and writers (not installed). */
#ifndef GBTD_IO_INTERNAL_H
#define GBTD_IO_INTERNAL_H

#include <stdio.h>

#include "core/status.h"
#include "io/io.h"

/* Copy of s in gbtd_malloc memory (NULL and GBTD_ENOMEM recorded on failure). */
char *io_strdup(const char *s);
char *io_strndup(const char *s, size_t n);

/* Temporary file beside `path` ("<path>.tmpXXXXXX"), created with mkstemp and given the mode of
 * the existing destination (0644 when there is none). *tmp_path is gbtd_malloc'ed. With fp
 * non-NULL the file is returned open for writing, else it is closed (for libraries that open it
 * themselves). */
int io_tmp_create(const char *path, char **tmp_path, FILE **fp);
/* Rename tmp over path and release tmp_path; on failure the temporary file is removed. */
int io_tmp_commit(char *tmp_path, const char *path);
/* Remove the temporary file and release tmp_path. Accepts NULL. */
void io_tmp_abort(char *tmp_path);
/* fclose with error check (a full disk shows up here). */
int io_fclose_checked(FILE *fp, const char *path);

/* Whole file into gbtd_malloc memory; GBTD_EFORMAT "<what>: larger than <max> bytes" above max. */
int io_read_file(const char *path, size_t max, unsigned char **buf, size_t *len);

/* Append a descriptor (name copied). */
int io_desc_push(gbtd_tensor_desc_list *l, const char *name, gbtd_dtype dtype, const char *dtype_str,
                 int ndim, const int64_t *shape);

/* Move every item of src into dst (same-name items replaced), all or nothing; src emptied. */
int io_attr_list_merge(gbtd_attr_list *dst, gbtd_attr_list *src);

/* Append an item that borrows `data` (memory owned by the set's mapping). */
int io_tensor_set_add_view(gbtd_tensor_set *s, const char *name, gbtd_dtype dtype, int ndim,
                           const int64_t *shape, const void *data);

/* The file's base name, for messages about members. */
const char *io_basename(const char *path);

/* Little-endian loads and stores. */
static inline uint16_t io_le16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t io_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t io_le64(const unsigned char *p)
{
    return (uint64_t)io_le32(p) | ((uint64_t)io_le32(p + 4) << 32);
}
static inline void io_put16(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static inline void io_put32(unsigned char *p, uint32_t v)
{
    io_put16(p, v & 0xffffu);
    io_put16(p + 2, v >> 16);
}
static inline void io_put64(unsigned char *p, uint64_t v)
{
    io_put32(p, (uint32_t)v);
    io_put32(p + 4, (uint32_t)(v >> 32));
}

/* npy internals used by npz: build a version-1.0 header for (dtype, ndim, shape) into buf
 * (gbtd_malloc'ed, *len bytes, a multiple of 64). */
int io_npy_make_header(gbtd_dtype dtype, int ndim, const int64_t *shape, unsigned char **buf,
                       size_t *len);
/* Parse a complete in-memory .npy image into a set item (data copied). */
int io_npy_image_to_set(const unsigned char *img, size_t len, const char *what, const char *name,
                        gbtd_tensor_set *s);

#endif
