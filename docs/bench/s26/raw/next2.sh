#!/bin/bash
# For the next device session, call 2 (~400 s). Carry .dev27, .dev24w (new_bench.xz: the
# Vulkan build with the patched cubecl-wgpu, robust buffer access off unless
# CUBECL_VULKAN_ROBUST_BUFFERS=1) and .gl. 16M on a card with > 100 GiB (issue 22's last
# item), then Vulkan with and without robust buffer access, same binary (issue 20).
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-400} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
(xz -dc .dev27/bins.tar.xz | tar xf - -C /tmp/bin) & (xz -T4 -dc .dev24w/new_bench.xz > /tmp/bin/new_bench_w) & wait; chmod +x /tmp/bin/*
(for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/vk.txt
MEM=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
if [ "$MEM" -gt 100000 ]; then fits 160 scale && { (cd /tmp && timeout 160 /tmp/bin/new_probe --device cuda --check chunks,scale,large --dtypes f16 --scale-lengths 16m > $OUT/scale.txt 2>&1; echo rc $? >> $OUT/scale.txt); echo "== scale at $(el) s"; }; fi
vk() { fits $2 "vk $*" || return; echo "## vk $*" >> $OUT/vk.txt; (cd /tmp && VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json CUBECL_VULKAN_ROBUST_BUFFERS=$1 timeout $2 /tmp/bin/new_bench_w "${@:3}" --iters 10 >> $OUT/vk.txt 2>&1); echo "== vk $* at $(el) s"; }
vk 0 60 --device vulkan --sizes 16k,128k --mode fwd
vk 1 45 --device vulkan --sizes 16k,128k --mode fwd
vk 0 45 --device vulkan --sizes 16k,128k --mode fwd
vk 1 45 --device vulkan --sizes 16k,128k --mode fwd
vk 0 45 --device vulkan --sizes 16k --mode both
vk 1 45 --device vulkan --sizes 16k --mode both
grep -E "^chunks|^scale n=[0-9]+ \(|autodiff run|^large|^rc|panicked|FAIL|over the bar|failure|out of" $OUT/scale.txt 2>/dev/null | cut -c1-330
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]{0,200}' $OUT/vk.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
