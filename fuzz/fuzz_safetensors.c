/* libFuzzer target: safetensors reading (header validation, offsets, conversions). */
#include "fuzz_common.h"
#include "io/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = fuzz_path(".safetensors");
    if (!fuzz_write(p, data, size)) return 0;
    gbtd_tensor_set s;
    if (gbtd_safetensors_read(p, &s) == 0 && s.count > 0) {
        /* Touch the data of the first tensor through a conversion. */
        gbtd_tensor t;
        if (gbtd_named_tensor_to_tensor(&s.items[0], &t) == 0) gbtd_tensor_free(&t);
    }
    gbtd_tensor_set_free(&s);
    return 0;
}
