#!/bin/bash
# Session 23, call 3 (carry .dev23d/new_probe.xz: main at 3f16ba3 + the launch-level chunks with
# the backward writing stored gradients straight into views of the whole ones). On an H200 (16M
# needs 112 GiB), else an H100 (8M only):
# 1. `chunks`: a small call forced into the chunked launches against one launch, f16/bf16;
# 2. `scale` at 8M (and 16M on an H200): time, bytes in use against the bytes the math needs;
# 3. `large`: a > 2^32-element call against its single batches.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
mkdir -p /tmp/bin; xz -T4 -dc .dev23d/new_probe.xz > /tmp/bin/new_probe_d; chmod +x /tmp/bin/new_probe_d
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/scale.txt
mem=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
lengths=8m; [ "$mem" -gt 120000 ] && lengths=8m,16m
(cd /tmp && timeout ${LIMIT:-300} /tmp/bin/new_probe_d --device cuda --check chunks,scale,large --dtypes f16,bf16 --scale-lengths $lengths >> $OUT/scale.txt 2>&1; echo rc $? >> $OUT/scale.txt); echo "== probe at $(el) s"
grep -E "^chunks|^scale n=[0-9]+ \(|autodiff run|^large|^rc|panicked|FAIL|over the bar|failure|out of" $OUT/scale.txt | cut -c1-330
