/* libFuzzer target: .npz reading (zip directory, inflate, CRC, member .npy images). */
#include "fuzz_common.h"
#include "io/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = fuzz_path(".npz");
    if (!fuzz_write(p, data, size)) return 0;
    gbtd_tensor_set s;
    gbtd_npz_read(p, &s);
    gbtd_tensor_set_free(&s);
    return 0;
}
