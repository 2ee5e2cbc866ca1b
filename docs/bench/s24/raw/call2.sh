#!/bin/bash
# Session 24, call 2 (after call 1, same machine; carry .dev24w/new_bench.xz — main + the producer
# change + patches/cubecl-wgpu, the Vulkan device made without robust buffer access unless
# CUBECL_VULKAN_ROBUST_BUFFERS=1 — and .gl). Issue 20: the same binary, with and without the
# driver's robust buffer access, in alternating order; the CUDA default beside it.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-570} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin; xz -T4 -dc .dev24w/new_bench.xz > /tmp/bin/new_bench_w; chmod +x /tmp/bin/new_bench_w
for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/vk.txt
run() { fits $2 "$*" || return; echo "## $*" >> $OUT/vk.txt; (cd /tmp && CUBECL_VULKAN_ROBUST_BUFFERS=$1 timeout $2 /tmp/bin/new_bench_w "${@:3}" --iters 10 >> $OUT/vk.txt 2>&1); echo "== $* at $(el) s"; }
run 0 90 --device vulkan --sizes 16k,128k --mode fwd
run 1 90 --device vulkan --sizes 16k,128k --mode fwd
run 0 60 --device vulkan --sizes 16k,128k --mode fwd
run 1 60 --device vulkan --sizes 16k,128k --mode fwd
run 0 60 --device vulkan --sizes 16k --mode both
run 1 60 --device vulkan --sizes 16k --mode both
run 0 40 --device cuda --sizes 16k,128k --mode both
run 0 150 --device vulkan --sizes 128k --mode both
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/vk.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
