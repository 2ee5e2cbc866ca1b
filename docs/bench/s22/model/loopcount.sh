#!/bin/bash
# loopcount.sh X.cubin [OPCODE MIN]: the smallest loop (a backward branch) holding at least MIN
# instructions of OPCODE — by default 8 HGMMA, the consumers' whole chunk step; `LDGSTS 32` gives
# the head-dim-64 forward's producer chunk. Its instruction count, its OPCODE count and the
# commonest opcodes: the issue cost a chunk, statically (every path of its body counted).
export PATH=$PATH:/tmp/cudapip/nvdis/nvidia/cu13/bin:/tmp/cudapip/cuobj/nvidia/cu13/bin
cuobjdump -sass "$1" | grep -oE "/\*[0-9a-f]{4,5}\*/\s+[^;]+;" | OP=${2:-HGMMA} MIN=${3:-8} python3 -c '
import os, re, sys
from collections import Counter
op, least = os.environ["OP"], int(os.environ["MIN"])
ins = []
for line in sys.stdin:
    m = re.match(r"/\*([0-9a-f]+)\*/\s+(.*);", line.strip())
    if m:
        ins.append((int(m.group(1), 16), m.group(2)))
h = [a for a, b in ins if op in b]
best = None
for a, b in ins:
    m = re.search(r"BRA (0x[0-9a-f]+)", b)
    if m:
        t = int(m.group(1), 16)
        if t <= h[0] < a and sum(1 for x in h if t <= x <= a) >= least:
            if best is None or a - t < best[1] - best[0]:
                best = (t, a)
t, a = best
ops = [re.sub(r"^@!?U?P[0-9T] ", "", b).split()[0].split(".")[0] for x, b in ins if t <= x <= a]
top = ", ".join(f"{k} {v}" for k, v in Counter(ops).most_common(14))
print(f"loop {hex(t)}..{hex(a)}: {len(ops)} instructions, {sum(1 for x in h if t <= x <= a)} {op}; {top}")
'
