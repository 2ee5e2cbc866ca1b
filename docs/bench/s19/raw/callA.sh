#!/bin/bash
# Session 19, call A (carry .dev19): main (fd84697) against tree-softmax (c167ae7), fwd and
# fwd+bwd at head dims 64/128; the peers in the same call; main's persistent and lazy forward;
# a second A/B round; the tree build's probe with what time is left.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-585} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for f in .dev19/*.xz; do (xz -T4 -dc $f > /tmp/bin/$(basename $f .xz)) & done; wait; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (timeout $1 /tmp/bin/$2 --device cuda "${@:3}" --sizes 64k,128k --iters 10 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for d in 64 128; do for b in main_bench tree_bench; do run 45 $b --head-dim $d --mode both; done; done
for d in 64 128; do fits 80 torch$d && (timeout 80 python3 benches/torch_baseline.py f16 both d$d 65536 131072 > $OUT/torch-d$d.txt 2>&1); echo "== torch$d at $(el) s"; done
for fam in persistent lazy; do for d in 64 128; do run 25 main_bench --head-dim $d --mode fwd --family $fam; done; done
for d in 64 128; do for b in tree_bench main_bench; do run 40 $b --head-dim $d --mode both; done; done
R=$(( 585 - $(el) )); [ $R -gt 30 ] && { (timeout $R /tmp/bin/tree_probe --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z]+"|"median_ms": [0-9.]+' $OUT/torch-d*.txt | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g' | grep -v sdpa
grep -E "over the bar|^rc|panicked|rror" $OUT/strategies.txt 2>/dev/null | cut -c1-300 | head; grep -c "^F16" $OUT/strategies.txt 2>/dev/null
