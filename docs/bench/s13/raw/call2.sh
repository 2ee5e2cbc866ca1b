#!/bin/bash
# Session 13, call 2: correctness of the paired-product backward, per-kernel times, rows with peers.
cd .dev && for b in device_probe kernel_bench; do xz -dc $b.xz > $b; chmod +x $b; done; cd ..
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
start=$(date +%s)
(timeout 170 .dev/device_probe --device cuda --check strategies > $OUT/probe.txt 2>&1; echo rc $? >> $OUT/probe.txt)
for f in wgmma-bwd auto; do
  (timeout 100 .dev/kernel_bench --device cuda --sizes 16k,64k,128k --mode fwdbwd --iters 20 --family $f > $OUT/bench-$f.txt 2>&1; echo rc $? >> $OUT/bench-$f.txt)
done
(timeout 70 ncu --clock-control none --kernel-name regex:backward --launch-count 6 --metrics gpu__time_duration.sum,launch__registers_per_thread,launch__occupancy_limit_registers,launch__occupancy_limit_shared_mem .dev/kernel_bench --device cuda --sizes 128k --mode fwdbwd --iters 1 --family wgmma-bwd > $OUT/ncu.txt 2>&1; echo rc $? >> $OUT/ncu.txt)
left=$(( 585 - ($(date +%s) - start) ))
(timeout $left python3 benches/torch_baseline.py f16 fwdbwd 16384 65536 131072 > $OUT/torch.txt 2>&1; echo rc $? >> $OUT/torch.txt)
