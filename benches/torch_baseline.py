"""PyTorch baselines for the same presets as `examples/kernel_bench.rs` (run on the GPU machine).

seed    : one branch (n, 1), block 128, block offsets 0, +-1, +-2, +-4 -> FlexAttention block mask
longnet : branches [n/4, n/2, n] x [1, 2, 4], dense -> the torchscale way (gather each head class's
          rows per branch, dense FlexAttention with LSE per segment, scatter back, merge branches)
          and dense SDPA (FlashAttention-2) over the whole sequence for reference.
Prints one JSON object per row (median of triton.testing.do_bench, milliseconds).

python3 benches/torch_baseline.py [f16|bf16|f32] [fwd|fwdbwd|both] [d64|d128] [sizes...] [--no-dense]
                                  [--compile-only]
fwdbwd times forward plus backward with a random output gradient; peak_mem_bytes is
torch.cuda.max_memory_allocated() over the timed calls. --compile-only runs each row once and
times nothing: it fills Inductor's and Triton's on-disk caches (a fresh machine spends most of a
row's first minute compiling), so a later timed run of the same rows starts at once; its rows
say "compiled".
"""
import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from triton.testing import do_bench

# Many shapes (branches x head classes x sizes): raise the recompile limits so that dynamo never
# falls back to eager flex_attention (which materialises n x n scores).
for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit", "accumulated_recompile_limit"):
    if hasattr(torch._dynamo.config, name):
        setattr(torch._dynamo.config, name, 4096)
flex = torch.compile(flex_attention, dynamic=False)
DT = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


def seed_mask(n, block=128):
    def mask_mod(b, h, q, kv):
        d = (q // block) - (kv // block)
        a = d.abs()
        return (a == 0) | (a == 1) | (a == 2) | (a == 4)

    return create_block_mask(mask_mod, None, None, n, n, BLOCK_SIZE=block, _compile=True)


def torchscale(q, k, v, branches):
    b, h, n, d = q.shape
    outs, lses = [], []
    for w, r in branches:
        out = torch.zeros_like(q)
        lse = torch.full((b, h, n), float("-inf"), device=q.device, dtype=torch.float32)
        s_count = n // w
        for s in range(min(r, h)):
            heads = list(range(s, h, r))
            def gather(x):
                x = x[:, heads].reshape(b, len(heads), s_count, w, d)[:, :, :, s::r, :]
                m = x.shape[3]
                return x.permute(0, 2, 1, 3, 4).reshape(b * s_count, len(heads), m, d).contiguous(), m
            qg, m = gather(q)
            kg, _ = gather(k)
            vg, _ = gather(v)
            o, l = flex(qg, kg, vg, return_lse=True)
            o = o.reshape(b, s_count, len(heads), m, d).permute(0, 2, 1, 3, 4)
            l = l.reshape(b, s_count, len(heads), m).permute(0, 2, 1, 3)
            view_o = out[:, heads].reshape(b, len(heads), s_count, w, d)
            view_o[:, :, :, s::r, :] = o
            out[:, heads] = view_o.reshape(b, len(heads), n, d)
            view_l = lse[:, heads].reshape(b, len(heads), s_count, w)
            view_l[:, :, :, s::r] = l.float()
            lse[:, heads] = view_l.reshape(b, len(heads), n)
        outs.append(out)
        lses.append(lse)
    lse_all = torch.stack(lses)
    weights = torch.softmax(lse_all, dim=0).nan_to_num(0.0)
    return sum(wt.unsqueeze(-1).to(o.dtype) * o for wt, o in zip(weights, outs))


def main():
    dtype = DT[sys.argv[1] if len(sys.argv) > 1 else "f16"]
    args = sys.argv[2:]
    # --no-dense drops the dense SDPA row (the slowest to time at 128K) when only the peers matter.
    dense = "--no-dense" not in args
    compile_only = "--compile-only" in args
    args = [a for a in args if a not in ("--no-dense", "--compile-only")]
    modes = ["fwd"]
    if args and args[0] in ("fwd", "fwdbwd", "both"):
        modes = {"fwd": ["fwd"], "fwdbwd": ["fwdbwd"], "both": ["fwd", "fwdbwd"]}[args[0]]
        args = args[1:]
    d = 64
    if args and args[0].startswith("d") and args[0][1:].isdigit():
        d = int(args[0][1:])
        args = args[1:]
    sizes = [int(s[:-1]) * 1024 if s.endswith("k") else int(s) for s in (args or ["4k", "16k"])]
    b, h = 1, 8
    dev = torch.cuda.get_device_name()
    for n in sizes:
        rows = []
        mask = seed_mask(n)
        density = 1.0 - mask.sparsity() / 100.0  # block density; the seed blocks are all full
        rows.append(("torch-flex", "seed", density, lambda q, k, v: flex(q, k, v, block_mask=mask)))
        branches = [(n // 4, 1), (n // 2, 2), (n, 4)]
        dens = sum((w // r) ** 2 * (n // w) for w, r in branches) / (n * n)
        rows.append(("torch-torchscale", "longnet", dens, lambda q, k, v: torchscale(q, k, v, branches)))
        if dense:
            rows.append(("torch-sdpa", "dense", 1.0, lambda q, k, v: F.scaled_dot_product_attention(q, k, v)))
        for mode in modes:
            grad = mode == "fwdbwd"
            q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=dtype, requires_grad=grad) for _ in range(3))
            dout = torch.randn(b, h, n, d, device="cuda", dtype=dtype)
            for impl, pattern, density, fn in rows:
                if grad:
                    def call(fn=fn):
                        for t in (q, k, v):
                            t.grad = None
                        fn(q, k, v).backward(dout)
                else:
                    def call(fn=fn):
                        with torch.no_grad():
                            fn(q, k, v)
                status, ms, peak = "ok", None, None
                try:
                    call()
                    torch.cuda.synchronize()
                    if compile_only:
                        status = "compiled"
                    else:
                        torch.cuda.reset_peak_memory_stats()
                        ms = do_bench(call, warmup=25, rep=200, return_mode="median")
                        peak = torch.cuda.max_memory_allocated()
                except torch.OutOfMemoryError:
                    status = "oom"
                    torch.cuda.empty_cache()
                flops = 4 * d * density * h * n * n * (3.5 if grad else 1.0)
                print(json.dumps({"impl": impl, "backend": "cuda", "device": dev, "dtype": str(dtype).split(".")[-1],
                                  "batch": b, "heads": h, "head_dim": d, "n": n, "pattern": pattern,
                                  "density": round(density, 6), "mode": mode,
                                  "median_ms": None if ms is None else round(ms, 4),
                                  "tflops": None if ms is None else round(flops / ms / 1e9, 2),
                                  "peak_mem_bytes": peak, "status": status, "path": impl}), flush=True)


if __name__ == "__main__":
    main()
