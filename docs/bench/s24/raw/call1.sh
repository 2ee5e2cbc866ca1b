#!/bin/bash
# Session 24, call 1 (an H200 if one comes, else an H100). Carry .dev24/bins.tar.xz: new_bench_u
# (main at b809d63), new_bench_p and new_probe_p (main + the producer's arithmetic-progression
# copies, docs/bench/s23/producer-progression.diff); one xz stream with a 512 MiB dictionary,
# so the near-identical binaries cost little more than one.
# 1. The producer change against main: forward at head dims 64 and 128, 64K and 128K, rounds in
#    opposite orders; fwd+bwd at 128K (the dK/dV kernel's producer copies the same way).
# 2. Flex / torchscale in the same call (forward and fwd+bwd, both head dims).
# 3. The probe's strategies (f16) with the change; on a card with > 100 GiB, the scale check at
#    16M tokens and the > 2^32-element call.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-570} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
xz -dc .dev24/bins.tar.xz | tar xf - -C /tmp/bin; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/ab.txt
MEM=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench_$2 --device cuda "${@:3}" --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for d in 64 128; do for v in p u; do run 35 $v --head-dim $d --mode fwd --sizes 64k,128k; done; done
for d in 64 128; do for v in u p; do run 20 $v --head-dim $d --mode fwd --sizes 64k,128k; done; done
fits 200 probe && { (cd /tmp && timeout 200 /tmp/bin/new_probe_p --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
if [ "$MEM" -gt 100000 ]; then fits 150 scale && { (cd /tmp && timeout 150 /tmp/bin/new_probe_p --device cuda --check chunks,scale,large --dtypes f16 --scale-lengths 16m > $OUT/scale.txt 2>&1; echo rc $? >> $OUT/scale.txt); echo "== scale at $(el) s"; }; fi
for d in 64 128; do for v in p u; do run 40 $v --head-dim $d --mode both --sizes 128k; done; done
for d in 64 128; do fits 90 torch$d && { (timeout 90 python3 benches/torch_baseline.py f16 both d$d 65536 131072 --no-dense > $OUT/torch-d$d.txt 2>&1); echo "== torch$d at $(el) s"; }; done
grep -E "^chunks|^scale n=[0-9]+ \(|autodiff run|^large|^rc|panicked|FAIL|over the bar|failure|out of" $OUT/scale.txt 2>/dev/null | cut -c1-330
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z+]+"|"median_ms": [0-9.]+' $OUT/torch-d*.txt | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
sed -E 's/Sm80\(Sm80Tuning \{ forward_tiles: ([0-9]), dq_tiles: ([0-9]), /T\1\/\2 /; s/\(reference path in F16 [0-9.e-]+\) //g; s/wgmma_forward/wf/; s/wgmma_backward/wb/; s/persistent_forward/pf/; s/overlap_softmax/ov/; s/min_blocks/mb/g' $OUT/strategies.txt 2>/dev/null | grep -E "^F16 |over the bar|^rc|panicked|blocks of" | cut -c1-420
