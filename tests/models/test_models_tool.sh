#!/usr/bin/env bash
# Tool test of the recognised-network parts: `gbtd info` (text and --json), `gbtd export`,
# `gbtd eval` without --arch, and one-line refusals (exit 2) of unrecognised and broken files.
# usage: test_models_tool.sh GBTD IO_FIXTURES DATA_DIR SCRATCH_DIR
set -u
GBTD=$1 FIX=$2 DATA=$3 TMP=$4/models_tool
M20="$DATA/models/resnet20-cifar10.safetensors"
[ -f "$M20" ] || { echo "skip: $M20 missing"; exit 77; }
rm -rf "$TMP"; mkdir -p "$TMP"
pass=0 fail=0
check() { if [ "$2" -eq 0 ]; then pass=$((pass + 1)); echo "ok   $1"; else fail=$((fail + 1)); echo "FAIL $1"; fi; }
run() { "$GBTD" "$@" >"$TMP/out" 2>"$TMP/err"; rc=$?; out=$(cat "$TMP/out"); err=$(cat "$TMP/err"); }
oneline() { [ $rc -eq 2 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -qF "$1" "$TMP/err"; }

run info "$M20"
check "info: exit 0" $([ $rc -eq 0 ]; echo $?)
check "info: recognised as the CIFAR ResNet-20" $(grep -q "^network: resnet20-cifar (cifar layout)" <<<"$out"; echo $?)
check "info: stages, units, widths, groups" $(grep -q "stages      3: units 3/3/3, widths 16/32/64, groups 1/1/1" <<<"$out"; echo $?)
check "info: parameter count of data/README.md" $(grep -q "parameters  269722 " <<<"$out"; echo $?)

run info --json "$M20"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["network"]; assert d["layout"]=="cifar" and d["params"]==269722 and d["units"]==[3,3,3] and d["spec"]=="resnet-20"' "$TMP/out"
check "info --json: network object (layout, params, units, spec)" $?

run info --json "$FIX/h5py_mixed.h5"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["network"] is None and "conv1.weight" in d["why"] and d["count"]==7' "$TMP/out"
check "info --json unrecognised: network null, why names the layouts' reasons" $?
run info "$FIX/h5py_mixed.h5"
check "info unrecognised: tensors listed, then why" $([ $rc -eq 0 ] && grep -q "^network: none recognised" <<<"$out" && grep -q "  why: .*keras: no 4-d 'conv1_conv/kernel:0'" <<<"$out"; echo $?)

run export "$M20" -o "$TMP/r20.safetensors"
check "export: exit 0" $([ $rc -eq 0 ] && [ -f "$TMP/r20.safetensors" ]; echo $?)
check "export: no temporary file left" $([ "$(ls "$TMP" | grep -c r20)" -eq 1 ]; echo $?)
run info "$TMP/r20.safetensors"
check "export: read back as a gbtd network with spec resnet-20" $(grep -q "^network: resnet-20 (gbtd layout)" <<<"$out" && grep -q "spec        resnet-20$" <<<"$out"; echo $?)
run export "$M20" -o "$TMP/r20h.safetensors" --dtype float16 --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["dtype"]=="float16" and d["params"]==269722' "$TMP/out"
check "export --dtype float16 --json" $?

run export "$FIX/h5py_mixed.h5" -o "$TMP/x.safetensors"
check "export unrecognised: exit 2, one line naming the file" $(oneline "$FIX/h5py_mixed.h5"; echo $?)
check "export unrecognised: nothing written" $([ ! -e "$TMP/x.safetensors" ]; echo $?)
head -c 5000 "$M20" >"$TMP/cut.safetensors"
run export "$TMP/cut.safetensors" -o "$TMP/y.safetensors"
check "export truncated: exit 2, one line" $(oneline "$TMP/cut.safetensors"; echo $?)
run export "$M20" -o "$TMP/no/such/dir/z.safetensors"
check "export unwritable: exit 2, one line" $(oneline "z.safetensors"; echo $?)
run export "$M20"
check "export without -o: usage error" $([ $rc -eq 2 ]; echo $?)
run export "$M20" -o "$TMP/w.safetensors" --dtype int8
check "export --dtype int8: usage error" $([ $rc -eq 2 ] && [ ! -e "$TMP/w.safetensors" ]; echo $?)

if [ -f "$DATA/cifar-10-batches-bin/test_batch.bin" ]; then
  run eval "$TMP/r20.safetensors" --data cifar10 --data-dir "$DATA/cifar-10-batches-bin" --norm imagenet --limit 200 --json
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["images"]==200 and d["top1"]>80' "$TMP/out"
  check "eval without --arch: recognised export runs (top-1 > 80 % on 200 images)" $?
  run eval "$FIX/h5py_mixed.h5" --data cifar10 --data-dir "$DATA/cifar-10-batches-bin"
  check "eval unrecognised: exit 2, one line naming the file" $(oneline "h5py_mixed.h5"; echo $?)
fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
