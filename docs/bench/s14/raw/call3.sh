#!/bin/bash
# Session 14, call 3: the producer starts before the consumers stage their tiles (named barrier),
# the chained forward and the dQ min-blocks variants; strategies (f16), bf16 gradients at blocks
# of 128; prev (87c4165, swizzle only) against new, interleaved; then the peers at 64K/128K.
cd .dev && for b in device_probe kernel_bench kernel_bench_prev; do xz -dc $b.xz > $b; chmod +x $b; done; cd ..
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
start=$(date +%s)
t() { echo "$1 at $(( $(date +%s) - start )) s" >> $OUT/total.txt; }
(timeout 150 .dev/device_probe --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); t strategies
(timeout 90 .dev/device_probe --device cuda --check gradients --dtypes bf16 > $OUT/grad-bf16.txt 2>&1; echo rc $? >> $OUT/grad-bf16.txt); t grad
i=0
for r in "kernel_bench auto" "kernel_bench_prev auto" "kernel_bench wgmma-chain" "kernel_bench wgmma-dq2" "kernel_bench auto" "kernel_bench wgmma-chain"; do
  set -- $r; i=$((i+1))
  (timeout 45 .dev/$1 --device cuda --sizes 16k,64k,128k --mode both --iters 20 --family $2 > $OUT/bench-$i-$1-$2.txt 2>&1; echo rc $? >> $OUT/bench-$i-$1-$2.txt); t bench-$i
done
left=$(( 588 - ($(date +%s) - start) ))
(timeout $left python3 benches/torch_baseline.py f16 both 65536 131072 > $OUT/torch.txt 2>&1; echo rc $? >> $OUT/torch.txt); t torch
