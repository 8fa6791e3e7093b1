/* libFuzzer target: the .npy header parser (in memory) and the file loader. */
#include "fuzz_common.h"
#include "io/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gbtd_npy_header h;
    (void)gbtd_npy_parse_header(data, size, "fuzz", &h);
    const char *p = fuzz_path(".npy");
    if (!fuzz_write(p, data, size)) return 0;
    gbtd_tensor t;
    if (gbtd_npy_load(p, &t, NULL) == 0) gbtd_tensor_free(&t);
    return 0;
}
