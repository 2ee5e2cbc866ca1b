#!/bin/bash
# Session 16, call 1: the Hopper dK/dV at head dim 128 (narrow S/dP halves): wgmma selftest
# (with the narrow pair), ptxas -v of the dumped kernels, strategies f16 (head dim 128 first).
cd .dev && for b in device_probe kernel_bench kernel_bench_prev; do xz -dc $b.xz > $b; chmod +x $b; done; cd ..
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
start=$(date +%s)
t() { echo "== $1 at $(( $(date +%s) - start )) s"; }
(timeout 120 .dev/device_probe --device cuda --check wgmma > $OUT/wgmma.txt 2>&1; echo rc $? >> $OUT/wgmma.txt); t wgmma
grep -E "wgmma|rc|over" $OUT/wgmma.txt | tail -5
(CUBECL_CUDA_DUMP_PTX=/tmp/ptx timeout 150 .dev/kernel_bench --device cuda --sizes 16k --mode fwdbwd --iters 2 --head-dim 128 > /tmp/b128.txt 2>&1; echo rc $?); t bench128
grep -E "ms|rc|rror|anic" /tmp/b128.txt | tail -6
for f in /tmp/ptx/*.ptx; do
  name=$(grep -m1 -oP '\.entry \K\w+' $f)
  case $name in *wgmma*|*dkdv*|*dq*) ;; *) continue;; esac
  ptxas -arch=sm_90a -v -o /tmp/$name.cubin $f > /tmp/ptxas.txt 2>&1
  echo "$name: $(grep -oE 'Used [0-9]+ registers|[0-9]+ bytes stack frame|[0-9]+ bytes spill stores|[0-9]+ bytes spill loads|[0-9]+ bytes smem' /tmp/ptxas.txt | tr '\n' ' ')"
done | tee $OUT/ptxas.txt
t ptxas
(timeout 280 .dev/device_probe --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); t strategies
grep -vE "^\s*$" $OUT/strategies.txt | cut -c1-400 | head -40
