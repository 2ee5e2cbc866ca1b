#!/bin/bash
# For the next device session, call 1 (~570 s; `LIMIT` cuts it). Carry .dev30 (bins.tar.xz:
# new_bench and new_probe built from cc8db51: `--family tma-queries` is the Hopper forward with
# its query tiles by TMA (`Sm80Tuning::tma_queries`), `--family handoff` that plus the tiles and
# chunk positions handed by the producer (`Sm80Tuning::handed_tiles`); the probe's strategies
# check those two first at blocks of 128, then the default).
# The binaries run from the repository root, so cubecl.toml's compilation cache fills
# target/environment/; its database comes back under $OUT/env/ (copy it to target/environment/
# and carry that path with the same .dev30 in a later call: the probe then starts warm — the
# cache keys carry the binary's build id, so it serves only the same binaries).
# The probe runs with CUBECL_AUTOTUNE_LEVEL=minimal (Burn's matmuls in its reference paths tune
# fewer candidates: less NVRTC on a cold machine; the probe judges numerics, not speed).
# In order: the probe (f16, both head dims, masked and not, three families), the forward A/B
# handoff / tma-queries / default at head dim 64 (handoff and default twice), handoff / default
# at 128, the PyTorch peers' head-dim-64 forward rows.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-570} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
xz -T4 -dc .dev30/bins.tar.xz | tar xf - -C /tmp/bin; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/ab.txt
fits 280 probe && { (CUBECL_AUTOTUNE_LEVEL=minimal timeout ${PROBE:-280} /tmp/bin/new_probe --device cuda --check strategies --dtypes f16 --families 3 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for fam in handoff tma-queries auto auto handoff; do
  run 25 --head-dim 64 --mode fwd --sizes 64k,128k --iters 20 --family $fam
done
for fam in handoff auto; do
  run 30 --head-dim 128 --mode fwd --sizes 64k,128k --iters 20 --family $fam
done
fits 60 torch && { (timeout 60 python3 benches/torch_baseline.py f16 fwd d64 65536 131072 --no-dense > $OUT/torch-d64.txt 2>&1); echo "== torch at $(el) s"; }
mkdir -p $OUT/env && for f in target/environment/*.db*; do [ -f "$f" ] && [ $(stat -c %s "$f") -lt 40000000 ] && cp "$f" $OUT/env/; done
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]{0,300}' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"n": [0-9]+|"head_dim": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z+]+"|"median_ms": [0-9.]+' $OUT/torch-d64.txt $OUT/torch-d128.txt 2>/dev/null | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
sed -E 's/Sm80\(Sm80Tuning \{ forward_tiles: ([0-9]), dq_tiles: ([0-9]), /T\1\/\2 /; s/\(reference path in [FB]16 [0-9.e-]+\) //g; s/wgmma_forward/wf/; s/wgmma_backward/wb/; s/persistent_forward/pf/; s/overlap_softmax/ov/; s/min_blocks/mb/g; s/tma_loads/tma/' $OUT/strategies.txt 2>/dev/null | grep -E "^[FB]16 |over the bar|^rc|panicked|blocks of|rror" | cut -c1-700
ls -la $OUT/env
