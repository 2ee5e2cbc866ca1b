#!/bin/bash
# Session 24, call 3 (not run: no machine started this session). Everything waiting, in one
# call, most wanted first; `LIMIT` (seconds, default 575) cuts it short for less device time.
# Carry .dev24 (bins.tar.xz: new_bench_u = main at b809d63; new_bench_p, new_probe_p =
# main + the producer's arithmetic-progression copies), .dev24w (new_bench.xz: _p + the
# patched cubecl-wgpu, Vulkan device without robust buffer access unless
# CUBECL_VULKAN_ROBUST_BUFFERS=1) and .gl. In order:
# 1. producer change against main, forward, head dims 64/128, 64K/128K; 2. the probe's
# strategies (f16) with the change; 3. Vulkan with and without robust buffer access, same
# binary; 4. on a card with > 100 GiB the scale check at 16M; 5. second A/B round in the other order,
# fwd+bwd at 128K, the PyTorch peers; 6. CubeCL's per-kernel profile of fwd+bwd at head dim 128.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-575} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
(xz -dc .dev24/bins.tar.xz | tar xf - -C /tmp/bin) & (xz -T4 -dc .dev24w/new_bench.xz > /tmp/bin/new_bench_w) & wait; chmod +x /tmp/bin/*
(for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig) 
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/ab.txt
MEM=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench_$2 --device cuda "${@:3}" --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
vk() { fits $2 "vk $*" || return; echo "## vk $*" >> $OUT/vk.txt; (cd /tmp && VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json CUBECL_VULKAN_ROBUST_BUFFERS=$1 timeout $2 /tmp/bin/new_bench_w "${@:3}" --iters 10 >> $OUT/vk.txt 2>&1); echo "== vk $* at $(el) s"; }
for d in 64 128; do for v in p u; do run 30 $v --head-dim $d --mode fwd --sizes 64k,128k; done; done
fits 130 probe && { (cd /tmp && timeout 130 /tmp/bin/new_probe_p --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
vk 0 60 --device vulkan --sizes 16k,128k --mode fwd
vk 1 45 --device vulkan --sizes 16k,128k --mode fwd
vk 0 45 --device vulkan --sizes 16k,128k --mode fwd
vk 1 45 --device vulkan --sizes 16k,128k --mode fwd
if [ "$MEM" -gt 100000 ]; then fits 150 scale && { (cd /tmp && timeout 150 /tmp/bin/new_probe_p --device cuda --check chunks,scale,large --dtypes f16 --scale-lengths 16m > $OUT/scale.txt 2>&1; echo rc $? >> $OUT/scale.txt); echo "== scale at $(el) s"; }; fi
for d in 64 128; do for v in u p; do run 20 $v --head-dim $d --mode fwd --sizes 64k,128k; done; done
vk 0 45 --device vulkan --sizes 16k --mode both
vk 1 45 --device vulkan --sizes 16k --mode both
for d in 64; do for v in p u; do run 40 $v --head-dim $d --mode both --sizes 128k; done; done
for d in 64 128; do fits 70 torch$d && { (timeout 70 python3 benches/torch_baseline.py f16 fwd d$d 65536 131072 --no-dense > $OUT/torch-d$d.txt 2>&1); echo "== torch$d at $(el) s"; }; done
fits 50 prof && { (cd /tmp && CUBECL_DEBUG_LOG=/tmp/prof.log CUBECL_DEBUG_OPTION=profile timeout 50 /tmp/bin/new_bench_p --device cuda --head-dim 128 --mode both --sizes 128k --iters 3 > /dev/null 2>&1; tail -c 4000000 /tmp/prof.log | xz > $OUT/prof-cuda.log.xz); echo "== prof at $(el) s"; }
grep -E "^chunks|^scale n=[0-9]+ \(|autodiff run|^large|^rc|panicked|FAIL|over the bar|failure|out of" $OUT/scale.txt 2>/dev/null | cut -c1-330
for f in ab vk; do grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/$f.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'; done
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z+]+"|"median_ms": [0-9.]+' $OUT/torch-d*.txt | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
sed -E 's/Sm80\(Sm80Tuning \{ forward_tiles: ([0-9]), dq_tiles: ([0-9]), /T\1\/\2 /; s/\(reference path in F16 [0-9.e-]+\) //g; s/wgmma_forward/wf/; s/wgmma_backward/wb/; s/persistent_forward/pf/; s/overlap_softmax/ov/; s/min_blocks/mb/g' $OUT/strategies.txt 2>/dev/null | grep -E "^F16 |over the bar|^rc|panicked|blocks of" | cut -c1-300
