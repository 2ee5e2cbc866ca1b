#!/bin/bash
# Session 22, call 4 (carry .dev22, the binaries of call 2). The wide step (`wide_chunks`: 128
# keys a step, two ring stages, one softmax over 128 columns; probe-checked in call 2) against
# the default, forward, head dims 64 and 128, 64K and 128K, two rounds; its kernels' CUDA C++ and
# PTX for ptxas here; the scale check at 4M and 8M (an H100 holds 8M); the Flex/torchscale
# forward peers at head dim 64 in the same call.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-300} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for f in .dev22/*.xz; do b=/tmp/bin/$(basename $f .xz); [ -x $b ] || { xz -T4 -dc $f > $b; chmod +x $b; } & done; wait
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && CUBECL_CUDA_DUMP_PTX=/tmp/dump CUBECL_CUDA_DUMP_CPP=/tmp/dump timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" --sizes 64k,128k --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for d in 64 128; do for f in wide-chunks auto; do run 35 --head-dim $d --mode fwd --family $f; done; done
(cd /tmp && tar cJf $OUT/dump.tar.xz dump 2>/dev/null)
fits 90 scale && { (cd /tmp && timeout 90 /tmp/bin/new_probe --device cuda --check scale --scale-lengths 4m,8m > $OUT/scale.txt 2>&1; echo rc $? >> $OUT/scale.txt); echo "== scale at $(el) s"; }
fits 60 torch && { (timeout 60 python3 benches/torch_baseline.py f16 fwd d64 65536 131072 --no-dense > $OUT/torch-d64.txt 2>&1); echo "== torch at $(el) s"; }
for d in 64 128; do for f in auto wide-chunks; do run 20 --head-dim $d --mode fwd --family $f; done; done
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -E "^scale|^rc|panicked" $OUT/scale.txt 2>/dev/null | cut -c1-330
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z]+"|"median_ms": [0-9.]+' $OUT/torch-d64.txt | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
