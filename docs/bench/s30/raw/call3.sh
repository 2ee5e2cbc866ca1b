#!/bin/bash
# Session 30, call 3 (~580 s; `LIMIT` cuts it), on the warm machine of calls 1–2 (their CubeCL
# cache in target/environment spares NVRTC). Carry .dev33. Where the backward's time goes: the
# seed's fwd+bwd is 1.27× behind FlexAttention at head dim 64 (session 27) while its forward is
# near it, and no per-kernel breakdown of our backward exists.
# 1. Every kernel of fwd+bwd timed by ncu (`gpu__time_duration`, serialised launches) at 128K,
#    head dims 64 and 128 — the seed with the default and with the handed backward kernels
#    (`--family handoff-bwd`), LongNet with the default: per kernel name, its launches a step
#    and median µs (`breakdown.py`).
# 2. `ncu --set full` of one `dQ` and one `dK/dV` launch, seed 128K, head dim 64 (stall reasons,
#    per-instruction samples), as session 27 did for the forward.
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
fits() { [ $(( $(el) + $1 )) -lt ${LIMIT:-580} ] || { echo "== skip $2 at $(el) s"; return 1; }; }
mkdir -p /tmp/bin
[ -x /tmp/bin/new_bench ] || { xz -T4 -dc .dev33/bins.tar.xz | tar xf - -C /tmp/bin; chmod +x /tmp/bin/*; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/ncu.txt
# The seed with the default and with both backward kernels handed (`handoff-bwd`), LongNet
# with the default.
for run in "seed auto" "seed handoff-bwd" "longnet auto"; do
  set -- $run; pat=$1; fam=$2
  for hd in 64 128; do
    fits 75 "times $pat $fam d$hd" || continue
    # --iters 1: one read-back run, 3 warm-ups, 1 timed, 4 queued groups of 5 = 25 steps.
    (timeout 75 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
      /tmp/bin/new_bench --device cuda --head-dim $hd --mode fwdbwd --sizes 128k --iters 1 --patterns $pat --family $fam \
      > $OUT/times-$pat-$fam-d$hd.csv 2> $OUT/times-$pat-$fam-d$hd.err; echo "rc $?" >> $OUT/times-$pat-$fam-d$hd.err)
    echo "== times $pat $fam d$hd at $(el) s"
    python3 docs/bench/s30/raw/breakdown.py $OUT/times-$pat-$fam-d$hd.csv 25 | tee -a $OUT/ncu.txt
  done
done
for k in backward_dq_wgmma backward_dkdv_wgmma; do
  fits 100 "full $k" || continue
  (timeout 100 ncu --clock-control none --kernel-name regex:$k --launch-skip 2 --launch-count 1 --set full --import-source no -o $OUT/$k \
    /tmp/bin/new_bench --device cuda --head-dim 64 --mode fwdbwd --sizes 128k --iters 1 --patterns seed > $OUT/ncu-$k.txt 2>&1; echo rc $? >> $OUT/ncu-$k.txt
   ncu --import $OUT/$k.ncu-rep --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats --section SpeedOfLight > $OUT/ncu-$k-states.txt 2>&1
   ncu --import $OUT/$k.ncu-rep --page source --csv --print-source sass > $OUT/ncu-$k-sass.csv 2>&1; xz -T4 $OUT/$k.ncu-rep $OUT/ncu-$k-sass.csv)
  echo "== full $k at $(el) s"
  grep -E "Duration|Warp Cycles|Issued Ipc|Eligible|No Eligible|Achieved Occ|Registers|Compute \(SM\) Throughput|Memory Throughput|rc " $OUT/ncu-$k-states.txt $OUT/ncu-$k.txt 2>/dev/null | head -20
done
