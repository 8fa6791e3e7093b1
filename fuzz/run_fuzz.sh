#!/usr/bin/env bash
# Build one libFuzzer target with clang (ASan + UBSan) from the io and core sources and run it
# for a bounded time on a copy of its seed corpus. Exit 77 (meson: skipped) without clang or
# libFuzzer. usage: run_fuzz.sh SOURCE_ROOT BUILD_DIR TARGET SECONDS
set -u
SRC=$1 OUT=$2/fuzz-$3 TARGET=$3 SECS=$4
command -v clang >/dev/null || { echo "clang not found: skipped"; exit 77; }
mkdir -p "$OUT"
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' \
  >"$OUT/probe.c"
clang -fsanitize=fuzzer "$OUT/probe.c" -o "$OUT/probe" 2>/dev/null || {
  echo "clang cannot link libFuzzer (libclang-rt-14-dev missing): skipped"; exit 77; }
FLAGS=$(pkg-config --cflags hdf5 jansson zlib openblas gsl 2>/dev/null)
LIBS="$(pkg-config --libs-only-L hdf5 openblas 2>/dev/null) -lhdf5 -ljansson -lz -lopenblas -llapacke -lgsl -lm"
clang -std=c11 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -D_POSIX_C_SOURCE=200809L -DGBTD_VERSION_STRING='"fuzz"' -I"$SRC/lib" -I"$SRC/fuzz" $FLAGS \
  "$SRC/fuzz/fuzz_$TARGET.c" "$SRC"/lib/io/*.c "$SRC"/lib/core/*.c $LIBS -o "$OUT/fuzz_$TARGET" \
  >"$OUT/build.log" 2>&1 || { cat "$OUT/build.log"; echo "fuzz target build failed"; exit 1; }
rm -rf "$OUT/corpus"
mkdir -p "$OUT/corpus"
cp "$SRC/fuzz/corpus/$TARGET"/* "$OUT/corpus/"
cd "$OUT" && ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 \
  "./fuzz_$TARGET" -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
  -print_final_stats=1 corpus 2>&1 | tail -15
rc=${PIPESTATUS[0]}
rm -f /tmp/gbtd_fuzz_*
exit "$rc"
