#!/bin/bash
# For the next device session, call 1 (~570 s; `LIMIT` cuts it). Carry .dev32 (bins.tar.xz:
# new_bench and new_probe built from ec2d5cc). Session 29's call 1 timed `handoff`
# (`tma_queries` + `handed_tiles`) 6 % faster than auto at head dim 64 (seed 128K −16 %) and
# the moved forms slower, but its probe printed nothing past its first case's automatic choice
# in 390 s, then again in 190 s on the warm machine. Session 26's probe, whose whole check
# (two families) finished in 295 s, ran from /tmp (no `cubecl.toml`, so no on-disk cache) and without
# `CUBECL_AUTOTUNE_LEVEL`; this one does the same. In order: the forward A/B at head dim 64
# (auto and handoff twice) and at 128 (handoff untimed there), the peers' forward rows at head dim
# 64 (80 s: 45 s gave one row), then the probe on what `pick.py` finds faster (handoff, at 64 and 128, causal and
# not). ONLY=probe (with PICK=16) gives the probe the whole call.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-570} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
xz -T4 -dc .dev32/bins.tar.xz | tar xf - -C /tmp/bin; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
[ "$ONLY" = probe ] && FAMS64=" " FAMS128=" " TORCH_DIMS=" "
for fam in ${FAMS64:-auto handoff auto handoff}; do
  run 25 --head-dim 64 --mode fwd --sizes 64k,128k --iters 20 --family $fam
done
for fam in ${FAMS128:-auto handoff moved auto handoff}; do
  run 30 --head-dim 128 --mode fwd --sizes 64k,128k --iters 20 --family $fam
done
for hd in ${TORCH_DIMS:-64}; do
  fits 80 torch && { (timeout 80 python3 benches/torch_baseline.py f16 fwd d$hd 65536 131072 --no-dense > $OUT/torch-d$hd.txt 2>&1); echo "== torch d$hd at $(el) s"; }
done
# The probe checks what just timed fastest (`pick.py`; `PICK` overrides: probe indices).
PICK=${PICK:-$(python3 docs/bench/s29/raw/pick.py $OUT/ab.txt 2> $OUT/pick.txt)}; [ "$PICK" = 20,19 ] && PICK=16; echo "pick $PICK" | tee -a $OUT/pick.txt
left=$(( ${LIMIT:-570} - $(el) - 10 ))
[ $left -gt 60 ] && { (cd /tmp && timeout $left /tmp/bin/new_probe --device cuda --check strategies --dtypes f16 --pick $PICK > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
cat $OUT/pick.txt
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]{0,300}' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"n": [0-9]+|"head_dim": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z+]+"|"median_ms": [0-9.]+' $OUT/torch-d64.txt $OUT/torch-d128.txt 2>/dev/null | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
sed -E 's/Sm80\(Sm80Tuning \{ forward_tiles: ([0-9]), dq_tiles: ([0-9]), /T\1\/\2 /; s/\(reference path in [FB]16 [0-9.e-]+\) //g; s/wgmma_forward/wf/; s/wgmma_backward/wb/; s/persistent_forward/pf/; s/overlap_softmax/ov/; s/min_blocks/mb/g; s/tma_loads/tma/; s/[a-z_]+: false, //g; s/, [a-z_]+: false//g' $OUT/strategies.txt 2>/dev/null | grep -E "^[FB]16 |over the bar|^rc|panicked|blocks of|rror" | cut -c1-700
