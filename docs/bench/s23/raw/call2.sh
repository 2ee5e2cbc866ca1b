#!/bin/bash
# Session 23, call 2 — not run (its start was refused; call4.sh runs its steps). (H100; carry .dev23u/new_bench.xz, .dev23c/new_probe.xz and .gl, the
# Vulkan loader packages). Issue 20: Vulkan (SPIR-V; `cmma` on VK_KHR_cooperative_matrix)
# against CUDA with the same binary at 16K and 128K, fwd and fwd+bwd (b830e11's merge/Δ grids
# first run on the driver); the `cmma` family on CUDA beside it (kernel or driver?); CubeCL's
# profile of the Vulkan 128K seed; the probe on Vulkan in f16.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-560} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for v in u c; do for f in $(ls .dev23$v/*.xz 2>/dev/null); do b=/tmp/bin/$(basename $f .xz)_$v; [ -x $b ] || { xz -T4 -dc $f > $b; chmod +x $b; } & done; done; wait
for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/vk.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/vk.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench_u "${@:2}" --iters 10 >> $OUT/vk.txt 2>&1); echo "== $* at $(el) s"; }
run 170 --device vulkan --sizes 16k,128k --mode both
run 60 --device cuda --sizes 16k,128k --mode both --family cmma
run 40 --device cuda --sizes 16k,128k --mode both
fits 60 profile && { (cd /tmp && CUBECL_DEBUG_LOG=/tmp/vkprof.log CUBECL_DEBUG_OPTION=profile timeout 60 /tmp/bin/new_bench_u --device vulkan --sizes 128k --mode both --iters 2 > /dev/null 2>&1); grep -v "^\s*$" /tmp/vkprof.log | tail -c 3000000 | xz > $OUT/vk-profile.log.xz; echo "== profile at $(el) s"; }
R=$(( ${LIMIT:-560} - $(el) - 5 )); [ $R -gt 60 ] && { (cd /tmp && timeout $R /tmp/bin/new_probe_c --device vulkan --check strategies,forward --dtypes f16 > $OUT/vk-probe.txt 2>&1; echo rc $? >> $OUT/vk-probe.txt); echo "== probe at $(el) s"; }
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"|"family":"[^"]*"' $OUT/vk.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -E "over the bar|^rc|panicked|rror|family" $OUT/vk-probe.txt 2>/dev/null | cut -c1-250 | head -30
xz -dc $OUT/vk-profile.log.xz 2>/dev/null | tail -30 | cut -c1-200
