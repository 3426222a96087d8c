"""Benchmark of the VQ-codebook ops against the eager code users run today.

Diffusion Reward / VQ-Diffusion compute these with float64 softmax / log-softmax / KL tensors:

    logp = torch.log_softmax(logits.double(), dim=cd); H = -(logp.exp() * logp).sum(cd)   # entropy
    nll  = -torch.log_softmax(logits.double(), dim=cd).gather(cd, target)                 # NLL
    kl   = (a.exp() * (a - b)).sum(cd)   (float64)                                        # multinomial_kl
    lc   = (x0.exp() * p).sum(cd)        (float64)                                        # log_categorical

each followed by a sum over the frame's tokens. We time that ("eager f64"), the same in float32
("eager f32"), and the fused op (default backend for the device), forward and backward (the
backward alone, `torch.autograd.grad` on a retained graph), at B·L = 65,536 tokens (B = 1024
frames of L = 64), K = 1024 (and K + 1 = 1025 for the KL / log-categorical of VQ-Diffusion's mask
class), in both layouts: [B, L, K] (class_dim=-1) and [B, K, L] (class_dim=1).

Bandwidth: the machine's is measured in the same run with a large tensor copy (bytes read +
written / time, best of several, re-measured before every case and the maximum kept, since the
machine may be shared); an op's fraction is (bytes it must read + write) / time / that bandwidth.
Backward ops return fresh gradient tensors as large as the inputs; `alloc+touch grads` is the time
to allocate and first-touch that many bytes (page faults), the floor for any backward.

    python benchmarks/bench_codebook.py            # full run (a few minutes on 2 CPU cores)
    python benchmarks/bench_codebook.py --quick    # seconds: small sizes, 1 repeat
    python benchmarks/bench_codebook.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

import mmreward.ops as mops
from mmreward.ops import _backend

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine_info import machine  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    _sync(device)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bandwidth(device, nbytes, repeats):
    """Peak copy bandwidth (bytes read + written per second, best of `repeats`; buffers pre-faulted)."""
    x = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    y = torch.empty_like(x)
    y.copy_(x)
    ts = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        y.copy_(x)
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return 2 * x.numel() * 4 / min(ts)


def alloc_touch(device, nbytes, n, repeats):
    """Time to allocate `n` fresh buffers of `nbytes` and write them once (first-touch page faults):
    the floor of any backward that returns new gradient tensors."""
    def f():
        return [torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(0) for _ in range(n)]

    return timeit(f, device, repeats)


# ------------------------------------------------------------------------------------------------
# eager baselines (as written in Diffusion Reward / VQ-Diffusion), reducing over the frame
# ------------------------------------------------------------------------------------------------
def eager(op, dtype):
    def entropy(z, cd):
        logp = torch.log_softmax(z.to(dtype), dim=cd)
        return -(logp.exp() * logp).sum(cd).sum(1)

    def nll(z, t, cd):
        logp = torch.log_softmax(z.to(dtype), dim=cd)
        return -logp.gather(cd, t.unsqueeze(cd)).squeeze(cd).sum(1)

    def kl(a, b, cd):
        a, b = a.to(dtype), b.to(dtype)
        return (a.exp() * (a - b)).sum(cd).sum(1)

    def logcat(a, b, cd):
        a, b = a.to(dtype), b.to(dtype)
        return (a.exp() * b).sum(cd).sum(1)

    return {"entropy": entropy, "nll": nll, "kl": kl, "logcat": logcat}[op]


def fused(op):
    def entropy(z, cd):
        return mops.codebook_entropy(z, class_dim=cd)

    def nll(z, t, cd):
        return mops.codebook_nll(z, t, class_dim=cd)

    def kl(a, b, cd):
        return mops.categorical_kl(a, b, class_dim=cd)

    def logcat(a, b, cd):
        return mops.log_categorical(a, b, class_dim=cd)

    return {"entropy": entropy, "nll": nll, "kl": kl, "logcat": logcat}[op]


def make_inputs(op, B, L, K, cd, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    shape = (B, K, L) if cd == 1 else (B, L, K)
    if op in ("entropy", "nll"):
        z = (torch.randn(shape, generator=g) * 3).to(device)
        if op == "entropy":
            return [z], []
        t = torch.randint(0, K, (B, L), generator=g).to(device)
        return [z], [t]
    a = torch.log_softmax(torch.randn(shape, generator=g) * 3, dim=cd).clamp_(-70, 0).to(device)
    b = torch.log_softmax(torch.randn(shape, generator=g) * 3, dim=cd).clamp_(-70, 0).to(device)
    return [a, b], []


def run_case(op, B, L, K, cd, device, repeats, eager_repeats, results, bw_state, bw_bytes):
    bw_state["bw"] = max(bw_state["bw"], bandwidth(device, bw_bytes, 3))  # re-measured: shared machines vary
    bw = bw_state["bw"]
    diff, rest = make_inputs(op, B, L, K, cd, device)
    elem = diff[0].element_size()
    n = B * L * K
    row = {"op": op, "B": B, "L": L, "K": K, "class_dim": cd, "layout": "[B,K,L]" if cd == 1 else "[B,L,K]"}
    impls = [("fused", fused(op), repeats), ("eager_f32", eager(op, torch.float32), eager_repeats),
             ("eager_f64", eager(op, torch.float64), eager_repeats)]
    xs = [x.detach().requires_grad_(False) for x in diff]

    def fwd(fn):
        with torch.no_grad():
            return fn(*xs, *rest, cd)

    def bwd_time(fn):
        """Seconds of one backward (the graph is built outside the timed region)."""
        xg = [x.detach().clone().requires_grad_(True) for x in diff]
        out = fn(*xg, *rest, cd)
        go = torch.ones_like(out)
        _sync(device)
        t0 = time.perf_counter()
        torch.autograd.grad(out, xg, go)
        _sync(device)
        return time.perf_counter() - t0

    for _, fn, _ in impls:  # warm-up
        fwd(fn)
        bwd_time(fn)
    times = {name: {"fwd": [], "bwd": []} for name, _, _ in impls}
    for r in range(max(reps for _, _, reps in impls)):  # rounds interleave the implementations
        for name, fn, reps in impls:
            if r >= reps:
                continue
            _sync(device)
            t0 = time.perf_counter()
            fwd(fn)
            _sync(device)
            times[name]["fwd"].append(time.perf_counter() - t0)
            times[name]["bwd"].append(bwd_time(fn))
    for name, _, _ in impls:
        row[f"{name}_fwd_s"] = statistics.median(times[name]["fwd"])
        row[f"{name}_bwd_s"] = statistics.median(times[name]["bwd"])
    for d in ("fwd", "bwd"):
        row[f"speedup_{d}_vs_f64"] = row[f"eager_f64_{d}_s"] / row[f"fused_{d}_s"]
        row[f"speedup_{d}_vs_f32"] = row[f"eager_f32_{d}_s"] / row[f"fused_{d}_s"]
    n_in = len(diff)
    fwd_bytes = n_in * n * elem
    bwd_bytes = 2 * n_in * n * elem  # read the inputs, write one gradient per input
    row["fused_fwd_GBps"] = fwd_bytes / row["fused_fwd_s"] / 1e9
    row["fused_bwd_GBps"] = bwd_bytes / row["fused_bwd_s"] / 1e9
    row["fused_fwd_bw_frac"] = fwd_bytes / row["fused_fwd_s"] / bw
    row["fused_bwd_bw_frac"] = bwd_bytes / row["fused_bwd_s"] / bw
    row["eager_f64_fwd_GBps_of_logits"] = fwd_bytes / row["eager_f64_fwd_s"] / 1e9
    row["copy_bandwidth_GBps"] = bw / 1e9
    row["alloc_first_touch_grads_s"] = alloc_touch(device, n * elem, n_in, 3)
    results.append(row)
    print(
        f"{op:8s} {row['layout']:8s} K={K:5d} | fused fwd {row['fused_fwd_s']*1e3:8.1f} ms "
        f"bwd {row['fused_bwd_s']*1e3:8.1f} ms | eager f64 fwd {row['eager_f64_fwd_s']*1e3:8.1f} "
        f"bwd {row['eager_f64_bwd_s']*1e3:8.1f} | eager f32 fwd {row['eager_f32_fwd_s']*1e3:8.1f} "
        f"bwd {row['eager_f32_bwd_s']*1e3:8.1f} | x f64 {row['speedup_fwd_vs_f64']:5.1f}/{row['speedup_bwd_vs_f64']:5.1f}"
        f"  x f32 {row['speedup_fwd_vs_f32']:5.1f}/{row['speedup_bwd_vs_f32']:5.1f} | "
        f"BW {row['fused_fwd_bw_frac']*100:4.0f}%/{row['fused_bwd_bw_frac']*100:4.0f}% of {bw/1e9:.1f} GB/s | "
        f"alloc+touch grads {row['alloc_first_touch_grads_s']*1e3:6.1f} ms",
        flush=True,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke run (small sizes)")
    ap.add_argument("--json", help="save the results here")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--ops", default="entropy,nll,kl,logcat")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.quick:
        B, L, repeats, eager_repeats, bw_bytes = 32, 64, 1, 1, 64 << 20
    else:
        B, L, repeats, eager_repeats, bw_bytes = 1024, 64, args.repeats or 7, args.repeats or 3, 1 << 30
    backend = _backend.select("codebook_entropy", device)
    bw_state = {"bw": bandwidth(device, bw_bytes, 5 if not args.quick else 2)}
    print(f"device={device} backend={backend} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"copy bandwidth={bw_state['bw']/1e9:.1f} GB/s (read+write, best of 5; re-measured per case, max kept)  "
          f"B*L={B*L}")
    machine_before = machine(device=str(device))
    results = []
    for op in args.ops.split(","):
        Ks = (1024, 1025) if op in ("kl", "logcat") else (1024,)
        for K in Ks:
            for cd in (-1, 1):
                run_case(op, B, L, K, cd, device, repeats, eager_repeats, results, bw_state, bw_bytes)
    bw = bw_state["bw"]
    meta = {
        "device": str(device),
        "backend": backend,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": machine_before["cpu"],
        "machine": machine_before,
        "load_average_after": machine()["load_average"],
        "rounds": "implementations interleaved round by round; median per implementation",
        "copy_bandwidth_GBps": bw / 1e9,
        "tokens": B * L,
        "quick": args.quick,
        "peak_memory": "not measured on CPU" if device.type == "cpu" else "see torch.cuda.max_memory_allocated",
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
        print(f"saved {args.json}")


if __name__ == "__main__":
    main()
