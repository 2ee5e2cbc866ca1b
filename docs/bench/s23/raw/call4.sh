#!/bin/bash
# Session 23, call 4 (H100; carry .dev23d/new_probe.xz, .dev23u/new_bench.xz and .gl): call 3's
# chunked-launch checks at 8M (an H100 holds 8M, not 16M), then call 2's Vulkan rows (issue 20:
# SPIR-V with `cmma` on VK_KHR_cooperative_matrix against CUDA, same binary; `cmma` on CUDA
# beside it) and the probe on Vulkan in f16.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-560} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
LIMIT=120 bash docs/bench/s23/raw/call3.sh
mkdir -p /tmp/bin; xz -T4 -dc .dev23u/new_bench.xz > /tmp/bin/new_bench_u; chmod +x /tmp/bin/new_bench_u
for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/vk.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench_u "${@:2}" --iters 10 >> $OUT/vk.txt 2>&1); echo "== $* at $(el) s"; }
run 150 --device vulkan --sizes 16k,128k --mode both
run 50 --device cuda --sizes 16k,128k --mode both --family cmma
run 30 --device cuda --sizes 16k,128k --mode both
R=$(( ${LIMIT:-560} - $(el) - 5 )); [ $R -gt 40 ] && { (cd /tmp && timeout $R /tmp/bin/new_probe_d --device vulkan --check strategies,forward --dtypes f16 > $OUT/vk-probe.txt 2>&1; echo rc $? >> $OUT/vk-probe.txt); echo "== probe at $(el) s"; }
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"|"family":"[^"]*"' $OUT/vk.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -E "over the bar|^rc|panicked|rror|family|^F16" $OUT/vk-probe.txt 2>/dev/null | cut -c1-250 | head -30
