#!/bin/bash
# Session 19, call E (carry .dev19e): old = 08ed546 (kernels of 960bcd9); head = 76f52fa (the
# persistent forward by default; the grid of one cube a tile asks registers for two cubes an SM
# at head dim 64, family tile-per-cube). Forward rows, the Flex peer, ptxas -v of the d64 forward.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-200} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for f in .dev19e/*.xz; do (xz -T4 -dc $f > /tmp/bin/$(basename $f .xz)) & done; wait; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (timeout $1 /tmp/bin/$2 --device cuda "${@:3}" --sizes 64k,128k --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
run 30 old_bench --head-dim 64 --mode fwd; run 30 head_bench --head-dim 64 --mode fwd; run 30 head_bench --head-dim 64 --mode fwd --family tile-per-cube
run 25 head_bench --head-dim 128 --mode fwd; run 25 head_bench --head-dim 128 --mode fwd --family tile-per-cube
fits 60 torch && { (timeout 60 python3 benches/torch_baseline.py f16 fwd d64 65536 131072 --no-dense > $OUT/torch-d64.txt 2>&1); echo "== torch at $(el) s"; }
fits 25 ptx && { mkdir -p /tmp/ptx; (CUBECL_CUDA_DUMP_PTX=/tmp/ptx timeout 20 /tmp/bin/head_bench --device cuda --family tile-per-cube --sizes 16k --mode fwd --iters 2 --head-dim 64 > /dev/null 2>&1)
  (CUBECL_CUDA_DUMP_PTX=/tmp/ptx timeout 20 /tmp/bin/old_bench --device cuda --sizes 16k --mode fwd --iters 2 --head-dim 64 > /dev/null 2>&1)
  for f in /tmp/ptx/*.ptx; do grep -q wgmma "$f" || continue; echo "## $(basename $f | tail -c 60)"; grep -m1 -o "maxntid.*\|minnctapersm.*" "$f"; ptxas -arch=sm_90a -v "$f" -o /tmp/k.cubin 2>&1 | grep -E "registers|spill"; done > $OUT/ptxas.txt 2>&1; echo "== ptx at $(el) s"; }
R=$(( ${LIMIT:-200} - $(el) )); [ $R -gt 40 ] && { (timeout $R /tmp/bin/head_probe --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z]+"|"median_ms": [0-9.]+' $OUT/torch-d*.txt | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
cat $OUT/ptxas.txt; grep -E "OVER|over the bar|^rc|panicked" $OUT/strategies.txt 2>/dev/null | cut -c1-250
