#!/bin/bash
# Session 19, call C (carry .dev19c): the head-dim-64 forward's slowdown since 960bcd9.
# old = 08ed546 (kernels of 960bcd9), ring = 1298332 (+ PTX ring), fix = main fd84697 + the
# Hopper forward asking registers for the cubes an SM holds (two at d64) on either grid.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-270} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for f in .dev19c/*.xz; do (xz -T4 -dc $f > /tmp/bin/$(basename $f .xz)) & done; wait; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (timeout $1 /tmp/bin/$2 --device cuda "${@:3}" --sizes 64k,128k --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for b in old_bench ring_bench fix_bench; do run 40 $b --head-dim 64 --mode fwd; done; run 30 fix_bench --head-dim 64 --mode fwd --family persistent
for d in 64 128; do run 40 fix_bench --head-dim $d --mode both; run 40 fix_bench --head-dim $d --mode both --family persistent; done
fits 100 torch64 && { (timeout 100 python3 benches/torch_baseline.py f16 both d64 65536 131072 --no-dense > $OUT/torch-d64.txt 2>&1); echo "== torch64 at $(el) s"; }
for b in old_bench fix_bench; do run 25 $b --head-dim 64 --mode fwd; done
fits 100 torch128 && { (timeout 100 python3 benches/torch_baseline.py f16 both d128 65536 131072 --no-dense > $OUT/torch-d128.txt 2>&1); echo "== torch128 at $(el) s"; }
mkdir -p /tmp/sass
for b in fix_bench old_bench; do fits 40 ptx$b || continue; mkdir -p /tmp/ptx/$b
  (CUBECL_CUDA_DUMP_PTX=/tmp/ptx/$b timeout 30 /tmp/bin/$b --device cuda --sizes 16k --mode fwd --iters 2 --head-dim 64 > /dev/null 2>&1)
  [ $b = fix_bench ] && (CUBECL_CUDA_DUMP_PTX=/tmp/ptx/$b timeout 30 /tmp/bin/$b --device cuda --family persistent --sizes 16k --mode fwd --iters 2 --head-dim 64 > /dev/null 2>&1)
  for f in /tmp/ptx/$b/*.ptx; do grep -q wgmma "$f" || continue; echo "## $b $(basename $f)"; ptxas -arch=sm_90a -v "$f" -o /tmp/k.cubin 2>&1 | grep -E "registers|spill|stack"; n=$b-$(basename "$f" .ptx | tail -c 40); cuobjdump -sass /tmp/k.cubin > /tmp/sass/$n.sass; cp "$f" /tmp/sass/$n.ptx; done >> $OUT/ptxas.txt 2>&1
  echo "== ptx $b at $(el) s"; done
(cd /tmp && tar cJf $OUT/sass.tar.xz sass)
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z]+"|"median_ms": [0-9.]+' $OUT/torch-d*.txt | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
cat $OUT/ptxas.txt
