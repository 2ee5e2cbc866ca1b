#!/bin/bash
# Session 25, call 2 (after call 1's TMA run faulted: the tensor-map address reached
# `gpu_asm!` as a pointer to a local). Carry .dev25 (bins.tar.xz: new_bench_t, new_probe_t =
# the branch with the producer's progression copies and the fixed TMA switch; the default
# family has the progression) and .gl. `LIMIT` (default 300 s).
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-300} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
xz -dc .dev25/bins.tar.xz | tar xf - -C /tmp/bin; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench_$2 --device cuda "${@:3}" --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
run 35 t --head-dim 64 --mode fwd --sizes 64k,128k
run 35 t --head-dim 64 --mode fwd --sizes 64k,128k --family tma
fits 110 probe && { (cd /tmp && timeout 110 /tmp/bin/new_probe_t --device cuda --check strategies --dtypes f16 --families 1 > $OUT/strategies-t.txt 2>&1; echo rc $? >> $OUT/strategies-t.txt); echo "== probe at $(el) s"; }
run 30 t --head-dim 128 --mode fwd --sizes 64k,128k --family tma
run 30 t --head-dim 128 --mode fwd --sizes 64k,128k
run 20 t --head-dim 64 --mode fwd --sizes 64k,128k --family tma
run 20 t --head-dim 64 --mode fwd --sizes 64k,128k
run 40 t --head-dim 64 --mode both --sizes 128k
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]{0,300}' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
sed -E 's/Sm80\(Sm80Tuning \{ forward_tiles: ([0-9]), dq_tiles: ([0-9]), /T\1\/\2 /; s/\(reference path in F16 [0-9.e-]+\) //g; s/wgmma_forward/wf/; s/wgmma_backward/wb/; s/persistent_forward/pf/; s/overlap_softmax/ov/; s/min_blocks/mb/g; s/tma_loads/tma/' $OUT/strategies-t.txt 2>/dev/null | grep -E "^F16 |over the bar|^rc|panicked|blocks of|rror" | cut -c1-500
