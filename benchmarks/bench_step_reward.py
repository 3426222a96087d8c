"""Benchmark: fused PRM step scoring / BCE training loss vs the full-vocabulary path users run.

Baseline (what PRM training / scoring code does today)::

    logits = lm_head(h)                      # (N, V)  -- 10 GB at 16k tokens x 152k vocab, fp32
    two = logits[:, [good, bad]][step_idx]   # (S, 2)
    loss = BCE(softmax(two)[:, 0], labels)   # + autograd backward through lm_head

Fused: ``mmreward.ops.step_bce_loss(h, w_good, w_bad, labels, step_index=step_idx)`` (and
``step_scores`` for scoring), which reads only the S step rows of h and the two head rows.

Every configuration runs in a fresh subprocess; peak memory is the growth of ``ru_maxrss`` over
the process's RSS after the inputs are allocated (so the inputs themselves, h and the LM head, are
not counted for either path). Also times segment_reduce / first_below / refine_process_rewards
against eager per-sequence Python loops.

    python benchmarks/bench_step_reward.py                  # full size (slow baseline: minutes, ~13 GB)
    python benchmarks/bench_step_reward.py --tokens 4096 --vocab 32768
    python benchmarks/bench_step_reward.py --quick          # seconds
    python benchmarks/bench_step_reward.py --json out.json
    python benchmarks/bench_step_reward.py --device cuda    # GPU: fused under the `cuda` and `triton` backends

On a GPU, peak memory is ``torch.cuda.max_memory_allocated`` above the allocated inputs, every timed
run is bracketed by ``torch.cuda.synchronize()``, and the segment-op timings are skipped (their
baseline is a per-sequence Python loop, a CPU-side computation).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

MODES = ("full_train", "fused_train", "full_score", "fused_score")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args) -> dict:
    """One mode in this (fresh) process: allocate inputs, then time `repeats` runs."""
    import contextlib

    import mmreward.ops as ops
    from mmreward.ops import _backend

    torch.manual_seed(0)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    N, V, H, S = args.tokens, args.vocab, args.hidden, args.steps
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    good, bad = 10, V - 7  # e.g. the "+" / "-" label tokens
    # inputs are filled in place (no temporaries), so the RSS after allocation is also the peak so far
    h = torch.empty(N, H, dtype=dtype, device=dev).normal_(0.0, 0.5).requires_grad_()
    idx = torch.randperm(N)[:S].sort().values.to(dev)
    labels = torch.rand(S)  # soft Monte-Carlo labels
    labels[torch.rand(S) < 0.1] = -100
    labels = labels.to(dev)
    valid = labels != -100
    mode = args.worker
    if mode.startswith("full"):
        lm_head = torch.nn.Linear(H, V, bias=False, dtype=dtype, device=dev)  # trainable, as in PRM fine-tuning
        torch.nn.init.normal_(lm_head.weight, std=H**-0.5)
    else:
        w_good = torch.empty(H, dtype=dtype, device=dev).normal_(0.0, H**-0.5).requires_grad_()
        w_bad = torch.empty(H, dtype=dtype, device=dev).normal_(0.0, H**-0.5).requires_grad_()

    def full_train():
        logits = lm_head(h)  # (N, V)
        two = logits[:, [good, bad]][idx].float()  # (S, 2)
        logp = torch.log_softmax(two, dim=-1)
        y = labels[valid]
        loss = -(y * logp[valid, 0] + (1 - y) * logp[valid, 1]).mean()
        del logits
        loss.backward()
        return loss

    def fused_train():
        loss = ops.step_bce_loss(h, w_good, w_bad, labels, step_index=idx)
        loss.backward()
        return loss

    def full_score():
        with torch.no_grad():
            logits = lm_head(h)
            return torch.softmax(logits[:, [good, bad]][idx].float(), dim=-1)[:, 0]

    def fused_score():
        with torch.no_grad():
            return ops.step_scores(h, w_good, w_bad, step_index=idx)

    fn = {"full_train": full_train, "fused_train": fused_train, "full_score": full_score,
          "fused_score": fused_score}[mode]
    # inputs resident (touched) before the reference RSS reading
    base_rss = _rss_mb()
    base_max = _maxrss_mb()
    base = max(base_rss, base_max)
    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats()
        base_alloc = torch.cuda.memory_allocated()
    use = (lambda: _backend.use_backend(args.backend)) if args.backend else contextlib.nullcontext
    repeats = args.baseline_repeats if mode.startswith("full") else args.repeats
    warmup = 0 if mode.startswith("full") and repeats == 1 else 1
    times = []
    for i in range(warmup + repeats):
        if h.grad is not None:
            h.grad = None
        if mode.startswith("full"):
            lm_head.zero_grad(set_to_none=True)
        else:
            w_good.grad = w_bad.grad = None
        sync()
        t0 = time.perf_counter()
        with use():
            out = fn()
        sync()
        t1 = time.perf_counter()
        if i >= warmup:
            times.append(t1 - t0)
        del out
    if cuda:
        peak, inputs = (torch.cuda.max_memory_allocated() - base_alloc) / 2**20, base_alloc / 2**20
    else:
        peak, inputs = max(_maxrss_mb() - base, 0.0), base
    return {
        "mode": mode,
        "backend": args.backend,
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "median_s": statistics.median(times),
        "times_s": times,
        "peak_growth_mb": peak,
        "inputs_mb": inputs,
    }


def run_worker(mode: str, args, backend: str | None = None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--device", args.device,
           *(["--backend", backend] if backend else []), "--tokens", str(args.tokens),
           "--vocab", str(args.vocab), "--hidden", str(args.hidden), "--steps", str(args.steps),
           "--repeats", str(args.repeats), "--baseline-repeats", str(args.baseline_repeats), "--dtype", args.dtype]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"worker {mode} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# segment ops vs per-sequence Python loops


def bench_segments(args) -> list[dict]:
    import mmreward.ops as ops

    g = torch.Generator().manual_seed(0)
    B = args.seg_sequences
    lengths = torch.randint(0, 31, (B,), generator=g)
    S = int(lengths.sum())
    p = torch.rand(S, generator=g)
    bounds = [0] + torch.cumsum(lengths, 0).tolist()

    def loop_reduce(reduce):
        out = []
        for b in range(B):
            v = p[bounds[b]:bounds[b + 1]]
            if v.numel() == 0:
                out.append(1.0)
            elif reduce == "min":
                out.append(v.min())
            elif reduce == "prod":
                out.append(v.log().sum().exp())
            elif reduce == "last":
                out.append(v[-1])
            else:
                out.append(v.mean())
        return torch.tensor([float(x) for x in out])

    def loop_first_below():
        out = []
        for b in range(B):
            v = p[bounds[b]:bounds[b + 1]]
            hit = (v < 0.5).nonzero()
            out.append(int(hit[0]) if hit.numel() else -1)
        return out

    def loop_refine():
        refined, returns = [], []
        for b in range(B):
            v = torch.clamp(p[bounds[b]:bounds[b + 1]] - 0.3, max=0.0)
            if v.numel() == 0:
                continue
            d = torch.cat([v[:-1] - v[1:], v[-1:]])
            G = torch.empty_like(d)
            run = 0.0
            for k in range(d.numel() - 1, -1, -1):
                run = float(d[k]) + 0.99 * run
                G[k] = run
            refined.append(d)
            returns.append(G)
        return torch.cat(refined), torch.cat(returns)

    def timeit(fn, n):
        fn()
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    rows = []
    n_fast, n_slow = 20, 2
    for reduce in ("min", "prod", "last", "mean"):
        f = timeit(lambda: ops.segment_reduce(p, lengths, reduce=reduce), n_fast)
        s = timeit(lambda: loop_reduce(reduce), n_slow)
        rows.append({"op": f"segment_reduce[{reduce}]", "fused_s": f, "loop_s": s})
    rows.append({"op": "first_below", "fused_s": timeit(lambda: ops.first_below(p, lengths, threshold=0.5), n_fast),
                 "loop_s": timeit(loop_first_below, n_slow)})
    rows.append({"op": "refine(clip+delta, γ=.99)",
                 "fused_s": timeit(lambda: ops.refine_process_rewards(p, lengths, clip=0.3, delta=True, gamma=0.99),
                                   n_fast),
                 "loop_s": timeit(loop_refine, n_slow)})
    for r in rows:
        r.update(sequences=B, steps=S, speedup=r["loop_s"] / r["fused_s"])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--vocab", type=int, default=152064)
    ap.add_argument("--hidden", type=int, default=3584)
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of the fused ops (after 1 warm-up)")
    ap.add_argument("--baseline-repeats", type=int, default=1,
                    help="timed runs of the full-logits baseline (1: no warm-up either)")
    ap.add_argument("--seg-sequences", type=int, default=4096)
    ap.add_argument("--skip-segments", action="store_true")
    ap.add_argument("--segments-only", action="store_true", help="only the segment_reduce / refine timings")
    ap.add_argument("--quick", action="store_true", help="small sizes, seconds-long smoke run")
    ap.add_argument("--json", help="save the results here")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--backend", default=None, choices=("cpp", "cuda", "triton"),
                    help="force the fused ops' backend (default: the device's default)")
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.tokens, args.vocab, args.hidden, args.steps = 1024, 8192, 512, 64
        args.repeats, args.baseline_repeats, args.seg_sequences = 3, 3, 256
    if args.worker:
        print(json.dumps(worker(args)))
        return

    on_gpu = args.device.startswith("cuda")
    where = torch.cuda.get_device_name() if on_gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"# step-reward benchmark: N={args.tokens} tokens, V={args.vocab}, H={args.hidden}, S={args.steps} steps, "
          f"{args.dtype}, torch {torch.__version__}, {where}")
    print(f"# full logits would be {args.tokens * args.vocab * 4 / 2**30:.2f} GiB fp32; "
          f"fused reads {args.steps}x{args.hidden} rows")
    # fused variants: the forced backends on a GPU (both kernels), the device default on CPU
    backends = [args.backend] if args.backend else (["cuda", "triton"] if on_gpu else [None])
    sys.path.insert(0, HERE)
    from machine_info import machine

    machine_before = machine(device=args.device)
    results = {}
    if not args.segments_only:
        for m in MODES:
            for b in (backends if m.startswith("fused") else [None]):
                results[m + (f"[{b}]" if b else "")] = run_worker(m, args, b)
    table = []
    cases = [] if args.segments_only else [(w, b) for w in ("train", "score") for b in backends]
    for what, b in cases:
        full, fused = results[f"full_{what}"], results[f"fused_{what}" + (f"[{b}]" if b else "")]
        row = {
            "what": ("loss fwd+bwd" if what == "train" else "scoring fwd") + (f" ({b})" if b else ""),
            "full_s": full["median_s"], "fused_s": fused["median_s"],
            "speedup": full["median_s"] / fused["median_s"],
            "full_peak_mb": full["peak_growth_mb"], "fused_peak_mb": fused["peak_growth_mb"],
            # below 1 MB the fused growth is within ru_maxrss noise: ratio against 1 MB, shown as ">"
            "mem_ratio": full["peak_growth_mb"] / max(fused["peak_growth_mb"], 1.0),
            "mem_ratio_is_lower_bound": fused["peak_growth_mb"] < 1.0,
        }
        table.append(row)
    if table:
        print_table(table, args)
    seg = []
    if not args.skip_segments and not on_gpu:
        seg = bench_segments(args)
        print("\n| op | sequences / steps | fused | eager per-sequence loop | speedup |")
        print("|---|---|---|---|---|")
        for r in seg:
            print(f"| {r['op']} | {r['sequences']} / {r['steps']} | {r['fused_s'] * 1e3:.3g} ms | "
                  f"{r['loop_s'] * 1e3:.4g} ms | {r['speedup']:.0f}x |")
    if args.json:
        cfg = {k: v for k, v in vars(args).items() if k not in ("json", "worker")}
        with open(args.json, "w") as f:
            json.dump({"config": cfg, "machine": machine_before, "load_average_after": machine()["load_average"],
                       "order": "each path in its own subprocess, one after the other (not interleaved)",
                       "workers": results, "table": table, "segments": seg}, f, indent=2)
        print(f"\nsaved {args.json}")


def print_table(table, args):
    print("\n| path | full-logits median | fused median | speedup | full peak (MB) | fused peak (MB) | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['what']} | {r['full_s']:.4g} s | {r['fused_s'] * 1e3:.3g} ms | {r['speedup']:.0f}x | "
              f"{r['full_peak_mb']:.0f} | {r['fused_peak_mb']:.1f} | "
              f"{'>' if r['mem_ratio_is_lower_bound'] else ''}{r['mem_ratio']:.0f}x |")
    gh_mb = args.tokens * args.hidden * (4 if args.dtype == "fp32" else 2) / 2**20
    print(f"\n(training peaks include the ({args.tokens}, {args.hidden}) gradient of h, {gh_mb:.0f} MB, which both "
          f"paths must produce for the backbone; without it: full {table[0]['full_peak_mb'] - gh_mb:.0f} MB, "
          f"fused {max(table[0]['fused_peak_mb'] - gh_mb, 0.0):.1f} MB)")
    table[0]["grad_h_mb"] = gh_mb


if __name__ == "__main__":
    main()
