#!/bin/bash
# Session 21, call 1 (carry .dev21: kernel_bench and device_probe built from main, b5cb9cb or later: the
# overlap switch; with docs/bench/s21/causal-value-guard.diff applied, its NaN check too). The
# Hopper forward's softmax overlapping its own P·V (`overlap`, `overlap-lazy`) and the wide
# chunks against the default in the same binary, head dims 128 and 64, forward; the probe's
# strategies with the new switches first; Flex/torchscale forward peers; the forward kernels'
# CUDA C++ and PTX (CubeCL cache misses: run from /tmp) for ptxas -v on the CPU machine; the
# default's fwd+bwd last (its backward kernels' PTX too).
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-585} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
R=$PWD; mkdir -p /tmp/bin
for f in .dev21/*.xz; do (xz -T4 -dc $f > /tmp/bin/$(basename $f .xz)) & done; wait; chmod +x /tmp/bin/*
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/ab.txt
run() { fits $1 "$*" || return; echo "## $*" >> $OUT/ab.txt; (cd /tmp && CUBECL_CUDA_DUMP_PTX=/tmp/dump CUBECL_CUDA_DUMP_CPP=/tmp/dump timeout $1 /tmp/bin/new_bench --device cuda "${@:2}" --sizes 64k,128k --iters 20 >> $OUT/ab.txt 2>&1); echo "== $* at $(el) s"; }
for f in auto overlap; do run 40 --head-dim 128 --mode fwd --family $f; done
for f in auto overlap; do run 40 --head-dim 64 --mode fwd --family $f; done
fits 130 probe && { (cd /tmp && timeout 130 /tmp/bin/new_probe --device cuda --check strategies --dtypes f16 --families 3 > $OUT/strategies.txt 2>&1; echo rc $? >> $OUT/strategies.txt); echo "== probe at $(el) s"; }
for d in 64 128; do fits 60 torch$d && { (timeout 60 python3 benches/torch_baseline.py f16 fwd d$d 65536 131072 --no-dense > $OUT/torch-d$d.txt 2>&1); echo "== torch$d at $(el) s"; }; done
for f in overlap-lazy wide-chunks overlap auto; do run 25 --head-dim 128 --mode fwd --family $f; done
for f in overlap-lazy wide-chunks overlap auto; do run 25 --head-dim 64 --mode fwd --family $f; done
for d in 64 128; do run 45 --head-dim $d --mode both --family auto; done
(cd /tmp && tar cJf $OUT/dump.tar.xz dump 2>/dev/null); ls -la $OUT
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g; s/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z]+"|"median_ms": [0-9.]+' $OUT/torch-d*.txt | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
sed 's/Sm80(Sm80Tuning { forward_tiles: 2, dq_tiles: 2, fused_dq: false, forward_min_blocks: 0, dkdv_min_blocks: 3, //' $OUT/strategies.txt 2>/dev/null | grep -E "^F16 |over the bar|^rc|panicked|blocks of" | cut -c1-330
