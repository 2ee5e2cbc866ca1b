#!/bin/bash
# For the next device session, call 1 (~560 s; `LIMIT` cuts it). Carry .dev26 (bins.tar.xz:
# new_bench, new_probe built from 44f61ba: the default family has the progression copies,
# `--family tma` adds whole chunks by TMA in the forward, dQ and dK/dV producers) and .gl.
# In order: the probe's strategies on the TMA family and the default (f16; bf16 at the end; it
# decides whether `tma_loads` becomes the default, and checks the dQ mask branch of fbb5901
# and the dK/dV causal branch of a34b7a8); fwd+bwd and forward, default against tma, head
# dims 64 and 128, 64K/128K; the PyTorch peers in the same call; CubeCL's per-kernel profile
# of fwd+bwd at head dim 128; a second forward round.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-560} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
xz -dc .dev26/bins.tar.xz | tar xf - -C /tmp/bin; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
fits 300 probe && { (cd /tmp && timeout 300 /tmp/bin/new_probe --device cuda --check strategies --dtypes f16 --families 2 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
for d in 64 128; do
  run 30 --head-dim $d --mode both --sizes 128k --family tma
  run 30 --head-dim $d --mode both --sizes 128k
done
torch() { fits $2 torch$1 && { (timeout $2 python3 benches/torch_baseline.py f16 both d$1 65536 131072 --no-dense > $OUT/torch-d$1.txt 2>&1); echo "== torch$1 at $(el) s"; }; }
torch 64 90
for d in 64 128; do
  run 20 --head-dim $d --mode fwd --sizes 64k,128k
  run 20 --head-dim $d --mode fwd --sizes 64k,128k --family tma
done
torch 128 90
fits 50 prof && { (cd /tmp && CUBECL_DEBUG_LOG=/tmp/prof.log CUBECL_DEBUG_OPTION=profile timeout 50 /tmp/bin/new_bench --device cuda --head-dim 128 --mode both --sizes 128k --iters 3 > /dev/null 2>&1; tail -c 4000000 /tmp/prof.log | xz > $OUT/prof-cuda.log.xz); echo "== prof at $(el) s"; }
for d in 64 128; do run 20 --head-dim $d --mode fwd --sizes 64k,128k --family tma; run 20 --head-dim $d --mode fwd --sizes 64k,128k; done
# bf16 last, through the default family (`strategies` runs f32 and f16 only; `forward` and
# `gradients` take bf16): the progression copies and the two mask branches in bf16.
fits 150 probe-bf16 && { (cd /tmp && timeout 150 /tmp/bin/new_probe --device cuda --check forward,gradients --dtypes bf16 > $OUT/strategies-bf16.txt 2>&1; echo rc $? >> $OUT/strategies-bf16.txt); echo "== probe-bf16 at $(el) s"; }
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]{0,300}' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z+]+"|"median_ms": [0-9.]+' $OUT/torch-d*.txt 2>/dev/null | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
sed -E 's/Sm80\(Sm80Tuning \{ forward_tiles: ([0-9]), dq_tiles: ([0-9]), /T\1\/\2 /; s/\(reference path in [FB]16 [0-9.e-]+\) //g; s/wgmma_forward/wf/; s/wgmma_backward/wb/; s/persistent_forward/pf/; s/overlap_softmax/ov/; s/min_blocks/mb/g; s/tma_loads/tma/' $OUT/strategies.txt $OUT/strategies-bf16.txt 2>/dev/null | grep -E "^[FB]16 |BF16|over the bar|^rc|panicked|blocks of|rror" | cut -c1-600
