#!/bin/bash
# Session 17, call 3 (carry .dev17b .gl): one build with both `cuda` and `vulkan` (the same
# binary for both backends), after the cmma forward lost its output tile (49.1 -> 32.1 KiB of
# shared memory at head dim 64; NVIDIA's Vulkan driver gives a cube 48 KiB) and the plan
# checks every family's shared memory against the device's.
# 1. the SPIR-V probe (cmma on VK_KHR_cooperative_matrix); 2. Vulkan and CUDA rows, 16K and
# 128K; 3. the head-dim-128 edge-gradients check on CUDA with per-step times.
start=$(date +%s)
t() { echo "== $1 done at $(( $(date +%s) - start )) s"; }
left() { echo $(( $1 - ($(date +%s) - start) )); }
mkdir -p /tmp/bin
for f in .dev17b/*.xz; do b=/tmp/bin/$(basename $f .xz); xz -dc $f > $b; chmod +x $b; done
for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
export RUST_BACKTRACE=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt; t unpack
(timeout 170 /tmp/bin/device_probe --device vulkan --check basics,strategies,forward,gradients > $OUT/probe-vulkan.txt 2>&1; echo rc $? >> $OUT/probe-vulkan.txt); t probe-vulkan
grep -E "Cmma|cmma|over the bar|^rc |panicked|rror|\[" $OUT/probe-vulkan.txt | grep -v "not served" | cut -c1-330 | head -40
(timeout 150 /tmp/bin/kernel_bench --device vulkan --sizes 16k,128k --mode both --iters 5 > $OUT/bench-vulkan.txt 2>&1; echo rc $? >> $OUT/bench-vulkan.txt); t bench-vulkan
(timeout 60 /tmp/bin/kernel_bench --device cuda --sizes 16k,128k --mode both --iters 5 > $OUT/bench-cuda.txt 2>&1; echo rc $? >> $OUT/bench-cuda.txt); t bench-cuda
for f in bench-vulkan bench-cuda; do echo "## $f"; grep -oE '"path":"[a-z_-]+"|"pattern":"[a-z]+","mode":"[a-z]+"|"n":[0-9]+|"median_ms":[0-9.]+|^rc.*|[Ee]rror.*' $OUT/$f.txt | paste -sd' ' | sed 's/"path"/\n"path"/g'; done
T=$(left ${DEADLINE:-540}); [ $T -gt 30 ] && { (timeout $T /tmp/bin/device_probe --device cuda --check edge-gradients --edge-lengths 2100 --dtypes f16,bf16 > $OUT/edge-gradients.txt 2>&1; echo rc $? >> $OUT/edge-gradients.txt); t edge-gradients; grep -vE "^\s*$" $OUT/edge-gradients.txt | cut -c1-420 | tail -14; }
