#!/bin/bash
# Session 17, call 1 (carry .dev-vulkan .gl; binaries built at 24e0de0, kernels as at HEAD):
# issue 20's first GPU run (the SPIR-V probe and the Vulkan/CUDA pair), then the head-dim-64
# CUDA rows (the dK/dV rewrite of eaecef0, untimed at d64) with the peers in the same call.
start=$(date +%s)
t() { echo "== $1 done at $(( $(date +%s) - start )) s"; }
mkdir -p /tmp/bin
for f in .dev-vulkan/*.xz; do xz -dc $f > /tmp/bin/$(basename $f .xz); chmod +x /tmp/bin/$(basename $f .xz); done
for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
export RUST_BACKTRACE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt; t unpack
(timeout 170 /tmp/bin/device_probe_vulkan --device vulkan --check basics,strategies,forward,gradients > $OUT/probe-vulkan.txt 2>&1; echo rc $? >> $OUT/probe-vulkan.txt); t probe-vulkan
tail -c 2500 $OUT/probe-vulkan.txt
(timeout 110 /tmp/bin/kernel_bench_vulkan --device vulkan --sizes 16k,64k --mode both --iters 5 > $OUT/bench-vulkan.txt 2>&1; echo rc $? >> $OUT/bench-vulkan.txt); t bench-vulkan
(timeout 130 /tmp/bin/kernel_bench --device cuda --sizes 16k,64k,128k --mode both --iters 10 > $OUT/bench-cuda.txt 2>&1; echo rc $? >> $OUT/bench-cuda.txt); t bench-cuda
(timeout 140 python3 benches/torch_baseline.py f16 both 65536 131072 > $OUT/torch-d64.txt 2>&1; echo rc $? >> $OUT/torch-d64.txt); t torch
for f in bench-vulkan bench-cuda; do echo "## $f"; grep -oE '"impl":"[a-z_-]+"|"pattern":"[a-z]+","mode":"[a-z]+"|"n":[0-9]+|"median_ms":[0-9.]+|^rc.*|[Ee]rror.*' $OUT/$f.txt | paste -sd' ' | sed 's/"impl"/\n"impl"/g'; done
tail -c 1500 $OUT/torch-d64.txt
