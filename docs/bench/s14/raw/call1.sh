#!/bin/bash
# Session 14, call 1: bf16 and stored-gradient checks of the Hopper backward; full ncu sections
# of the three Hopper kernels at seed 128K.
cd .dev && for b in device_probe kernel_bench; do xz -dc $b.xz > $b; chmod +x $b; done; cd ..
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
start=$(date +%s)
(timeout 230 .dev/device_probe --device cuda --check gradients,edge-gradients --dtypes f16,bf16 > $OUT/probe.txt 2>&1; echo rc $? >> $OUT/probe.txt)
echo "probe $(( $(date +%s) - start )) s" > $OUT/total.txt
left=$(( 560 - ($(date +%s) - start) ))
(timeout $left ncu --clock-control none --set full --import-source no --kernel-name regex:"wgmma" --launch-count 3 .dev/kernel_bench --device cuda --sizes 128k --mode fwdbwd --iters 1 > $OUT/ncu.txt 2>&1; echo rc $? >> $OUT/ncu.txt)
echo "total $(( $(date +%s) - start )) s" >> $OUT/total.txt
