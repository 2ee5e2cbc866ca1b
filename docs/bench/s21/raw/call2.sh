#!/bin/bash
# Session 21, call 2 (carry .dev21 and .gl). Forward + backward of the default against the
# best forward variant of call 1 (FAMILY, default overlap), head dims 64 and 128, with the
# Flex/torchscale fwd+bwd peers in the same call; the scale check's memory breakdown (4M, 8M);
# Vulkan against CUDA at 16K/128K with the same binary if time is left.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-585} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for f in .dev21/*.xz; do b=/tmp/bin/$(basename $f .xz); [ -x $b ] || { xz -T4 -dc $f > $b; chmod +x $b; } & done; wait
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" --iters 10 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
F=${FAMILY:-overlap}
for d in 64 128; do for f in auto $F; do run 45 --head-dim $d --mode both --sizes 64k,128k --family $f; done; done
for d in 64 128; do fits 110 torch$d && { (timeout 110 python3 benches/torch_baseline.py f16 both d$d 65536 131072 --no-dense > $OUT/torch-d$d.txt 2>&1); echo "== torch$d at $(el) s"; }; done
for d in 64 128; do for f in $F auto; do run 45 --head-dim $d --mode both --sizes 64k,128k --family $f; done; done
fits 100 scale && { (cd /tmp && timeout 100 /tmp/bin/new_probe --device cuda --check scale --scale-lengths 4m,8m > $OUT/scale.txt 2>&1; echo rc $? >> $OUT/scale.txt); echo "== scale at $(el) s"; }
if fits 100 vulkan; then for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  echo "## vulkan" >> $OUT/vk.txt; (cd /tmp && timeout $(( ${LIMIT:-585} - $(el) - 5 )) /tmp/bin/new_bench --device vulkan --sizes 16k,128k --mode both --iters 5 >> $OUT/vk.txt 2>&1); echo "== vulkan at $(el) s"; fi
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt $OUT/vk.txt 2>/dev/null | sed 's/^[^:]*://' | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z]+"|"median_ms": [0-9.]+' $OUT/torch-d*.txt | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
grep -E "^scale|^rc|bytes|panicked" $OUT/scale.txt 2>/dev/null | cut -c1-300 | head -30
