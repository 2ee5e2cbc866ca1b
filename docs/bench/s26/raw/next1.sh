#!/bin/bash
# For the next device session, call 1 (~560 s; `LIMIT` cuts it). Carry .dev27 (bins.tar.xz:
# new_bench and new_probe built from 811715a: TMA loads on by default; `--family fused-dq`
# runs `dQ` inside the Hopper `dK/dV`, `--family copies` the old row copies).
# In order: fwd+bwd at 128K, fused dQ against the default, head dims 64 and 128; the probe's
# strategies on the first family of each case (at blocks of 128 the fused dQ; f16, held to
# dense attention in f16 as well since 36b8954); ncu's warp-state counters of the seed
# forward (per-tile overhead: the seed forward runs at ~70 % of LongNet's TFLOP/s,
# docs/notes.md); the PyTorch peers (fwd+bwd rows too); a second A/B round if time is left.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-560} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
xz -dc .dev27/bins.tar.xz | tar xf - -C /tmp/bin; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
ab() {
  run 50 --head-dim 64 --mode both --sizes 128k --iters 10 --family fused-dq
  run 35 --head-dim 64 --mode both --sizes 128k --iters 10
  run 60 --head-dim 128 --mode both --sizes 128k --iters 10 --family fused-dq
  run 50 --head-dim 128 --mode both --sizes 128k --iters 10
}
ab
fits 180 probe && { (cd /tmp && timeout 180 /tmp/bin/new_probe --device cuda --check strategies --dtypes f16 --families 1 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
fits 50 ncu && { (cd /tmp && timeout 50 ncu --clock-control none --kernel-name regex:forward_wgmma --launch-skip 2 --launch-count 1 --section WarpStateStats --section SchedulerStats --section Occupancy /tmp/bin/new_bench --device cuda --head-dim 64 --mode fwd --sizes 128k --iters 1 > $OUT/ncu-seed.txt 2>&1; echo rc $? >> $OUT/ncu-seed.txt); echo "== ncu at $(el) s"; }
fits 90 torch && { (timeout 90 python3 benches/torch_baseline.py f16 both d64 65536 131072 --no-dense > $OUT/torch-d64.txt 2>&1); echo "== torch at $(el) s"; }
ab
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]{0,300}' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z+]+"|"median_ms": [0-9.]+' $OUT/torch-d64.txt 2>/dev/null | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
sed -E 's/Sm80\(Sm80Tuning \{ forward_tiles: ([0-9]), dq_tiles: ([0-9]), /T\1\/\2 /; s/\(reference path in [FB]16 [0-9.e-]+\) //g; s/wgmma_forward/wf/; s/wgmma_backward/wb/; s/persistent_forward/pf/; s/overlap_softmax/ov/; s/min_blocks/mb/g; s/tma_loads/tma/' $OUT/strategies.txt 2>/dev/null | grep -E "^[FB]16 |over the bar|^rc|panicked|blocks of|rror" | cut -c1-500
grep -E "Warp Cycles|Stall|Issued|Eligible|No Eligible|Achieved Occ|rc " $OUT/ncu-seed.txt 2>/dev/null | head -30
