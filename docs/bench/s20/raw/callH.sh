#!/bin/bash
# Session 20, call H (carry .dev20b: kernel_bench and device_probe of 147bbff). The Hopper
# forward's experimental switches against the default in the same binary: families pingpong,
# paired-pv (head dim 128 only), pingpong-paired-pv; the probe's strategies (both switches at
# blocks of 128, causal LongNet); Flex/torchscale forward peers; a second round; ncu if time.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-585} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for f in .dev20b/*.xz; do (xz -T4 -dc $f > /tmp/bin/$(basename $f .xz)) & done; wait; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" --sizes 64k,128k --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
round() { for f in auto paired-pv pingpong pingpong-paired-pv; do run 25 --head-dim 128 --mode fwd --family $f; done; }
round; for f in auto pingpong; do run 25 --head-dim 64 --mode fwd --family $f; done
fits 150 probe && { (timeout 170 /tmp/bin/new_probe --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
for d in 128 64; do fits 50 torch$d && { (timeout 50 python3 benches/torch_baseline.py f16 fwd d$d 65536 131072 --no-dense > $OUT/torch-d$d.txt 2>&1); echo "== torch$d at $(el) s"; }; done
round; for f in pingpong auto; do run 25 --head-dim 64 --mode fwd --family $f; done
fits 60 ncu && { (cd /tmp && timeout 60 ncu --clock-control none --section SourceCounters --section WarpStateStats --section ComputeWorkloadAnalysis --section SchedulerStats --import-source no --kernel-name regex:wgmma --launch-count 1 -o /tmp/f64 /tmp/bin/new_bench --device cuda --sizes 64k --mode fwd --iters 1 --head-dim 64 > $OUT/ncu.txt 2>&1)
  (ncu -i /tmp/f64.ncu-rep --page details >> $OUT/ncu.txt 2>&1; ncu -i /tmp/f64.ncu-rep --page source --csv --print-source sass 2>&1 | xz > $OUT/sass64.csv.xz); echo "== ncu at $(el) s"; }
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z]+"|"median_ms": [0-9.]+' $OUT/torch-d*.txt | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
grep -E "over the bar|^rc|panicked|rror|Sm80|blocks of" $OUT/strategies.txt 2>/dev/null | cut -c1-250 | head -40; grep -E "Warp Cycles|Issue Slot|Tensor|Stall|No Eligible|Active Warps" $OUT/ncu.txt 2>/dev/null | head -20
