#!/bin/bash
# Session 20, call I (carry .dev20c: kernel_bench and device_probe with Sm80Tuning::wide_chunks,
# the Hopper forward taking 128 keys a step). The probe's strategies with the wide family first
# (--families 1: only it at blocks of 128), then wide against the default at head dims 128/64.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-280} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for f in .dev20c/*.xz; do (xz -T4 -dc $f > /tmp/bin/$(basename $f .xz)) & done; wait; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/ab.txt
(timeout 90 /tmp/bin/new_probe --device cuda --check strategies --dtypes f16 --families 1 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" --sizes 64k,128k --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for f in auto wide-chunks wide-chunks-paired-pv; do run 22 --head-dim 128 --mode fwd --family $f; done
for f in auto wide-chunks; do run 22 --head-dim 64 --mode fwd --family $f; done
for f in wide-chunks auto; do run 22 --head-dim 128 --mode fwd --family $f; done
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
sed 's/Sm80(Sm80Tuning { forward_tiles: 2, dq_tiles: 2, fused_dq: false, forward_min_blocks: 0, dkdv_min_blocks: 3, //' $OUT/strategies.txt | grep -E "^F16 |over the bar|^rc|panicked|blocks of" | cut -c1-420
