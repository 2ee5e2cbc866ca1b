#!/bin/bash
# Session 23, call 1 (H100). Carry .dev23m/new_bench.xz (main at 76bb6b6), .dev23u/new_bench.xz
# (main + s22's uniform-plane-group.diff), .dev23c/new_probe.xz (uniform + s22's launch-chunks.diff).
# 1. The scale check at 8M with the launch-level chunks (does the head-folded call run now, and
#    if not, what does the failed sync say?).
# 2. The uniform plane/warpgroup index against main, forward at head dims 64 and 128, 64K and
#    128K, two rounds in opposite orders; fwd+bwd at 64; the Flex/torchscale forward peers.
# 3. The probe's strategies, f16, with the uniform + chunks binary (every tensor-core family).
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-560} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for v in m u c; do for f in $(ls .dev23$v/*.xz 2>/dev/null); do (xz -T4 -dc $f > /tmp/bin/$(basename $f .xz)_$v; chmod +x /tmp/bin/$(basename $f .xz)_$v) & done; done; wait
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/ab.txt
for v in c; do fits 60 scale$v && { (cd /tmp && timeout 60 /tmp/bin/new_probe_$v --device cuda --check scale --scale-lengths 8m > $OUT/scale-$v.txt 2>&1; echo rc $? >> $OUT/scale-$v.txt); echo "== scale $v at $(el) s"; }; done
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench_$2 --device cuda "${@:3}" --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for d in 64 128; do for v in m u; do run 45 $v --head-dim $d --mode fwd --family auto --sizes 64k,128k; done; done
for d in 64 128; do fits 60 torch$d && { (timeout 60 python3 benches/torch_baseline.py f16 fwd d$d 65536 131072 --no-dense > $OUT/torch-d$d.txt 2>&1); echo "== torch$d at $(el) s"; }; done
for d in 128 64; do for v in u m; do run 25 $v --head-dim $d --mode fwd --family auto --sizes 64k,128k; done; done
for v in m u; do run 40 $v --head-dim 64 --mode both --family auto --sizes 128k; done
R=$(( ${LIMIT:-560} - $(el) - 5 )); [ $R -gt 60 ] && { (cd /tmp && timeout $R /tmp/bin/new_probe_c --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
grep -E "^scale|^rc|panicked|fail|error" $OUT/scale-*.txt | cut -c1-400
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z]+"|"median_ms": [0-9.]+' $OUT/torch-d*.txt | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
sed -E 's/Sm80\(Sm80Tuning \{ forward_tiles: ([0-9]), dq_tiles: ([0-9]), /T\1\/\2 /; s/\(reference path in F16 [0-9.e-]+\) //g; s/wgmma_forward/wf/; s/wgmma_backward/wb/; s/persistent_forward/pf/; s/overlap_softmax/ov/; s/min_blocks/mb/g' $OUT/strategies.txt 2>/dev/null | grep -E "^F16 |over the bar|^rc|panicked|blocks of" | cut -c1-420
