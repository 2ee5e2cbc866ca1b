#!/bin/bash
# Session 24, call 5: the last try (~430 s of device time left after nine failed starts): the
# producer change against main, forward at head dims 64/128, 64K/128K, one round; then the
# probe's strategies (f16) with the change. Carry .dev24 (call 3's bins.tar.xz).
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-240} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin; xz -dc .dev24/bins.tar.xz | tar xf - -C /tmp/bin; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench_$2 --device cuda "${@:3}" --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for d in 64 128; do for v in p u; do run 25 $v --head-dim $d --mode fwd --sizes 64k,128k; done; done
R=$(( ${LIMIT:-240} - $(el) - 3 )); [ $R -gt 40 ] && { (cd /tmp && timeout $R /tmp/bin/new_probe_p --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
sed -E 's/Sm80\(Sm80Tuning \{ forward_tiles: ([0-9]), dq_tiles: ([0-9]), /T\1\/\2 /; s/\(reference path in F16 [0-9.e-]+\) //g; s/wgmma_forward/wf/; s/wgmma_backward/wb/; s/persistent_forward/pf/; s/overlap_softmax/ov/; s/min_blocks/mb/g' $OUT/strategies.txt 2>/dev/null | grep -E "^F16 |over the bar|^rc|panicked|blocks of" | cut -c1-300
