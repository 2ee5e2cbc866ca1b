#!/bin/bash
# Session 30, call 1 (~580 s; `LIMIT` cuts it), best on an H200 (`needs_h200`: issue 22's 16M
# needs > 100 GiB; on an H100 that part is skipped and the probe gets its time). Carry .dev33
# (bins.tar.xz: new_bench and new_probe built from 4ec7b33).
# 1. The seed layout at 16M tokens, forward and backward, time and memory, with the
#    chunked-launch and > 2^32-element checks (issue 22).
# 2. The probe's `strategies` on the handoff (`tma_queries` + `handed_tiles`, probe index 16),
#    the handed `dQ` (`handed_dq`, 23) and the handed `dK/dV` (`handed_dkdv`, 24), blocks of 128, head dims 64 and 128, causal and
#    not, from /tmp (as session 26's, which finished), printing each reference's time as it
#    lands.
# 3. Meanwhile, on the CPU: the peers' rows compiled once (`--compile-only`), so call 2's timed
#    peers start at once on the same warm machine (Inductor's and Triton's caches on disk).
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
mkdir -p /tmp/bin
xz -T4 -dc .dev33/bins.tar.xz | tar xf - -C /tmp/bin; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/scale.txt
MEM=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
if [ "$MEM" -gt 100000 ] && [ "$ONLY" != probe ]; then
  (timeout ${SCALE_LIMIT:-240} /tmp/bin/new_probe --device cuda --check chunks,scale,large --dtypes f16 --scale-lengths 16m >> $OUT/scale.txt 2>&1; echo rc $? >> $OUT/scale.txt); echo "== scale at $(el) s"
else
  echo "skipped 16M: ${MEM} MiB (needs > 100 GiB)" | tee -a $OUT/scale.txt
fi
# The peers' compile, in the background (GPU-light: one call a row).
(for d in d64 d128; do timeout 400 python3 benches/torch_baseline.py f16 both $d 65536 131072 --no-dense --compile-only; done > $OUT/torch-compile.txt 2>&1; echo "compiled at $(el) s" >> $OUT/torch-compile.txt) &
left=$(( ${LIMIT:-580} - $(el) - 10 ))
(cd /tmp && timeout $left /tmp/bin/new_probe --device cuda --check strategies --dtypes f16 --pick ${PICK:-16,23,24} > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"
kill %1 2>/dev/null; wait
grep -E "^chunks|^scale n=[0-9]+ \(|autodiff run|^large|^rc|panicked|FAIL|over the bar|failure|out of|skipped" $OUT/scale.txt | cut -c1-330
grep -c compiled $OUT/torch-compile.txt; tail -2 $OUT/torch-compile.txt | cut -c1-300
sed -E 's/Sm80\(Sm80Tuning \{ forward_tiles: ([0-9]), dq_tiles: ([0-9]), /T\1\/\2 /; s/\(reference path in [FB]16 [0-9.e-]+\) //g; s/wgmma_forward/wf/; s/wgmma_backward/wb/; s/persistent_forward/pf/; s/overlap_softmax/ov/; s/min_blocks/mb/g; s/tma_loads/tma/; s/[a-z_]+: false, //g; s/, [a-z_]+: false//g' $OUT/strategies.txt | grep -E "^[FB]16 |over the bar|^rc|panicked|blocks of|rror| at [0-9.]+ s" | cut -c1-700
