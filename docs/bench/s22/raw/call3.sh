#!/bin/bash
# Session 22, call 3 (carry .dev22, on an H200: 16M tokens need 112 GiB). The scale check after
# the LseStep fix (4656b14) at 4M, 8M and 16M (time; bytes in use against the tensors the math
# needs) and the > 2^32-element call against its per-batch runs; then the default's fwd+bwd at
# head dim 64 with the Flex/torchscale peers in the same call.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-400} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for f in .dev22/*.xz; do b=/tmp/bin/$(basename $f .xz); [ -x $b ] || { xz -T4 -dc $f > $b; chmod +x $b; } & done; wait
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/ab.txt
fits 200 scale && { (cd /tmp && timeout 200 /tmp/bin/new_probe --device cuda --check scale,large --scale-lengths 4m,8m,16m > $OUT/scale.txt 2>&1; echo rc $? >> $OUT/scale.txt); echo "== scale at $(el) s"; }
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" --iters 10 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
run 60 --head-dim 64 --mode both --sizes 64k,128k
fits 110 torch && { (timeout 110 python3 benches/torch_baseline.py f16 both d64 65536 131072 --no-dense > $OUT/torch-d64.txt 2>&1); echo "== torch at $(el) s"; }
grep -E "^scale|^large|^rc|panicked|FAIL" $OUT/scale.txt | cut -c1-330
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z]+"|"median_ms": [0-9.]+' $OUT/torch-d64.txt | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
