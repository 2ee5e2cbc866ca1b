#!/usr/bin/env python3
"""Summarises an `ncu --page source --csv --print-source sass` export (xz or plain): samples and
executed instructions by opcode, stall reasons, and code regions (runs of instructions with the
same execution count: per tile, per chunk, producer). Usage: sass_profile.py callH-sass64.csv.xz"""
import collections, csv, io, lzma, sys

path = sys.argv[1]
text = lzma.open(path, "rt").read() if path.endswith(".xz") else open(path).read()
rows = list(csv.reader(io.StringIO(text)))
hdr, data = rows[1], rows[2:]
i_s, i_e = hdr.index("Warp Stall Sampling (All Samples)"), hdr.index("Instructions Executed")
stalls = {h: hdr.index(h) for h in hdr if h.startswith("stall_") and "Not Issued" not in h}
samples = sum(int(r[i_s]) for r in data)
executed = sum(int(r[i_e]) for r in data)
op_s, op_e, why = collections.Counter(), collections.Counter(), collections.Counter()
for r in data:
    t = r[1].split()
    op = (t[1] if t[0].startswith("@") else t[0]).split(".")[0]
    op_s[op] += int(r[i_s])
    op_e[op] += int(r[i_e])
    for h, i in stalls.items():
        why[h[6:]] += int(r[i] or 0)
print(f"{samples} samples, {executed} warp instructions executed")
print("stalls:", ", ".join(f"{k} {100 * v / sum(why.values()):.1f}%" for k, v in why.most_common(8)))
for op, c in op_s.most_common(16):
    print(f"  {op:10s} {100 * c / samples:5.1f}% of samples  {100 * op_e[op] / executed:5.1f}% of executed")
print("regions (same execution count):")
start = 0
for n in range(1, len(data) + 1):
    if n == len(data) or data[n][i_e] != data[start][i_e]:
        s = sum(int(r[i_s]) for r in data[start:n])
        if s > 0.01 * samples:
            ops = collections.Counter((r[1].split()[1] if r[1].split()[0].startswith("@") else r[1].split()[0]).split(".")[0]
                                      for r in data[start:n])
            print(f"  {start:5d}-{n - 1:5d} x{int(data[start][i_e]):8d}: {n - start:4d} instructions, "
                  f"{100 * s / samples:4.1f}% of samples; {', '.join(f'{o} {c}' for o, c in ops.most_common(6))}")
        start = n
