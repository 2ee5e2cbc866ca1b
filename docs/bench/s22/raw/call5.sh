#!/bin/bash
# Session 22, call 5 (carry .dev22b: device_probe built from main at dc69f41, the chunked
# launches). The scale check at 4M and 8M (8M runs in four launches over views: one Burn op, no
# joined copy of out) and the > 2^32-element call against its per-batch runs.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
mkdir -p /tmp/bin; xz -T4 -dc .dev22b/new_probe.xz > /tmp/bin/new_probe; chmod +x /tmp/bin/new_probe
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/scale.txt
(cd /tmp && timeout ${LIMIT:-170} /tmp/bin/new_probe --device cuda --check scale,large --scale-lengths 4m,8m >> $OUT/scale.txt 2>&1; echo rc $? >> $OUT/scale.txt); echo "== probe at $(el) s"
grep -E "^scale n=[0-9]+ \(|autodiff run|^large|^rc|panicked|FAIL" $OUT/scale.txt | cut -c1-330
