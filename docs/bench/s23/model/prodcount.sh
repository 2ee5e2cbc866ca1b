#!/bin/bash
# prodcount.sh X.cubin: the smallest loop holding >= 32 LDGSTS (the producer warp's chunk in the head-dim-64
# forward): its instruction count, its LDGSTS and the commonest opcodes; like ../../s22/model/loopcount.sh
# for the consumers.
export PATH=$PATH:/tmp/cudapip/nvdis/nvidia/cu13/bin:/tmp/cudapip/cuobj/nvidia/cu13/bin
cuobjdump -sass "$1" | grep -oE "/\*[0-9a-f]{4,5}\*/\s+[^;]+;" | python3 -c '
import re, sys
from collections import Counter
ins = []
for line in sys.stdin:
    m = re.match(r"/\*([0-9a-f]+)\*/\s+(.*);", line.strip())
    if m:
        ins.append((int(m.group(1), 16), m.group(2)))
h = [a for a, b in ins if "LDGSTS" in b]
best = None
for a, b in ins:
    m = re.search(r"BRA (0x[0-9a-f]+)", b)
    if m:
        t = int(m.group(1), 16)
        if t <= h[0] < a and sum(1 for x in h if t <= x <= a) >= 32:
            if best is None or a - t < best[1] - best[0]:
                best = (t, a)
t, a = best
ops = [re.sub(r"^@!?U?P[0-9T] ", "", b).split()[0].split(".")[0] for x, b in ins if t <= x <= a]
top = ", ".join(f"{k} {v}" for k, v in Counter(ops).most_common(12))
print(f"loop {hex(t)}..{hex(a)}: {len(ops)} instructions, {sum(1 for x in h if t<=x<=a)} LDGSTS; {top}")
'
