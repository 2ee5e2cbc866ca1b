#!/bin/bash
# Session 23, call 6 (an H200: 16M tokens need 112 GiB; carry .dev23d/new_probe.xz, main at
# 3f16ba3 + the launch-level chunks). The scale check at 16M (time; bytes in use against the
# bytes the math needs) and the > 2^32-element call against its single batches.
start=$(date +%s)
mkdir -p /tmp/bin; xz -T4 -dc .dev23d/new_probe.xz > /tmp/bin/new_probe_d; chmod +x /tmp/bin/new_probe_d
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/scale.txt
(cd /tmp && timeout ${LIMIT:-150} /tmp/bin/new_probe_d --device cuda --check chunks,scale,large --dtypes f16 --scale-lengths 16m >> $OUT/scale.txt 2>&1; echo rc $? >> $OUT/scale.txt); echo "== probe at $(( $(date +%s) - start )) s"
grep -E "^chunks|^scale n=[0-9]+ \(|autodiff run|^large|^rc|panicked|FAIL|over the bar|failure|out of" $OUT/scale.txt | cut -c1-330
