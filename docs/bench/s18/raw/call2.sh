#!/bin/bash
# Session 18, call 2 (carry .dev18d): old = lazy-rescale + the f32 read-back (main's Hopper
# ring: libcu++ waits); new = s18 (the PTX ring, lazy and persistent opt-in). Interleaved
# twice, fwd and fwd+bwd at head dims 64 and 128; the new one's opt-in tunings; the peers.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
t() { echo "== $1 done at $(el) s"; }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-330} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
for f in .dev18d/*.xz; do b=/tmp/bin/$(basename $f .xz); xz -dc $f > $b; chmod +x $b; done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
for r in 1; do for d in 64 128; do for bin in old_bench kernel_bench; do
  fits 45 "$bin d$d r$r" || continue
  echo "## $bin d$d run $r" >> $OUT/ab.txt
  (timeout 45 /tmp/bin/$bin --device cuda --head-dim $d --sizes 64k,128k --mode both --iters 10 >> $OUT/ab.txt 2>&1)
done; done; t "ab run $r"; done
for fam in persistent lazy; do for d in 64 128; do fits 25 $fam || continue; echo "## $fam new d$d" >> $OUT/ab.txt; (timeout 25 /tmp/bin/kernel_bench --device cuda --family $fam --head-dim $d --sizes 64k,128k --mode fwd --iters 10 >> $OUT/ab.txt 2>&1); done; done; t families
for d in 128 64; do fits 80 torch$d && (timeout 80 python3 benches/torch_baseline.py f16 both d$d 65536 131072 > $OUT/torch-d$d.txt 2>&1); t torch$d; done
for r in 2; do for d in 64 128; do for bin in old_bench kernel_bench; do
  fits 45 "$bin d$d r$r" || continue
  echo "## $bin d$d run $r" >> $OUT/ab.txt
  (timeout 45 /tmp/bin/$bin --device cuda --head-dim $d --sizes 64k,128k --mode both --iters 10 >> $OUT/ab.txt 2>&1)
done; done; t "ab run $r"; done
grep -oE '^## .*|"pattern":"[a-z]+"|"n":[0-9]+|"mode":"[a-z+]+"|"median_ms":[0-9.]+|"status":"[^"]*"' $OUT/ab.txt | paste -sd' ' | sed 's/## /\n## /g' | sed 's/"pattern"://g; s/"median_ms"://g; s/"mode"://g; s/"n"://g; s/"//g'
grep -hoE '"impl": "[a-z-]+"|"head_dim": [0-9]+|"n": [0-9]+|"pattern": "[a-z]+"|"mode": "[a-z]+"|"median_ms": [0-9.]+' $OUT/torch-d*.txt | paste -sd' ' | sed 's/"impl"/\n/g; s/"//g'
