#!/bin/bash
# Session 14, call 2: the 128-byte swizzled tiles (selftest, bf16 gradients at blocks of 128,
# strategies in f16), then old (75fb928) and new kernel_bench in one call, ncu of the forward.
cd .dev && for b in device_probe kernel_bench kernel_bench_old; do xz -dc $b.xz > $b; chmod +x $b; done; cd ..
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
start=$(date +%s)
t() { echo "$1 at $(( $(date +%s) - start )) s" >> $OUT/total.txt; }
(timeout 40 .dev/device_probe --device cuda --check wgmma > $OUT/wgmma.txt 2>&1; echo rc $? >> $OUT/wgmma.txt); t wgmma
(timeout 110 .dev/device_probe --device cuda --check gradients --dtypes bf16 > $OUT/grad-bf16.txt 2>&1; echo rc $? >> $OUT/grad-bf16.txt); t grad
(timeout 170 .dev/device_probe --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); t strategies
for b in kernel_bench kernel_bench_old; do
  (timeout 80 .dev/$b --device cuda --sizes 16k,64k,128k --mode both --iters 20 > $OUT/bench-$b.txt 2>&1; echo rc $? >> $OUT/bench-$b.txt); t $b
done
(timeout 45 ncu --clock-control none --kernel-name regex:forward_wgmma --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --metrics lts__t_sectors_srcunit_tex_op_read.sum,lts__t_requests_srcunit_tex_op_read.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum,launch__registers_per_thread .dev/kernel_bench --device cuda --sizes 128k --mode fwd --iters 1 > $OUT/ncu.txt 2>&1; echo rc $? >> $OUT/ncu.txt); t ncu
