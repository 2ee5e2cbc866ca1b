#!/bin/bash
# Session 19, call B (carry .dev19b2): old (08ed546: the kernels of 960bcd9, libcu++ ring waits)
# against main (fd84697: PTX ring), interleaved twice; then the tree build's probe with what is left.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-585} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for f in .dev19b2/*.xz; do (xz -T4 -dc $f > /tmp/bin/$(basename $f .xz)) & done; wait; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (timeout $1 /tmp/bin/$2 --device cuda "${@:3}" --sizes 64k,128k --iters 10 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for r in 1 2; do for d in 64 128; do for b in old_bench main_bench; do run 45 $b --head-dim $d --mode both; done; done; done
run 25 main_bench --head-dim 64 --mode fwd --family persistent
R=$(( 585 - $(el) )); [ $R -gt 30 ] && { (timeout $R /tmp/bin/tree_probe --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -E "over the bar|^rc|panicked|rror" $OUT/strategies.txt 2>/dev/null | cut -c1-300 | head; grep -c "^F16" $OUT/strategies.txt 2>/dev/null
