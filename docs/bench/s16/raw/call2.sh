#!/bin/bash
# Session 16, call 2: the Hopper dK/dV with a producer warpgroup and setmaxnreg (40/232):
# ptxas -v, strategies f16 (head dim 128 runs it), then prev (6800d4a) against new, interleaved,
# head dims 128 and 64.
cd .dev && for b in device_probe kernel_bench kernel_bench_prev; do xz -dc $b.xz > $b; chmod +x $b; done; cd ..
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
start=$(date +%s)
t() { echo "== $1 at $(( $(date +%s) - start )) s"; }
(CUBECL_CUDA_DUMP_PTX=/tmp/ptx timeout 150 .dev/kernel_bench --device cuda --sizes 16k --mode fwdbwd --iters 2 --head-dim 128 > /tmp/b128.txt 2>&1; echo rc $?); t bench128
grep -E "ms|rc|rror|anic" /tmp/b128.txt | cut -c1-300 | tail -6
for f in /tmp/ptx/*.ptx; do
  name=$(grep -m1 -oP '\.entry \K\w+' $f)
  ptxas -arch=sm_90a -v -o /tmp/$name.cubin $f > /tmp/ptxas.txt 2>&1
  echo "$name: $(grep -oE 'Used [0-9]+ registers|[0-9]+ bytes stack frame|[0-9]+ bytes spill stores|[0-9]+ bytes spill loads|error.*' /tmp/ptxas.txt | tr '\n' ' ')"
done | tee $OUT/ptxas.txt
t ptxas
(timeout 230 .dev/device_probe --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); t strategies
grep -E "head dim|Sm80Tuning.*wgmma_forward: true, wgmma_backward: true|rc|panic" $OUT/strategies.txt | grep -v "automatic" | cut -c170-420 | head -12
for r in "kernel_bench_prev 128" "kernel_bench 128" "kernel_bench_prev 64" "kernel_bench 64" "kernel_bench_prev 128" "kernel_bench 128"; do
  set -- $r
  echo "## $1 d$2" >> $OUT/bench.txt
  (timeout 50 .dev/$1 --device cuda --sizes 64k,128k --mode both --iters 10 --head-dim $2 >> $OUT/bench.txt 2>&1; echo rc $? >> $OUT/bench.txt); t "$1 d$2"
done
grep -oE '^## .*|"pattern":"[a-z]+","mode":"[a-z]+"|"n":[0-9]+|"median_ms":[0-9.]+|^rc.*' $OUT/bench.txt | paste -sd' ' | sed 's/## /\n## /g'
