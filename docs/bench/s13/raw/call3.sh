#!/bin/bash
# Session 13, call 3: the final state. Probe (head dim 64 first), the backward A/B interleaved
# (sm80-wgmma = Hopper forward + manual-MMA backward; auto = Hopper forward + backward), peers.
cd .dev && for b in device_probe kernel_bench; do xz -dc $b.xz > $b; chmod +x $b; done; cd ..
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
start=$(date +%s)
(timeout 150 .dev/device_probe --device cuda --check strategies > $OUT/probe.txt 2>&1; echo rc $? >> $OUT/probe.txt)
i=0
for f in sm80-wgmma auto sm80-wgmma auto; do
  i=$((i+1))
  (timeout 80 .dev/kernel_bench --device cuda --sizes 16k,64k,128k --mode both --iters 20 --family $f > $OUT/bench-$i-$f.txt 2>&1; echo rc $? >> $OUT/bench-$i-$f.txt)
done
left=$(( 520 - ($(date +%s) - start) ))
(timeout $left python3 benches/torch_baseline.py f16 both 16384 65536 131072 > $OUT/torch.txt 2>&1; echo rc $? >> $OUT/torch.txt)
left=$(( 575 - ($(date +%s) - start) ))
(timeout $left ncu --clock-control none --kernel-name regex:backward --launch-count 3 --metrics gpu__time_duration.sum,launch__registers_per_thread .dev/kernel_bench --device cuda --sizes 128k --mode fwdbwd --iters 1 > $OUT/ncu.txt 2>&1; echo rc $? >> $OUT/ncu.txt)
echo "total $(( $(date +%s) - start )) s" > $OUT/total.txt
