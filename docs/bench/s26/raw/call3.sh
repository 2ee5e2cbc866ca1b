#!/bin/bash
# Session 26, call 3: call2.sh reordered for a short budget (`LIMIT`, default 320 s). Carry
# .dev27. fwd+bwd at 128K, `dQ` inside the Hopper `dK/dV` (`--family fused-dq`) against the
# default, head dims 64 and 128; then the probe's strategies on the first family of each case
# (at blocks of 128 the fused dQ; f16) with the time left.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-320} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
xz -dc .dev27/bins.tar.xz | tar xf - -C /tmp/bin; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
run 50 --head-dim 64 --mode both --sizes 128k --iters 10 --family fused-dq
run 35 --head-dim 64 --mode both --sizes 128k --iters 10
run 45 --head-dim 128 --mode both --sizes 128k --iters 10 --family fused-dq
run 40 --head-dim 128 --mode both --sizes 128k --iters 10
left=$(( ${LIMIT:-320} - $(el) - 5 ))
[ $left -gt 60 ] && { (cd /tmp && timeout $left /tmp/bin/new_probe --device cuda --check strategies --dtypes f16 --families 1 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]{0,300}' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -iE "error|panic|fault" $OUT/ab.txt | head -5 | cut -c1-300
sed -E 's/Sm80\(Sm80Tuning \{ forward_tiles: ([0-9]), dq_tiles: ([0-9]), /T\1\/\2 /; s/\(reference path in [FB]16 [0-9.e-]+\) //g; s/wgmma_forward/wf/; s/wgmma_backward/wb/; s/persistent_forward/pf/; s/overlap_softmax/ov/; s/min_blocks/mb/g; s/tma_loads/tma/' $OUT/strategies.txt 2>/dev/null | grep -E "^[FB]16 |over the bar|^rc|panicked|blocks of|rror" | cut -c1-500
