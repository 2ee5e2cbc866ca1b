#!/bin/bash
# Session 15, call 2 (warm after call 1): prev (7412db0) against the wide-store epilogue,
# interleaved; ncu stall reasons and pipe use of the three Hopper kernels at seed 128K.
cd .dev && for b in kernel_bench kernel_bench_prev; do [ -x $b ] || { xz -dc $b.xz > $b; chmod +x $b; }; done; cd ..
start=$(date +%s)
t() { echo "== $1 at $(( $(date +%s) - start )) s"; }
for b in kernel_bench_prev kernel_bench kernel_bench_prev kernel_bench; do
  (timeout 60 .dev/$b --device cuda --sizes 16k,64k,128k --mode both --iters 20 > /tmp/$b.txt 2>&1; echo rc $?); t $b
  grep -E "ms|rc" /tmp/$b.txt | tail -14
done
for b in kernel_bench_prev kernel_bench; do
  (timeout 80 .dev/$b --device cuda --sizes 64k,128k --mode both --iters 10 --head-dim 128 > /tmp/$b-128.txt 2>&1; echo rc $?); t $b-d128
  grep -E "ms|rc" /tmp/$b-128.txt | tail -10
done
(timeout 200 ncu --clock-control none --kernel-name regex:"wgmma" --launch-count 3 \
  --metrics regex:'smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio',regex:'sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active',smsp__inst_executed.sum,sm__warps_active.avg.per_cycle_active \
  .dev/kernel_bench --device cuda --sizes 128k --mode fwdbwd --iters 1 > /tmp/ncu.txt 2>&1; echo rc $?); t ncu
grep -E 'wgmma|stalled|pipe|inst_executed|warps_active' /tmp/ncu.txt | awk '$NF+0 >= 0.05 || /wgmma/' | sed 's/  */ /g'
cp /tmp/ncu.txt $OUT/ncu.txt
