#!/bin/bash
# Session 27, second call (carry .dev27, .dev24w, .gl). ncu of the seed forward (warp states
# and per-instruction stall samples), the PyTorch peers d64 with fwd+bwd rows, our A/B rows
# in the same call, then the Vulkan robust-buffer pair (issue 20).
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-570} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
(xz -T4 -dc .dev27/bins.tar.xz | tar xf - -C /tmp/bin) & (xz -T4 -dc .dev24w/new_bench.xz > /tmp/bin/new_bench_w) & wait; chmod +x /tmp/bin/*
(for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
fits 90 ncu && { (cd /tmp && timeout 90 ncu --clock-control none --kernel-name regex:forward_wgmma --launch-skip 2 --launch-count 1 --set full --import-source no -o $OUT/seed /tmp/bin/new_bench --device cuda --head-dim 64 --mode fwd --sizes 128k --iters 1 > $OUT/ncu-seed.txt 2>&1; echo rc $? >> $OUT/ncu-seed.txt
  ncu --import $OUT/seed.ncu-rep --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats > $OUT/ncu-seed-states.txt 2>&1
  ncu --import $OUT/seed.ncu-rep --page source --csv --print-source sass > $OUT/ncu-seed-sass.csv 2>&1; xz -T4 $OUT/seed.ncu-rep); echo "== ncu at $(el) s"; }
run 40 --head-dim 64 --mode both --sizes 64k,128k --iters 10 --family fused-dq
run 40 --head-dim 64 --mode both --sizes 64k,128k --iters 10
fits 110 torch && { (timeout 110 python3 benches/torch_baseline.py f16 both d64 65536 131072 --no-dense > $OUT/torch-d64.txt 2>&1); echo "== torch at $(el) s"; }
vk() { fits $2 "vk $*" || return; echo "## vk $*" >> $OUT/vk.txt; (cd /tmp && VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json CUBECL_VULKAN_ROBUST_BUFFERS=$1 timeout $2 /tmp/bin/new_bench_w "${@:3}" --iters 10 >> $OUT/vk.txt 2>&1); echo "== vk $* at $(el) s"; }
vk 0 60 --device vulkan --sizes 16k,128k --mode fwd
vk 1 45 --device vulkan --sizes 16k,128k --mode fwd
vk 0 45 --device vulkan --sizes 16k,128k --mode fwd
vk 1 45 --device vulkan --sizes 16k,128k --mode fwd
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]{0,300}' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z+]+"|"median_ms": [0-9.]+' $OUT/torch-d64.txt 2>/dev/null | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
grep -E "Warp Cycles|Stall|Issued|Eligible|No Eligible|Achieved Occ|Registers|Shared Memory Config|rc " $OUT/ncu-seed-states.txt $OUT/ncu-seed.txt 2>/dev/null | head -30
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]{0,200}' $OUT/vk.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
