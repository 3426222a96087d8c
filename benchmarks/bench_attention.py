"""Benchmark of ``mmreward.ops.attention`` against the eager attention users run today.

VQ-Diffusion's official model (Diffusion Reward's Meta-World / Adroit config) has 16 heads of
width 8 over an 8×8 token grid; its blocks attend over the frame's 64 tokens (self) and the two
history frames' 128 tokens (cross). The official code writes attention out (``q @ k.T``, softmax,
``@ v``); the project's model before this op called PyTorch's ``scaled_dot_product_attention``.
Both are timed here with the transpose + reshape that feeds the output projection, against
``mmreward.ops.attention`` (whose output is already in that layout), on the shapes of scoring one
100-frame episode (B = 100 windows), forward only (scoring runs without gradients), float32 and
bfloat16, one thread unless ``--threads``; rounds interleaved, median reported.

    python benchmarks/bench_attention.py                    # ~1 min
    python benchmarks/bench_attention.py --quick            # seconds
    python benchmarks/bench_attention.py --json benchmarks/results/attention_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import mmreward.ops as mops


def written_out(q, k, v):
    """The official VQ-Diffusion attention: scores, softmax, weighted values, heads merged."""
    B, H, L, D = q.shape
    att = torch.softmax((q @ k.transpose(-2, -1)) * (1.0 / D ** 0.5), dim=-1)
    return (att @ v).transpose(1, 2).reshape(B, L, H * D)


def sdpa(q, k, v):
    B, H, L, D = q.shape
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, H * D)


def fused(q, k, v):
    return mops.attention(q, k, v).flatten(2)


def heads(B, L, H, D, dtype, g):
    """q, k or v as the model makes them: a [B, L, H·D] projection viewed as [B, H, L, D]."""
    return torch.randn(B, L, H * D, generator=g).to(dtype).view(B, L, H, D).transpose(1, 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=100, help="B: windows scored in one batch (one episode)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="B = 8, 3 repeats")
    ap.add_argument("--json", help="save the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.windows, args.repeats = 8, 3
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    H, D, Lq = 16, 8, 64
    impls = {"written out (official)": written_out, "scaled_dot_product_attention": sdpa, "mmreward": fused}
    results = []
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            for kind, Lk in (("self", 64), ("cross", 128)):
                q, k, v = heads(args.windows, Lq, H, D, dtype, g), heads(args.windows, Lk, H, D, dtype, g), heads(
                    args.windows, Lk, H, D, dtype, g)
                expected = written_out(q.double(), k.double(), v.double())
                err = {n: float((f(q, k, v).double() - expected).abs().max()) for n, f in impls.items()}
                times = {n: [] for n in impls}
                for _ in range(args.repeats):  # interleaved rounds
                    for n, f in impls.items():
                        t0 = time.perf_counter()
                        f(q, k, v)
                        times[n].append(time.perf_counter() - t0)
                med = {n: statistics.median(t) * 1e3 for n, t in times.items()}
                row = {"dtype": str(dtype).replace("torch.", ""), "attention": kind, "B": args.windows, "heads": H,
                       "head_dim": D, "Lq": Lq, "Lk": Lk, "median_ms": med, "max_abs_err_vs_float64": err,
                       "speedup_vs_sdpa": med["scaled_dot_product_attention"] / med["mmreward"],
                       "speedup_vs_written_out": med["written out (official)"] / med["mmreward"]}
                results.append(row)
                print(f"{row['dtype']:>8} {kind:>5} (B {args.windows}, Lk {Lk}): " + "  ".join(
                    f"{n} {t:.2f} ms" for n, t in med.items())
                    + f"  -> {row['speedup_vs_sdpa']:.2f}x vs sdpa, {row['speedup_vs_written_out']:.2f}x vs written out")
    meta = {"benchmark": "attention", "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
            "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
