#!/bin/bash
# Session 18, one call (carry .dev18c, .dev18/kernel_bench.xz, .gl). New = build s18 389a9a4
# (main + ring-ptx + lazy-rescale + the opt-in persistent forward); old = .dev18's kernel_bench (lazy-rescale alone, libcu++ ring waits).
# Steps by priority; each is skipped when it could run past the call's 600 s.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
t() { echo "== $1 done at $(el) s"; }
fits() { [ $(( $(el) + $1 )) -lt 585 ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
xz -dc .dev18/kernel_bench.xz > /tmp/bin/old_bench; chmod +x /tmp/bin/old_bench
for f in .dev18c/*.xz; do b=/tmp/bin/$(basename $f .xz); xz -dc $f > $b; chmod +x $b; done
for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
# 1. correctness of the new ring and of the lazy tuning (every Hopper kernel).
(timeout 170 /tmp/bin/device_probe --device cuda --check strategies --dtypes f16 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); t strategies
grep -E "over the bar|^rc|panicked|rror" $OUT/strategies.txt | cut -c1-300 | head -12; tail -2 $OUT/strategies.txt | cut -c1-300
# A hang (rc 124: a ring that never completes) would stall every new run: time only the old then.
NEW=kernel_bench; grep -q "^rc 124" $OUT/strategies.txt && NEW=""
# 2. old against new, interleaved; the new one's lazy tuning.
for r in 1 2; do for bin in old_bench $NEW; do for d in 64 128; do
  fits 45 "ab $bin d$d r$r" || continue
  echo "## $bin d$d run $r" >> $OUT/ab.txt
  (timeout 45 /tmp/bin/$bin --device cuda --head-dim $d --sizes 64k,128k --mode both --iters 10 >> $OUT/ab.txt 2>&1)
done; done; t "ab run $r"; done
for fam in persistent lazy; do for d in 64 128; do [ -n "$NEW" ] && fits 30 $fam || continue; echo "## $fam new d$d" >> $OUT/ab.txt; (timeout 30 /tmp/bin/kernel_bench --device cuda --family $fam --head-dim $d --sizes 64k,128k --mode fwd --iters 10 >> $OUT/ab.txt 2>&1); done; done; t families
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g' | sed 's/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g'
# 3. the peers, same call.
for d in 64 128; do fits 100 torch$d && (timeout 100 python3 benches/torch_baseline.py f16 both d$d 65536 131072 > $OUT/torch-d$d.txt 2>&1); t torch$d; done
tail -n 9 $OUT/torch-d*.txt | cut -c1-160
# 4. Vulkan: the 128K fwd+bwd read back; CubeCL's per-kernel profile of one forward.
fits 90 vulkan && { (timeout 90 /tmp/bin/kernel_bench --device vulkan --sizes 128k --mode both --iters 3 > $OUT/vulkan.txt 2>&1; echo rc $? >> $OUT/vulkan.txt); t vulkan-128k; cut -c1-400 $OUT/vulkan.txt; }
fits 50 profile && { (CUBECL_DEBUG_LOG=/tmp/cubecl.log CUBECL_DEBUG_OPTION=profile timeout 50 /tmp/bin/kernel_bench --device vulkan --sizes 16k --mode fwd --iters 3 > /dev/null 2>&1); t profile; grep -v "^\s*$" /tmp/cubecl.log | cut -c1-300 | tail -150 >> $OUT/vulkan.txt; }
# 5. ptxas's register/spill report and the SASS of the head-dim-128 kernels (new build).
fits 60 ptx && { mkdir -p /tmp/ptx /tmp/sass; (CUBECL_CUDA_DUMP_PTX=/tmp/ptx timeout 30 /tmp/bin/kernel_bench --device cuda --sizes 16k --mode both --iters 2 --head-dim 128 > /dev/null 2>&1)
  (CUBECL_CUDA_DUMP_PTX=/tmp/ptx timeout 20 /tmp/bin/kernel_bench --device cuda --family persistent --sizes 16k --mode fwd --iters 2 --head-dim 64 > /dev/null 2>&1)
  for f in /tmp/ptx/*.ptx; do echo "## $f"; ptxas -arch=sm_90a -v "$f" -o /tmp/sass/k.cubin 2>&1 | grep -E "registers|spill|stack"; cuobjdump -sass /tmp/sass/k.cubin > "/tmp/sass/$(basename "$f" .ptx | tail -c 70).sass" 2>&1; done > $OUT/ptxas.txt 2>&1
  rm -f /tmp/sass/k.cubin; (cd /tmp && tar cJf $OUT/sass.tar.xz sass); t ptx; grep -c . $OUT/ptxas.txt; grep -E "spill" $OUT/ptxas.txt | sort | uniq -c | head; }
