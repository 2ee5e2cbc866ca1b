#!/bin/bash
# For the next device session, call 2 (session 29), on an H200 (> 100 GiB; `kind: nvidia-h200`): issue 22's
# last item, the seed layout at 16M tokens (forward and backward, time and memory), with the
# chunked-launch and >2^32-element checks. Carry .dev32 (and target/environment if call 1
# returned its cache database for the same binaries).
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
mkdir -p /tmp/bin
xz -T4 -dc .dev32/bins.tar.xz | tar xf - -C /tmp/bin; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/scale.txt
MEM=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
if [ "$MEM" -gt 100000 ]; then
  (timeout ${LIMIT:-400} /tmp/bin/new_probe --device cuda --check chunks,scale,large --dtypes f16 --scale-lengths 16m >> $OUT/scale.txt 2>&1; echo rc $? >> $OUT/scale.txt); echo "== scale at $(el) s"
else
  echo "not an H200: 16M needs > 100 GiB" | tee -a $OUT/scale.txt
fi
grep -E "^chunks|^scale n=[0-9]+ \(|autodiff run|^large|^rc|panicked|FAIL|over the bar|failure|out of|not an" $OUT/scale.txt | cut -c1-330
