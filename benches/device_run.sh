#!/usr/bin/env bash
# The H200 session script (see docs/benchmarks.md): runs on the device machine from the
# repository root, with the stripped, xz-compressed binaries in .dev/ (the SPIR-V builds in
# .dev-vulkan/: the two folders together pass a call's 64 MiB) and the Vulkan loader packages
# in .gl/ (carried). Sections: `startup`, `downstream`, `probe`,
# `probe-vulkan`, `bench-vulkan`, `sweep` (sizes from $SWEEP_SIZES), `sweep-fusion-off`,
# `sweep-d128`, `kernel-bench`, `scale`.
# Everything a section prints also goes to $OUT/<section>.txt.
#
#   bash benches/device_run.sh downstream probe sweep
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/bin
for f in .dev/*.xz .dev-vulkan/*.xz; do
  [ -e "$f" ] || continue
  b=/tmp/bin/$(basename "$f" .xz)
  [ -x "$b" ] || { xz -dc "$f" > "$b" && chmod +x "$b"; }
done
# Vulkan loader (the driver's ICD is on the machine; the loader is not).
for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
export PYTHONUNBUFFERED=1 RUST_BACKTRACE=1

run() { # name, command...: prints and keeps its output, with its wall time
  local name=$1; shift
  local t0=$(date +%s.%N)
  echo "== $name: $*" | tee -a "$OUT/log.txt"
  "$@" 2>&1 | tee "$OUT/$name.txt" | tail -n 40
  local rc=${PIPESTATUS[0]}
  echo "== $name: rc $rc, $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s" | tee -a "$OUT/log.txt"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
git log -1 --format='commit %H %s' 2>/dev/null | tee -a "$OUT/gpu.txt"

for section in "$@"; do
  case $section in
    startup)
      # A fresh machine: the first run compiles (NVRTC) and tunes; the second reads the
      # persistent caches (target/environment/default.db, `cubecl.toml`).
      rm -rf target/environment
      run startup-1 /tmp/bin/train_recall --device cuda --steps 3 --seq-len 8192 --batch 32 \
        --d-model 128 --block 64 --attention-dtype f16 --start-len 128 --model /tmp/recall.bpk
      run startup-2 /tmp/bin/train_recall --device cuda --steps 3 --seq-len 8192 --batch 32 \
        --d-model 128 --block 64 --attention-dtype f16 --start-len 128 --model /tmp/recall.bpk
      ls -la target/environment | tee -a "$OUT/log.txt"
      ;;
    downstream)
      for bin in downstream-defaults downstream-fusion-off; do
        for dev in ${DOWNSTREAM_DEVICES:-cuda wgpu}; do run "$bin-$dev" /tmp/bin/$bin $dev; done
      done
      ;;
    probe)
      run probe timeout "${PROBE_TIMEOUT:-540}" /tmp/bin/device_probe --device cuda --check "${PROBE_CHECKS:-all}"
      ;;
    probe-vulkan)
      # A probe built with `--features vulkan` (SPIR-V; carried as .dev-vulkan/device_probe_vulkan.xz):
      # the `cmma` kernels on the driver's cooperative matrices, against the same references.
      run probe-vulkan /tmp/bin/device_probe_vulkan --device vulkan --check basics,strategies,forward,gradients
      ;;
    bench-vulkan)
      # Ours on Vulkan (SPIR-V) and on CUDA, same card, same call (issue 20's ratio).
      run bench-vulkan /tmp/bin/kernel_bench_vulkan --device vulkan --sizes "${VULKAN_SIZES:-16k,128k}" --mode both --iters 5
      run bench-cuda /tmp/bin/kernel_bench --device cuda --sizes "${VULKAN_SIZES:-16k,128k}" --mode both --iters 5
      ;;
    sweep)
      run sweep /tmp/bin/xtask bench --backend cuda --sizes "${SWEEP_SIZES:-4k,16k,64k,128k}" --pattern seed,longnet \
        --mode both --iters 10 --out "$OUT/sweep"
      # The peers at the same sizes (`64k` -> 65536).
      sizes=$(python3 -c "import sys; print(*(int(s[:-1]) * 1024 if s.endswith('k') else int(s) for s in sys.argv[1].split(',')))" "${SWEEP_SIZES:-4k,16k,64k,128k}")
      run torch python3 benches/torch_baseline.py f16 both $sizes
      ;;
    sweep-fusion-off)
      # The same sweep built without Burn's defaults (no Fusion): `xtask-fusion-off`.
      run sweep-fusion-off /tmp/bin/xtask-fusion-off bench --backend cuda --sizes "${SWEEP_SIZES:-64k,128k}" \
        --pattern seed,longnet --mode both --iters 10 --out "$OUT/sweep-fusion-off"
      ;;
    sweep-d128)
      run sweep-d128 /tmp/bin/xtask bench --backend cuda --sizes 64k,128k --pattern seed,longnet \
        --mode both --iters 10 --head-dim 128 --out "$OUT/sweep-d128"
      run torch-d128 python3 benches/torch_baseline.py f16 both d128 65536 131072
      ;;
    kernel-bench)
      # Ours alone at 4K and 16K (the sweep's rows without Burn's dense attention).
      run kernel-bench /tmp/bin/kernel_bench --device cuda --sizes 4k,16k --mode both --iters 10
      ;;
    scale)
      run scale timeout "${SCALE_TIMEOUT:-540}" /tmp/bin/device_probe --device cuda --check chunks,large,scale
      ;;
    *) echo "unknown section $section" ;;
  esac
done
