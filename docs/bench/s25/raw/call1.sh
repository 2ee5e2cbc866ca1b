#!/bin/bash
# Session 25, call 1. Carry .dev25 (bins.tar.xz: new_bench_t, new_probe_t = main + the TMA
# producer switch (`--family tma`; the default family is main's kernels); new_bench_p,
# new_probe_p = b809d63 + the producer's arithmetic-progression copies) and .gl.
# `LIMIT` (seconds, default 560) cuts it short. In order: forward A/B (t default, t tma, p) at
# head dims 64/128, 64K/128K; the probe's strategies with the TMA family first; the probe
# with the progression; 16M on a card with > 100 GiB; a second A/B round in the other order;
# fwd+bwd at 128K; the PyTorch peers.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-560} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
xz -dc .dev25/bins.tar.xz | tar xf - -C /tmp/bin; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/ab.txt
MEM=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
# run SECONDS BINARY [args]: one kernel_bench row set into ab.txt.
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench_$2 --device cuda "${@:3}" --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for d in 64 128; do
  run 40 t --head-dim $d --mode fwd --sizes 64k,128k
  run 40 t --head-dim $d --mode fwd --sizes 64k,128k --family tma
  run 40 p --head-dim $d --mode fwd --sizes 64k,128k
done
fits 140 probe_t && { (cd /tmp && timeout 140 /tmp/bin/new_probe_t --device cuda --check strategies --dtypes f16 --families 3 > $OUT/strategies-t.txt 2>&1; echo rc $? >> $OUT/strategies-t.txt); echo "== probe_t at $(el) s"; }
fits 140 probe_p && { (cd /tmp && timeout 140 /tmp/bin/new_probe_p --device cuda --check strategies --dtypes f16 --families 5 > $OUT/strategies-p.txt 2>&1; echo rc $? >> $OUT/strategies-p.txt); echo "== probe_p at $(el) s"; }
if [ "$MEM" -gt 100000 ]; then fits 150 scale && { (cd /tmp && timeout 150 /tmp/bin/new_probe_t --device cuda --check chunks,scale,large --dtypes f16 --scale-lengths 16m > $OUT/scale.txt 2>&1; echo rc $? >> $OUT/scale.txt); echo "== scale at $(el) s"; }; fi
for d in 64 128; do
  run 20 p --head-dim $d --mode fwd --sizes 64k,128k
  run 20 t --head-dim $d --mode fwd --sizes 64k,128k --family tma
  run 20 t --head-dim $d --mode fwd --sizes 64k,128k
done
run 40 t --head-dim 64 --mode both --sizes 128k --family tma
run 40 t --head-dim 64 --mode both --sizes 128k
run 40 p --head-dim 64 --mode both --sizes 128k
for d in 64 128; do fits 70 torch$d && { (timeout 70 python3 benches/torch_baseline.py f16 fwd d$d 65536 131072 --no-dense > $OUT/torch-d$d.txt 2>&1); echo "== torch$d at $(el) s"; }; done
grep -E "^chunks|^scale n=[0-9]+ \(|autodiff run|^large|^rc|panicked|FAIL|over the bar|failure|out of" $OUT/scale.txt 2>/dev/null | cut -c1-330
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"|"family":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z+]+"|"median_ms": [0-9.]+' $OUT/torch-d*.txt 2>/dev/null | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
for f in t p; do echo "## probe $f"; sed -E 's/Sm80\(Sm80Tuning \{ forward_tiles: ([0-9]), dq_tiles: ([0-9]), /T\1\/\2 /; s/\(reference path in F16 [0-9.e-]+\) //g; s/wgmma_forward/wf/; s/wgmma_backward/wb/; s/persistent_forward/pf/; s/overlap_softmax/ov/; s/min_blocks/mb/g; s/tma_loads/tma/' $OUT/strategies-$f.txt 2>/dev/null | grep -E "^F16 |over the bar|^rc|panicked|blocks of|rror" | cut -c1-420; done
