/* Temporary: parsers of issue #5 not written yet. */
#include "io/io_internal.h"

int gbtd_safetensors_read(const char *path, gbtd_tensor_set *out)
{
    (void)out;
    return gbtd_error(GBTD_EUNSUPPORTED, "%s: safetensors reading is not available yet", path);
}
int gbtd_safetensors_write(const char *path, const gbtd_tensor_set *s)
{
    (void)s;
    return gbtd_error(GBTD_EUNSUPPORTED, "%s: safetensors writing is not available yet", path);
}
int gbtd_npz_read(const char *path, gbtd_tensor_set *out)
{
    (void)out;
    return gbtd_error(GBTD_EUNSUPPORTED, "%s: .npz reading is not available yet", path);
}
int gbtd_npz_write(const char *path, const gbtd_tensor_set *s, bool compress)
{
    (void)s;
    (void)compress;
    return gbtd_error(GBTD_EUNSUPPORTED, "%s: .npz writing is not available yet", path);
}
gbtd_keras_opts gbtd_keras_opts_default(void)
{
    gbtd_keras_opts o = {true};
    return o;
}
int gbtd_keras_h5_read(const char *path, const gbtd_keras_opts *opts, gbtd_tensor_set *out)
{
    (void)opts;
    (void)out;
    return gbtd_error(GBTD_EUNSUPPORTED, "%s: Keras reading is not available yet", path);
}
