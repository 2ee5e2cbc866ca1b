#!/usr/bin/env python3
"""breakdown.py TIMES.CSV STEPS: per kernel name, launches a step and median µs.

TIMES.CSV is `ncu --metrics gpu__time_duration.sum --csv` over a `kernel_bench` run of STEPS
steps (fwd+bwd each); ncu serialises the launches, so the per-kernel times add up to a step
without overlap between kernels. Prints one line per kernel name, largest share first, then
the step's sum."""
import csv, io, re, sys
from collections import defaultdict
from statistics import median

path, steps = sys.argv[1], int(sys.argv[2])
text = open(path, errors="replace").read()
# ncu's own lines (==PROF==, the bench's JSON) come before the CSV header.
start = text.find('"ID"')
if start < 0:
    sys.exit(f"{path}: no ncu CSV")
times = defaultdict(list)
for row in csv.DictReader(io.StringIO(text[start:])):
    if row.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = re.sub(r"_[0-9a-f]{8}$", "", row["Kernel Name"].split("(")[0])
    value = float(row["Metric Value"].replace(",", ""))
    unit = row.get("Metric Unit", "ns")
    times[name].append(value * {"ns": 1e-3, "nsecond": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}.get(unit, 1e-3))
rows = sorted(((len(v) / steps * median(v), len(v) / steps, median(v), k) for k, v in times.items()), reverse=True)
total = sum(r[0] for r in rows)
print(f"{path}: {sum(len(v) for v in times.values())} launches, {steps} steps, {total:.1f} µs a step")
for per_step, count, med, name in rows:
    print(f"  {per_step:9.1f} µs {100 * per_step / total:5.1f} %  {count:5.2f} a step × {med:8.1f} µs  {name[:90]}")
