#!/usr/bin/env bash
# Tool test of `gbtd info`: table and --json listings of fixtures, and one-line refusals
# (exit status 2) of corrupt and missing files and bad usage.
# usage: test_info_tool.sh GBTD FIXTURE_DIR SCRATCH_DIR
set -u
GBTD=$1 FIX=$2 TMP=$3/info_tool
mkdir -p "$TMP"
pass=0 fail=0
check() { # check NAME CONDITION-STATUS
  if [ "$2" -eq 0 ]; then pass=$((pass + 1)); echo "ok   $1"; else fail=$((fail + 1)); echo "FAIL $1"; fi
}
run() { # run ARGS...: sets rc, out, err
  "$GBTD" "$@" >"$TMP/out" 2>"$TMP/err"; rc=$?
  out=$(cat "$TMP/out"); err=$(cat "$TMP/err")
}

run info "$FIX/h5py_mixed.h5"
check "info h5: exit 0" $([ $rc -eq 0 ]; echo $?)
check "info h5: header line counts 7 tensors" $(grep -q "hdf5, 7 tensors" <<<"$out"; echo $?)
check "info h5: nested dataset with shape and dtype" \
  $(grep -Eq "^ +/grp/sub/b +\(2, 3, 5\) +float32 +120$" <<<"$out"; echo $?)
check "info h5: nothing on stderr" $([ -z "$err" ]; echo $?)

run info --json "$FIX/h5py_mixed.h5"
check "info --json: exit 0" $([ $rc -eq 0 ]; echo $?)
check "info --json: one line" $([ "$(wc -l <"$TMP/out")" -eq 1 ]; echo $?)
check "info --json: tensor entry" \
  $(grep -qF '{"name": "/grp/sub/b", "shape": [2, 3, 5], "dtype": "float32", "bytes": 120}' <<<"$out"; echo $?)
check "info --json: scalar has an empty shape" \
  $(grep -qF '{"name": "/scalar", "shape": [], "dtype": "float64", "bytes": 8}' <<<"$out"; echo $?)
if command -v python3 >/dev/null; then
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["count"]==7 and len(d["tensors"])==7 and d["format"]=="hdf5" and d["total_bytes"]==290' "$TMP/out"
  check "info --json: parses as JSON with count 7, total 290 bytes" $?
fi

run info "$FIX/np_f4_2x3x5.npy"
check "info npy: shape and dtype" $(grep -Eq "np_f4_2x3x5.npy +\(2, 3, 5\) +float32 +120$" <<<"$out"; echo $?)

run info "$FIX/st_mixed.safetensors"
check "info safetensors: 6 tensors, F16 entry" \
  $(grep -q "safetensors, 6 tensors" <<<"$out" && grep -Eq "^ +half +\(3, 5\) +float16 +30$" <<<"$out"; echo $?)
run info --json "$FIX/npz_deflated.npz"
check "info --json npz: member entry" \
  $(grep -qF '{"name": "c", "shape": [2, 2], "dtype": "int64", "bytes": 32}' <<<"$out"; echo $?)
head -c 200 "$FIX/st_mixed.safetensors" >"$TMP/cut.safetensors"
run info "$TMP/cut.safetensors"
check "info truncated safetensors: exit 2, one line naming the file" \
  $([ $rc -eq 2 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -qF "$TMP/cut.safetensors" <<<"$err"; echo $?)

head -c 100 "$FIX/np_f8_3x4.npy" >"$TMP/cut.npy"
run info "$TMP/cut.npy"
check "info truncated npy: exit 2" $([ $rc -eq 2 ]; echo $?)
check "info truncated npy: one line on stderr naming the file" \
  $([ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -qF "$TMP/cut.npy" <<<"$err" && grep -q truncated <<<"$err"; echo $?)
check "info truncated npy: nothing on stdout" $([ -z "$out" ]; echo $?)

head -c 3000 "$FIX/h5py_mixed.h5" >"$TMP/cut.h5"
run info --json "$TMP/cut.h5"
check "info truncated h5: exit 2, one line naming the file" \
  $([ $rc -eq 2 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -qF "$TMP/cut.h5" <<<"$err"; echo $?)

run info "$TMP/missing.h5"
check "info missing file: exit 2, one line" $([ $rc -eq 2 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ]; echo $?)
printf 'plain text\n' >"$TMP/text.txt"
run info "$TMP/text.txt"
check "info unknown format: exit 2" $([ $rc -eq 2 ] && grep -q "not a known tensor file" <<<"$err"; echo $?)
run info
check "info without FILE: exit 2" $([ $rc -eq 2 ]; echo $?)
run info --bogus x
check "info unknown option: exit 2" $([ $rc -eq 2 ]; echo $?)
run info --help
check "info --help: exit 0 with usage" $([ $rc -eq 0 ] && grep -q "usage: gbtd info" <<<"$out"; echo $?)

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
