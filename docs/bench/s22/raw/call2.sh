#!/bin/bash
# Session 22, call 2 (carry .dev22: built from main after the branch-free flush of the overlapped
# forward, `add_pv_where`, with docs/bench/s21/causal-value-guard.diff applied).
# 1. The overlap against the default, head dims 128 and 64, forward, 64K and 128K; Flex and
#    torchscale forward peers in the same call; a second round in the other order.
# 2. The kernels' CUDA C++ and PTX (ptxas -v on the CPU machine: C7518 gone?).
# 3. The probe's strategies, f16, every family (the causal NaN check in each line).
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-560} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for f in .dev22/*.xz; do (xz -T4 -dc $f > /tmp/bin/$(basename $f .xz)) & done; wait; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && CUBECL_CUDA_DUMP_PTX=/tmp/dump CUBECL_CUDA_DUMP_CPP=/tmp/dump timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" --sizes 64k,128k --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for d in 128 64; do for f in overlap auto; do run 40 --head-dim $d --mode fwd --family $f; done; done
(cd /tmp && tar cJf $OUT/dump.tar.xz dump 2>/dev/null)
for d in 128 64; do fits 60 torch$d && { (timeout 60 python3 benches/torch_baseline.py f16 fwd d$d 65536 131072 --no-dense > $OUT/torch-d$d.txt 2>&1); echo "== torch$d at $(el) s"; }; done
for d in 128 64; do for f in auto overlap; do run 25 --head-dim $d --mode fwd --family $f; done; done
R=$(( ${LIMIT:-560} - $(el) - 5 )); [ $R -gt 60 ] && { (cd /tmp && timeout $R /tmp/bin/new_probe --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
ls -la $OUT
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z]+"|"median_ms": [0-9.]+' $OUT/torch-d*.txt | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
sed -E 's/Sm80\(Sm80Tuning \{ forward_tiles: ([0-9]), dq_tiles: ([0-9]), /T\1\/\2 /; s/\(reference path in F16 [0-9.e-]+\) //g; s/wgmma_forward/wf/; s/wgmma_backward/wb/; s/persistent_forward/pf/; s/overlap_softmax/ov/; s/min_blocks/mb/g' $OUT/strategies.txt 2>/dev/null | grep -E "^F16 |over the bar|^rc|panicked|blocks of" | cut -c1-420
