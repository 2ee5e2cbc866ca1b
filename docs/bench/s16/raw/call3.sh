#!/bin/bash
# Session 16, call 3: the Hopper dK/dV with setmaxnreg honoured (launch bounds with a minimum
# of one cube an SM): ptxas -v, prev (6800d4a) against new interleaved at head dim 128 and 64,
# strategies f16, then the head-dim-128 peers with what time is left.
cd .dev && for b in device_probe kernel_bench kernel_bench_prev; do xz -dc $b.xz > $b; chmod +x $b; done; cd ..
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
start=$(date +%s)
t() { echo "== $1 at $(( $(date +%s) - start )) s"; }
(CUBECL_CUDA_DUMP_PTX=/tmp/ptx timeout 150 .dev/kernel_bench --device cuda --sizes 16k --mode fwdbwd --iters 2 --head-dim 128 > /tmp/b128.txt 2>&1; echo rc $?); t bench128
grep -E "ms|rc|rror|anic" /tmp/b128.txt | cut -c1-300 | tail -6
for f in /tmp/ptx/*.ptx; do
  name=$(grep -m1 -oP '\.entry \K\w+' $f)
  case $name in *wgmma*|*dkdv*|*dq*|*forward*) ;; *) continue;; esac
  ptxas -arch=sm_90a -v -o /tmp/$name.cubin $f > /tmp/ptxas.txt 2>&1
  echo "$name: $(grep -oE 'Used [0-9]+ registers|[0-9]+ bytes stack frame|[0-9]+ bytes spill stores|[0-9]+ bytes spill loads|C[0-9]+.*|error.*' /tmp/ptxas.txt | tr '\n' ' ')"
  cuobjdump -sass /tmp/$name.cubin | grep -c USETMAXREG
done | tee $OUT/ptxas.txt
t ptxas
for r in "kernel_bench_prev 128" "kernel_bench 128" "kernel_bench_prev 128" "kernel_bench 128" "kernel_bench_prev 64" "kernel_bench 64"; do
  set -- $r
  echo "## $1 d$2" >> $OUT/bench.txt
  (timeout 50 .dev/$1 --device cuda --sizes 64k,128k --mode both --iters 10 --head-dim $2 >> $OUT/bench.txt 2>&1; echo rc $? >> $OUT/bench.txt); t "$1 d$2"
done
grep -oE '^## .*|"pattern":"[a-z]+","mode":"[a-z]+"|"n":[0-9]+|"median_ms":[0-9.]+|^rc.*' $OUT/bench.txt | paste -sd' ' | sed 's/## /\n## /g' | sed 's/"pattern"://g; s/"mode"://g; s/"median_ms"://g; s/"n"://g'
(timeout 200 .dev/device_probe --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); t strategies
grep -E "head dim|wgmma_forward: true, wgmma_backward: true|rc|panic" $OUT/strategies.txt | grep -v "automatic" | cut -c170-330 | head -12
left=$(( 540 - ($(date +%s) - start) ))
(timeout $left python3 benches/torch_baseline.py f16 both d128 65536 131072 > $OUT/peers-d128.txt 2>&1; echo rc $? >> $OUT/peers-d128.txt); t peers
grep -oE '"impl": "[a-z-]+"|"n": [0-9]+|"mode": "[a-z]+"|"median_ms": [0-9.]+|^rc.*' $OUT/peers-d128.txt | paste -sd' ' | sed 's/"impl"/\n/g'
