#!/bin/bash
# ptxas -v on every dumped PTX: registers, spills and C75xx warnings; SASS wgmma waits per kernel.
export PATH=$PATH:/tmp/cudapip/nvdis/nvidia/cu13/bin:/tmp/cudapip/cuobj/nvidia/cu13/bin:/tmp/cudapip13/nvcc/nvidia/cu13/bin
d=${1:-/tmp/dump}
for f in $d/*.ptx; do
  n=$(basename $f .ptx)
  out=$(ptxas -arch=sm_90a -v $f -o /tmp/k.cubin 2>&1)
  if echo "$out" | grep -q "wgmma\|HGMMA" || grep -q "wgmma" $f; then
    echo "## ${n: -60}"
    echo "$out" | grep -E "C75|Used|spill" | sed 's/ptxas info *: //' | grep -v "^ *0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"
    echo "  SASS: $(cuobjdump -sass /tmp/k.cubin 2>/dev/null | grep -c HGMMA) HGMMA, $(cuobjdump -sass /tmp/k.cubin 2>/dev/null | grep -c 'DEPBAR') DEPBAR; $(grep -c 'wait_group' $f) wait_group in PTX"
  fi
done
