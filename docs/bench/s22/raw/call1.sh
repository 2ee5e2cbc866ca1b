#!/bin/bash
# Session 22, call 1 (carry .dev22: kernel_bench and device_probe built from main at the session's
# start with docs/bench/s21/causal-value-guard.diff and the LseStep memory fix applied).
# 1. The Hopper forward's softmax overlapping its own P·V (`overlap`) against the default, head
#    dims 128 and 64, forward, 64K and 128K; the forward kernels' CUDA C++ and PTX for ptxas -v on
#    the CPU machine (CubeCL cache misses: run from /tmp).
# 2. The probe's strategies (overlap first; the causal NaN check in every family's line).
# 3. Flex/torchscale forward peers in the same call.
# 4. The scale check at 4M (memory after the LseStep fix).
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-540} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for f in .dev22/*.xz; do (xz -T4 -dc $f > /tmp/bin/$(basename $f .xz)) & done; wait; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && CUBECL_CUDA_DUMP_PTX=/tmp/dump CUBECL_CUDA_DUMP_CPP=/tmp/dump timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" --sizes 64k,128k --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for d in 128 64; do for f in auto overlap; do run 40 --head-dim $d --mode fwd --family $f; done; done
(cd /tmp && tar cJf $OUT/dump.tar.xz dump 2>/dev/null)
fits 130 probe && { (cd /tmp && timeout 130 /tmp/bin/new_probe --device cuda --check strategies --dtypes f16 --families 2 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
for d in 64 128; do fits 60 torch$d && { (timeout 60 python3 benches/torch_baseline.py f16 fwd d$d 65536 131072 --no-dense > $OUT/torch-d$d.txt 2>&1); echo "== torch$d at $(el) s"; }; done
for d in 128 64; do for f in overlap auto; do run 25 --head-dim $d --mode fwd --family $f; done; done
fits 90 scale && { (cd /tmp && timeout 90 /tmp/bin/new_probe --device cuda --check scale --scale-lengths 4m > $OUT/scale.txt 2>&1; echo rc $? >> $OUT/scale.txt); echo "== scale at $(el) s"; }
ls -la $OUT
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z]+"|"median_ms": [0-9.]+' $OUT/torch-d*.txt | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
sed 's/Sm80(Sm80Tuning { forward_tiles: 2, dq_tiles: 2, fused_dq: false, forward_min_blocks: 0, dkdv_min_blocks: 3, //' $OUT/strategies.txt 2>/dev/null | grep -E "^F16 |over the bar|^rc|panicked|blocks of" | cut -c1-330
grep -E "scale|rc" $OUT/scale.txt | cut -c1-400
