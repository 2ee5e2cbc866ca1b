#!/bin/bash
# Session 24, call 6: with ~330 s of device time left, information for the next session, not a
# landing (no time for the probe): the producer change against main at head dim 64, and the
# Vulkan pair with and without robust buffer access. Carry .dev24, .dev24w and .gl (call 3's).
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-180} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
(xz -dc .dev24/bins.tar.xz | tar xf - -C /tmp/bin new_bench_u new_bench_p) & (xz -T4 -dc .dev24w/new_bench.xz > /tmp/bin/new_bench_w) & wait; chmod +x /tmp/bin/*
(for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench_$2 --device cuda "${@:3}" --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
vk() { fits $2 "vk $*" || return; echo "## vk $*" >> $OUT/ab.txt; (cd /tmp && VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json CUBECL_VULKAN_ROBUST_BUFFERS=$1 timeout $2 /tmp/bin/new_bench_w "${@:3}" --iters 10 >> $OUT/ab.txt 2>&1); echo "== vk $* at $(el) s"; }
for v in p u; do run 30 $v --head-dim 64 --mode fwd --sizes 64k,128k; done
vk 0 55 --device vulkan --sizes 16k,128k --mode fwd
vk 1 40 --device vulkan --sizes 16k,128k --mode fwd
for v in u p; do run 15 $v --head-dim 64 --mode fwd --sizes 64k,128k; done
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
