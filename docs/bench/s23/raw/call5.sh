#!/bin/bash
# Session 23, call 5 (H100, warm after call 4; carry .dev23u/new_bench.xz — main at 3f16ba3 —
# and .dev23p/new_bench.xz, .dev23p/new_probe.xz — plus the producer's arithmetic-progression
# copies, `ring::copy_progression`). The producer change against its base, forward at head dims
# 64 and 128, 64K and 128K, rounds in both orders; then the probe's strategies (f16) with it.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-200} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for v in u p; do for f in $(ls .dev23$v/*.xz 2>/dev/null); do b=/tmp/bin/$(basename $f .xz)_$v; [ -x $b ] || { xz -T4 -dc $f > $b; chmod +x $b; } & done; done; wait
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench_$2 --device cuda "${@:3}" --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for d in 64 128; do for v in p u; do run 30 $v --head-dim $d --mode fwd --sizes 64k,128k; done; done
for d in 64 128; do for v in u p; do run 20 $v --head-dim $d --mode fwd --sizes 64k,128k; done; done
R=$(( ${LIMIT:-200} - $(el) - 5 )); [ $R -gt 30 ] && { (cd /tmp && timeout $R /tmp/bin/new_probe_p --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
sed -E 's/Sm80\(Sm80Tuning \{ forward_tiles: ([0-9]), dq_tiles: ([0-9]), /T\1\/\2 /; s/\(reference path in F16 [0-9.e-]+\) //g; s/wgmma_forward/wf/; s/wgmma_backward/wb/; s/persistent_forward/pf/; s/overlap_softmax/ov/; s/min_blocks/mb/g; s/NaN in padded keys changes the gradients by/padNaN/; s/NaN in the last value row: other rows change by/lastNaN/' $OUT/strategies.txt 2>/dev/null | grep -E "^F16 |^rc|panicked|blocks of" | cut -c1-300
