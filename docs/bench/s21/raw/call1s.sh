#!/bin/bash
# Session 21, the short form of call 1 for the device time left (carry .dev21, built from main):
# the overlap switch against the default at head dims 128 and 64 (forward, 64K and 128K), the
# forward kernels' CUDA C++ and PTX for ptxas on the CPU machine, then the probe's strategies
# (overlap, overlap-lazy first; the new NaN check in every family's line) in what time is left.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-200} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for f in .dev21/*.xz; do (xz -T4 -dc $f > /tmp/bin/$(basename $f .xz)) & done; wait; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && CUBECL_CUDA_DUMP_PTX=/tmp/dump CUBECL_CUDA_DUMP_CPP=/tmp/dump timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" --sizes 64k,128k --iters 10 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for d in 128 64; do for f in auto overlap; do run 35 --head-dim $d --mode fwd --family $f; done; done
(cd /tmp && tar cJf $OUT/dump.tar.xz dump 2>/dev/null)
R=$(( ${LIMIT:-200} - $(el) - 5 )); [ $R -gt 30 ] && { (cd /tmp && timeout $R /tmp/bin/new_probe --device cuda --check strategies --dtypes f16 --families 2 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
sed 's/Sm80(Sm80Tuning { forward_tiles: 2, dq_tiles: 2, fused_dq: false, forward_min_blocks: 0, dkdv_min_blocks: 3, //' $OUT/strategies.txt 2>/dev/null | grep -E "^F16 |over the bar|^rc|panicked|blocks of" | cut -c1-400
