#!/bin/bash
# Session 27, first call on an H200 (carry .dev27: new_bench, new_probe from 811715a).
# In order: fused dQ against the default fwd+bwd at 128K head dim 64, 16M scale (issue 22),
# the probe's strategies (fused family first, f16 held to dense f16 too), head dim 128 A/B.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-570} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
xz -T4 -dc .dev27/bins.tar.xz | tar xf - -C /tmp/bin; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
run 50 --head-dim 64 --mode both --sizes 128k --iters 10 --family fused-dq
run 35 --head-dim 64 --mode both --sizes 128k --iters 10
MEM=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
if [ "$MEM" -gt 100000 ]; then fits 160 scale && { (cd /tmp && timeout 160 /tmp/bin/new_probe --device cuda --check chunks,scale,large --dtypes f16 --scale-lengths 16m > $OUT/scale.txt 2>&1; echo rc $? >> $OUT/scale.txt); echo "== scale at $(el) s"; }; fi
fits 170 probe && { (cd /tmp && timeout 170 /tmp/bin/new_probe --device cuda --check strategies --dtypes f16 --families 1 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
run 60 --head-dim 128 --mode both --sizes 128k --iters 10 --family fused-dq
run 50 --head-dim 128 --mode both --sizes 128k --iters 10
run 40 --head-dim 64 --mode both --sizes 128k --iters 10 --family fused-dq
run 35 --head-dim 64 --mode both --sizes 128k --iters 10
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]{0,300}' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -E "^chunks|^scale n=[0-9]+ \(|autodiff run|^large|^rc|panicked|FAIL|over the bar|failure|out of" $OUT/scale.txt 2>/dev/null | cut -c1-330
sed -E 's/Sm80\(Sm80Tuning \{ forward_tiles: ([0-9]), dq_tiles: ([0-9]), /T\1\/\2 /; s/\(reference path in [FB]16 [0-9.e-]+\) //g; s/wgmma_forward/wf/; s/wgmma_backward/wb/; s/persistent_forward/pf/; s/overlap_softmax/ov/; s/min_blocks/mb/g; s/tma_loads/tma/' $OUT/strategies.txt 2>/dev/null | grep -E "^[FB]16 |over the bar|^rc|panicked|blocks of|rror" | cut -c1-500
