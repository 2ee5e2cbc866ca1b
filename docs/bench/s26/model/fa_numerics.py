# FlashAttention's numerics against two f16 yardsticks (session 26; numpy, CPU). One head,
# dense causal attention, n = 1024, unit normal inputs rounded to f16. Run: python3
# fa_numerics.py (numpy). Columns: the largest error against f64 of dq/dk/dv for dense
# attention in f16 throughout (torch-like, "naive"), for FlashAttention's numerics (f32
# scores, P and dS rounded to f16 for the products, delta from the rounded output: "ours"),
# and for a path with f32 between its ops (inputs and outputs rounded: "f32 inside").
import numpy as np
r16 = lambda x: x.astype(np.float16).astype(np.float32)
def mm(a, b):  # f16 operands, f32 accumulate (tensor cores)
    return (a.astype(np.float32) @ b.astype(np.float32))
def run(n, d, seed, causal=True):
    rng = np.random.default_rng(seed)
    q, k, v, do = [r16(rng.standard_normal((n, d)).astype(np.float32)) for _ in range(4)]
    scale = 1 / np.sqrt(d)
    mask = np.tril(np.ones((n, n), bool)) if causal else np.ones((n, n), bool)
    # truth in f64
    Q, K, V, DO = [x.astype(np.float64) for x in (q, k, v, do)]
    S = np.where(mask, Q @ K.T * scale, -np.inf)
    P = np.exp(S - S.max(1, keepdims=True)); P /= P.sum(1, keepdims=True)
    O = P @ V
    dP = DO @ V.T; dS = P * (dP - (dP * P).sum(1, keepdims=True))
    tq, tk, tv = dS @ K * scale, dS.T @ Q * scale, P.T @ DO
    # naive in f16 (torch-like: every op's output rounded to f16; softmax in f32 inside)
    s = r16(mm(q, k.T)); s = r16(s * scale); s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(1, keepdims=True)); p = r16(p / p.sum(1, keepdims=True))
    o = r16(mm(p, v))
    dp = r16(mm(do, v.T)); ds = r16(p * (dp - (dp * p).sum(1, keepdims=True)))
    ds2 = r16(ds * scale)
    nq, nk, nv = r16(mm(ds2, k)), r16(mm(ds2.T, q)), r16(mm(p.T, do))
    # FlashAttention numerics (ours): f32 scores, P and dS rounded for the products, Δ from rounded O
    s = np.where(mask, mm(q, k.T) * scale, -np.inf)
    m = s.max(1, keepdims=True); e = np.exp(s - m); l = e.sum(1, keepdims=True)
    o_f = r16(mm(r16(e), v) / l); lse = m + np.log(l)
    delta = (do * o_f).sum(1, keepdims=True)
    pf = np.exp(s - lse); dpf = mm(do, v.T); dsf = pf * (dpf - delta)
    fq, fk, fv = r16(mm(r16(dsf), k) * scale), r16(mm(r16(dsf).T, q) * scale), r16(mm(r16(pf).T, do))
    # the same with Δ from the unrounded O
    o_x = mm(r16(e), v) / l
    dsx = pf * (dpf - (do * o_x).sum(1, keepdims=True))
    xq = r16(mm(r16(dsx), k) * scale)
    # f32 inside, outputs rounded (a reference path that keeps f32 between its ops)
    s3 = np.where(mask, mm(q, k.T) * scale, -np.inf); p3 = np.exp(s3 - s3.max(1, keepdims=True)); p3 /= p3.sum(1, keepdims=True)
    o3 = mm(p3, v); dp3 = mm(do, v.T); ds3 = p3 * (dp3 - (dp3 * p3).sum(1, keepdims=True))
    f32q = r16(mm(ds3, k) * scale)
    err = lambda a, b: np.abs(a - b).max()
    return dict(naive=(err(nq, tq), err(nk, tk), err(nv, tv)), ours=(err(fq, tq), err(fk, tk), err(fv, tv)),
                ours_exact_delta_dq=err(xq, tq), f32in=err(f32q, tq), out=(err(o, O), err(o_f, O)))
for d in (64, 128):
    for seed in range(3):
        r = run(1024, d, seed)
        print(d, seed, "naive dq/dk/dv %.2e %.2e %.2e" % r['naive'], "| ours %.2e %.2e %.2e" % r['ours'],
              "| ours dq, exact Δ %.2e" % r['ours_exact_delta_dq'], "| out naive/ours %.2e %.2e" % r['out'],
              "| dq ratio %.2f" % (r['ours'][0] / r['naive'][0]), "| f32-inside dq %.2e, ours/f32in %.2f" % (r['f32in'], r['ours'][0] / r['f32in']))
