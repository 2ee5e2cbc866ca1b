#!/usr/bin/env python3
"""pick.py AB.TXT: the device probe's `--pick` list for the families an A/B call just timed.

Per head dim, each family's rows (pattern, n) are compared with the median of the `auto` runs
of the same rows; a family whose geometric-mean ratio is below 0.98 at either head dim is a
candidate to become the default, and the probe must check it. Prints the probe indices of up
to three candidates, fastest first (the FlashAttention-3 forms, 20 and 19, when none wins), and
the ratios on stderr."""
import json, math, re, sys
from collections import defaultdict
from statistics import median

PROBE = {"handoff": 16, "tma-queries": 15, "moved-wide": 17, "moved-overlap": 18,
         "moved-wide-overlap": 19, "moved-wide-overlap-turns": 20, "moved-overlap-turns": 21,
         "moved": 22}
rows = defaultdict(lambda: defaultdict(list))  # (dim, family) -> (pattern, n) -> [ms]
dim = fam = None
for line in open(sys.argv[1]):
    if line.startswith("## "):
        m = re.search(r"--head-dim (\d+)", line)
        dim = int(m.group(1)) if m else None
        m = re.search(r"--family (\S+)", line)
        fam = m.group(1) if m else "auto"
    elif line.startswith("{") and dim:
        r = json.loads(line)
        if r.get("mode") == "fwd" and "median_ms" in r:
            rows[(dim, fam)][(r["pattern"], r["n"])].append(r["median_ms"])
best = {}
for (d, f), by_row in rows.items():
    base = rows.get((d, "auto"))
    if f == "auto" or not base:
        continue
    ratios = [median(ms) / median(base[k]) for k, ms in by_row.items() if k in base]
    if ratios:
        g = math.exp(sum(map(math.log, ratios)) / len(ratios))
        print(f"head dim {d}: {f} {g:.3f} of auto over {len(ratios)} rows", file=sys.stderr)
        if f in PROBE:
            best[f] = min(best.get(f, 9.0), g)
wins = sorted((g, f) for f, g in best.items() if g < 0.98)[:3]
print(",".join(str(PROBE[f]) for _, f in wins) or "20,19")
