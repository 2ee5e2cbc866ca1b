#!/bin/bash
# Session 15, call 1: the wide-store epilogue's correctness (wgmma selftest, strategies f16,
# bf16 gradients with the manual-MMA backward beside); PTX of every kernel, ptxas -v on each,
# SASS opcode histograms of the Hopper kernels.
cd .dev && for b in device_probe kernel_bench kernel_bench_prev; do xz -dc $b.xz > $b; chmod +x $b; done; cd ..
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
start=$(date +%s)
t() { echo "== $1 at $(( $(date +%s) - start )) s"; }
(CUBECL_CUDA_DUMP_PTX=/tmp/ptx timeout 200 .dev/kernel_bench --device cuda --sizes 16k --mode fwdbwd --iters 2 > /tmp/b64.txt 2>&1; echo rc $?); t bench64
tail -4 /tmp/b64.txt
(timeout 200 .dev/device_probe --device cuda --check wgmma,strategies --dtypes f16 > /tmp/strat.txt 2>&1; echo rc $?); t strategies
grep -vE "^\s*$" /tmp/strat.txt | tail -30
mkdir -p /tmp/sass /tmp/cubin
for f in /tmp/ptx/*.ptx; do
  name=$(grep -m1 -oP '\.entry \K\w+' $f)
  case $name in *forward*|*backward*|*dq*|*dkdv*) ;; *) continue;; esac
  ptxas -arch=sm_90a -v -o /tmp/cubin/$name.cubin $f > /tmp/ptxas.txt 2>&1
  echo "$name: $(grep -oE 'Used [0-9]+ registers|[0-9]+ bytes stack frame|[0-9]+ bytes spill stores|[0-9]+ bytes spill loads' /tmp/ptxas.txt | tr '\n' ' ')"
  case $name in *wgmma*)
    cuobjdump -sass /tmp/cubin/$name.cubin > /tmp/sass/$name.sass
    cp $f /tmp/sass/$name.ptx
    echo "  opcodes: $(grep -oP '/\*[0-9a-f]{4,6}\*/\s+(@!?U?P[T0-9]\s+)?\K[A-Z][A-Z0-9_]*' /tmp/sass/$name.sass | sort | uniq -c | sort -rn | head -28 | awk '{printf "%s %s, ", $2, $1}')"
  ;; esac
done
t ptxas
tar -C /tmp -cJf $OUT/sass.tar.xz sass
(timeout 120 .dev/device_probe --device cuda --check gradients --dtypes bf16 --seed 4 > /tmp/g4.txt 2>&1; echo rc $?); t grad-4
grep -E "block 128|over|rc" /tmp/g4.txt
cat /tmp/strat.txt /tmp/g4.txt > $OUT/probe.txt
