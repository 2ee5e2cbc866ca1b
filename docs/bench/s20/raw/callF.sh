#!/bin/bash
# Session 20, call F (carry .dev20): head = 76f52fa (kernels of main 4ac8ea3: the persistent
# forward by default); pv = pv-pair on main (180113b: the head-dim-128 forward's two P·V panel
# products issued together, one wait). d128 fwd A/B twice, pv's probe (strategies, f16),
# d128 fwd+bwd A/B, Flex/torchscale peers, d64 persistent vs tile-per-cube, ptxas -v.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-585} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for f in .dev20/*.xz; do (xz -T4 -dc $f > /tmp/bin/$(basename $f .xz)) & done; wait; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (timeout $1 /tmp/bin/$2 --device cuda "${@:3}" --sizes 64k,128k --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for r in 1 2; do for b in head_bench pv_bench; do run 30 $b --head-dim 128 --mode fwd; done; done
# The PTX step runs outside the tree (no Cargo.toml above): CubeCL's cache is then the user
# cache, empty, so every kernel compiles and is dumped (a cache hit dumps nothing).
fits 45 ptx && { mkdir -p /tmp/pr; i=0; for b in "head_bench --family tile-per-cube --head-dim 64" "head_bench --head-dim 64" "head_bench --head-dim 128" "pv_bench --head-dim 128"; do
    i=$((i+1)); set -- $b; mkdir -p /tmp/ptx/$i-$1; (cd /tmp/pr && CUBECL_CUDA_DUMP_PTX=/tmp/ptx/$i-$1 timeout 30 /tmp/bin/$b --device cuda --sizes 16k --mode fwd --iters 2 > /dev/null 2>&1) & done; wait
  (cd /tmp/ptx && for f in */*.ptx; do grep -q wgmma "$f" || { rm "$f"; continue; }; echo "## $f" | cut -c1-12,150-; grep -m1 -o "maxntid.*\|minnctapersm.*" "$f"; ptxas -arch=sm_90a -v "$f" -o /tmp/k.cubin 2>&1 | grep -E "registers|spill"; done > $OUT/ptxas.txt 2>&1; tar cJf $OUT/ptx.tar.xz */*.ptx); echo "== ptx at $(el) s"; }
# ncu of the head-dim-64 persistent forward (seed 64K, its first launch): stall reasons per SASS
# instruction (source page as CSV) and the warp-state / compute sections.
fits 70 ncu && { (cd /tmp/pr && timeout 70 ncu --clock-control none --section SourceCounters --section WarpStateStats --section ComputeWorkloadAnalysis --section SchedulerStats --import-source no --kernel-name regex:wgmma --launch-count 1 -o /tmp/f64 /tmp/bin/head_bench --device cuda --sizes 64k --mode fwd --iters 1 --head-dim 64 > $OUT/ncu.txt 2>&1)
  (ncu -i /tmp/f64.ncu-rep --page details >> $OUT/ncu.txt 2>&1; ncu -i /tmp/f64.ncu-rep --page source --csv --print-source sass 2>&1 | xz > $OUT/sass64.csv.xz); echo "== ncu at $(el) s"; }
fits 150 probe && { (timeout 190 /tmp/bin/pv_probe --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
for b in pv_bench head_bench; do run 45 $b --head-dim 128 --mode both; done
for d in 128 64; do fits 70 torch$d && { (timeout 70 python3 benches/torch_baseline.py f16 both d$d 65536 131072 --no-dense > $OUT/torch-d$d.txt 2>&1); echo "== torch$d at $(el) s"; }; done
run 25 head_bench --head-dim 64 --mode fwd; run 25 head_bench --head-dim 64 --mode fwd --family tile-per-cube
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z]+"|"median_ms": [0-9.]+' $OUT/torch-d*.txt | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
cat $OUT/ptxas.txt; grep -E "OVER|over the bar|^rc|panicked|rror" $OUT/strategies.txt 2>/dev/null | cut -c1-250 | head; grep -c "^F16" $OUT/strategies.txt 2>/dev/null
