#!/bin/bash
# Session 20, call G (carry .dev20b and .gl, right after call H on the warm machine): Vulkan
# (SPIR-V, cmma on VK_KHR_cooperative_matrix) against CUDA with the same binary at 16K and 128K,
# fwd and fwd+bwd (b830e11's merge/Δ grids not yet re-run on the driver), CubeCL's profile of the
# 128K seed; the scale check's memory breakdown on CUDA (4M, 8M); the probe on Vulkan in f16.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-585} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for f in .dev20b/*.xz; do b=/tmp/bin/$(basename $f .xz); [ -x $b ] || { xz -T4 -dc $f > $b; chmod +x $b; } & done; wait
for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/vk.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/vk.txt; (timeout $1 /tmp/bin/new_bench "${@:2}" --iters 10 >> $OUT/vk.txt 2>&1); echo "== $* at $(el) s"; }
run 150 --device vulkan --sizes 16k,128k --mode both
run 40 --device cuda --sizes 16k,128k --mode both
fits 100 scale && { (timeout 100 /tmp/bin/new_probe --device cuda --check scale --scale-lengths 4m,8m > $OUT/scale.txt 2>&1; echo rc $? >> $OUT/scale.txt); echo "== scale at $(el) s"; }
fits 60 profile && { (CUBECL_DEBUG_LOG=/tmp/vkprof.log CUBECL_DEBUG_OPTION=profile timeout 60 /tmp/bin/new_bench --device vulkan --sizes 128k --mode both --iters 2 > /dev/null 2>&1); grep -v "^\s*$" /tmp/vkprof.log | tail -c 3000000 | xz > $OUT/vk-profile.log.xz; echo "== profile at $(el) s"; }
R=$(( ${LIMIT:-585} - $(el) )); [ $R -gt 60 ] && { (timeout $R /tmp/bin/new_probe --device vulkan --check strategies,forward --dtypes f16 > $OUT/vk-probe.txt 2>&1; echo rc $? >> $OUT/vk-probe.txt); echo "== probe at $(el) s"; }
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/vk.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -E "^scale|^rc" $OUT/scale.txt | cut -c1-300; grep -E "over the bar|^rc|panicked|rror|family" $OUT/vk-probe.txt 2>/dev/null | cut -c1-250 | head -30; xz -dc $OUT/vk-profile.log.xz | tail -30 | cut -c1-200
