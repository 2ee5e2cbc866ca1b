#!/bin/bash
# Session 30, call 2 (~580 s; `LIMIT` cuts it), on call 1's warm machine (its Inductor and
# Triton caches hold the peers' compiled rows). Carry .dev33. Ours (`auto`, the handoff, and
# the handoff with both backward kernels handed: `handoff-bwd`; `FAMS64`/`FAMS128` can add
# `handoff-dq`, the handed `dQ` alone) and the peers in the same call, f16, B1 H8, forward and forward + backward at 64K and 128K,
# head dims 64 and 128: issue 19's bar table.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-580} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
[ -x /tmp/bin/new_bench ] || { xz -T4 -dc .dev33/bins.tar.xz | tar xf - -C /tmp/bin; chmod +x /tmp/bin/*; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
torch() { fits $1 "torch $2" && { (timeout $1 python3 benches/torch_baseline.py f16 both $2 65536 131072 --no-dense > $OUT/torch-$2.txt 2>&1); echo "== torch $2 at $(el) s"; }; }
for fam in ${FAMS64:-auto handoff handoff-bwd}; do run 60 --head-dim 64 --mode both --sizes 64k,128k --iters 20 --family $fam; done
torch ${TORCH64:-90} d64
for fam in ${FAMS128:-auto handoff handoff-bwd}; do run 70 --head-dim 128 --mode both --sizes 64k,128k --iters 20 --family $fam; done
torch ${TORCH128:-90} d128
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"queued_ms":[0-9.]+|"status":"[^"]{0,300}' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"queued_ms":/q /g; s/"mode"://g; s/"n"://g; s/"//g'
echo
grep -hoE '"impl": "[a-z-]+"|"n": [0-9]+|"head_dim": [0-9]+|"mode": "[a-z+]+"|"median_ms": [0-9.]+|"status": "[a-z]+"' $OUT/torch-d64.txt $OUT/torch-d128.txt 2>/dev/null | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
