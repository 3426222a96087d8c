"""Benchmark: fused pairwise reward losses vs the eager PyTorch users run today (TRL / OpenRLHF).

    python benchmarks/bench_pairwise.py                 # full run (each case in a fresh subprocess)
    python benchmarks/bench_pairwise.py --quick         # seconds-long smoke run (in-process, no compile)
    python benchmarks/bench_pairwise.py --json out.json # also save the results
    python benchmarks/bench_pairwise.py --overhead --json out.json   # small batches, interleaved rounds

Cases (all forward + backward):
  loss      B in {1k, 64k, 1M}:      eager `-F.logsigmoid(r_c - r_r - margin).mean()` (autograd)
  head      B = 64k, H in {1024, 4096}: eager `nn.Linear(H, 1)` on h_c and h_r, then that loss
  listwise  B = 4096, K = 8:         eager all-pairs loss over [B, K, K] (masked logsigmoid)
Implementations: eager, torch.compile(eager), and mmreward's kernels: `cpp` on CPU; `cuda` and
`triton` on a GPU. Times are medians (per implementation, the median over --case-rounds rounds, default
3, in which the implementations take turns, each in a fresh subprocess); ratios are eager time / implementation time (> 1: faster
than eager). Peak memory (the input grads included, as every implementation must produce them): on CPU, the
peak resident-set growth above the inputs during one (post-warm-up) iteration, sampled every 0.2 ms in a fresh subprocess per case (resolution ~1 MB: small
cases show ~0); on GPU, torch.cuda.max_memory_allocated above the inputs. `GB/s`: the bytes the
fused op must move (inputs read once, grads written once) over the time; on GPU also as a fraction
of the bandwidth measured by a device-to-device copy.

Huge pages (CPU): mmreward's C++ kernels madvise their [B, H] grad buffers for transparent huge pages
unless MMREWARD_CPU_HUGEPAGES=0; PyTorch's own allocator does so only with THP_MEM_ALLOC_ENABLE=1.
So that every implementation gets the same treatment, the benchmark sets both in every worker:
`--hugepages on` (default; or MMREWARD_CPU_HUGEPAGES unset / != 0): MMREWARD_CPU_HUGEPAGES=1 and
THP_MEM_ALLOC_ENABLE=1 for all; `--hugepages off` (or MMREWARD_CPU_HUGEPAGES=0): both 0 for all.
The setting used is printed and saved in the JSON.

Overhead (`--overhead`): the default path (what `mmreward.ops.pairwise_loss` /
`reward_head_pairwise_loss` pick: C++ on CPU) against eager PyTorch at the batch sizes reward models
train with (loss B = 8 ... 64k, head B = 8 ... 4096, H = 1024), forward + backward and forward
alone under no_grad, in interleaved rounds (eager and mmreward alternate case by case, so load
changes hit both); per-case medians over rounds, the per-round ratio eager / mmreward (median and
worst round), the machine and its load average before / after in the JSON.

Buffer cache (CPU): mmreward's C++ kernels take their large [B, H] grad buffers from a small cache of
buffers nothing references any more (like the CUDA caching allocator), so a training loop does not
pay the kernel's zero-fill of fresh pages every step; eager PyTorch's CPU allocator returns such
blocks to the OS and re-faults them every step. `--buffer-cache off` (MMREWARD_CPU_BUFFER_CACHE_MB=0)
measures mmreward without it. Peak memory of the measured iteration starts from an emptied cache,
so it includes the cached grads.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine_info import machine  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FULL_CASES = [
    {"kind": "loss", "B": 1_000},
    {"kind": "loss", "B": 65_536},
    {"kind": "loss", "B": 1_048_576},
    {"kind": "head", "B": 65_536, "H": 1024},
    {"kind": "head", "B": 65_536, "H": 4096},
    {"kind": "listwise", "B": 4096, "K": 8},
]
QUICK_CASES = [
    {"kind": "loss", "B": 4096},
    {"kind": "head", "B": 1024, "H": 512},
    {"kind": "listwise", "B": 512, "K": 8},
]


def case_name(c: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in c.items())


def impls_for(device: str, quick: bool) -> list[str]:
    base = ["eager"] if quick else ["eager", "compile"]
    return base + (["cuda", "triton"] if device == "cuda" else ["cpp"])


# ------------------------------------------------------------------------------------------------
# the code being timed
# ------------------------------------------------------------------------------------------------
def eager_loss(rc, rr, margin):
    return -F.logsigmoid(rc - rr - margin).mean()


def eager_head(hc, hr, lin, margin):
    rc = lin(hc).squeeze(-1)
    rr = lin(hr).squeeze(-1)
    return -F.logsigmoid(rc - rr - margin).mean()


def eager_listwise(rewards, ranks):
    valid = ranks >= 0
    better = (ranks.unsqueeze(2) < ranks.unsqueeze(1)) & valid.unsqueeze(2) & valid.unsqueeze(1)
    diff = rewards.unsqueeze(2) - rewards.unsqueeze(1)
    nll = -F.logsigmoid(diff) * better
    return nll.sum() / better.sum().clamp_min(1)


def build(case: dict, impl: str, device: str, dtype: torch.dtype):
    """Inputs + a closure running one forward + backward (its `.forward` runs the forward alone);
    also the bytes a fused op must move. impl: eager | compile | default (mmreward's own backend
    choice) | cpp | cuda | triton."""
    from mmreward import ops

    g = torch.Generator(device="cpu").manual_seed(0)
    kind, B = case["kind"], case["B"]
    backend = {"cpp": "cpp", "cuda": "cuda", "triton": "triton"}.get(impl)
    fused = impl not in ("eager", "compile")
    isz = torch.tensor([], dtype=dtype).element_size()
    if kind == "loss":
        rc = torch.randn(B, generator=g).to(device, dtype).requires_grad_()
        rr = torch.randn(B, generator=g).to(device, dtype).requires_grad_()
        margin = torch.rand(B, generator=g).to(device, torch.float32)
        leaves = [rc, rr]
        if not fused:
            fn = torch.compile(eager_loss) if impl == "compile" else eager_loss
            run = lambda: fn(rc, rr, margin)  # noqa: E731
        else:
            run = lambda: ops.pairwise_loss(rc, rr, margin=margin)  # noqa: E731
        nbytes = B * (4 * isz + 4)
    elif kind == "head":
        H = case["H"]
        hc = torch.randn(B, H, generator=g).to(device, dtype).requires_grad_()
        hr = torch.randn(B, H, generator=g).to(device, dtype).requires_grad_()
        lin = torch.nn.Linear(H, 1).to(device, dtype)
        margin = torch.rand(B, generator=g).to(device, torch.float32)
        leaves = [hc, hr, lin.weight, lin.bias]
        if not fused:
            fn = torch.compile(eager_head) if impl == "compile" else eager_head
            run = lambda: fn(hc, hr, lin, margin)  # noqa: E731
        else:
            run = lambda: ops.reward_head_pairwise_loss(hc, hr, lin.weight, lin.bias, margin=margin)  # noqa: E731
        nbytes = 4 * B * H * isz  # read h_c, h_r; write their grads
    else:
        K = case["K"]
        rewards = torch.randn(B, K, generator=g).to(device, dtype).requires_grad_()
        ranks = torch.randint(0, K, (B, K), generator=g)
        ranks[torch.rand(B, K, generator=g) < 0.1] = -1
        ranks = ranks.to(device)
        leaves = [rewards]
        if not fused:
            fn = torch.compile(eager_listwise) if impl == "compile" else eager_listwise
            run = lambda: fn(rewards, ranks)  # noqa: E731
        else:
            run = lambda: ops.listwise_loss(rewards, ranks)  # noqa: E731
        nbytes = B * K * (2 * isz + 8)

    def clear():
        for t in leaves:
            t.grad = None

    def step(clear_grads=True):
        if clear_grads:
            clear()
        loss = run()
        loss.backward()
        return loss

    step.forward = run
    return step, clear, backend, nbytes


class RssSampler:
    """Peak resident set size (bytes) while active, sampled from /proc/self/statm."""

    def __init__(self, period=2e-4):
        self.period, self.peak, self._stop = period, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.period)

    def __enter__(self):
        self.base = self.rss()
        self.peak = self.base
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss())


def copy_bandwidth(device: str) -> float | None:
    if device != "cuda":
        return None
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    torch.cuda.synchronize()
    return 2 * x.numel() * 10 / (time.perf_counter() - t)


def measure(case: dict, impl: str, device: str, dtype: torch.dtype, min_time: float, max_reps: int) -> dict:
    from mmreward.ops import _backend

    step, clear, backend, nbytes = build(case, impl, device, dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ctx = _backend.use_backend(backend)
    with ctx:
        t0 = time.perf_counter()
        step()  # warm-up (compiles for torch.compile)
        sync()
        first = time.perf_counter() - t0
        step()
        sync()
        # memory: one more iteration, from a state holding only the inputs (grads cleared)
        clear()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step(clear_grads=False)
            sync()
            peak = torch.cuda.max_memory_allocated() - base
        else:
            _release_cpu_buffers()  # the cached grads count as this iteration's memory
            with RssSampler() as s:
                step(clear_grads=False)
            peak = s.peak - s.base
        times = []
        t_start = time.perf_counter()
        while len(times) < 3 or (time.perf_counter() - t_start < min_time and len(times) < max_reps):
            t = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {
        "case": case, "impl": impl, "device": device, "dtype": str(dtype).replace("torch.", ""),
        "median_s": med, "min_s": min(times), "reps": len(times), "first_call_s": first,
        "peak_mem_bytes": max(int(peak), 0), "fused_bytes": nbytes, "gbps": nbytes / med / 1e9,
    }


def _release_cpu_buffers() -> None:
    from mmreward.ops import _backend

    if _backend.extension_loaded():
        torch.ops.mmreward.release_cpu_buffers()


def run_worker(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    case = json.loads(args.worker)
    res = measure(case, args.impl, args.device, getattr(torch, args.dtype), args.min_time, args.max_reps)
    print("RESULT " + json.dumps(res), flush=True)


def hugepage_env(setting: str, buffer_cache: str = "on") -> dict:
    """Environment giving eager PyTorch and mmreward the same transparent-huge-page treatment, and
    mmreward's CPU buffer cache on (its default) or off."""
    env = dict(os.environ)
    on = setting == "on"
    env["MMREWARD_CPU_HUGEPAGES"] = "1" if on else "0"
    env["THP_MEM_ALLOC_ENABLE"] = "1" if on else "0"
    if buffer_cache == "off":
        env["MMREWARD_CPU_BUFFER_CACHE_MB"] = "0"
    else:
        env.pop("MMREWARD_CPU_BUFFER_CACHE_MB", None)
    return env


def run_subprocess(case: dict, impl: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(case), "--impl", impl,
           "--device", args.device, "--dtype", args.dtype, "--min-time", str(args.min_time),
           "--max-reps", str(args.max_reps)] + (["--threads", str(args.threads)] if args.threads else [])
    p = subprocess.run(cmd, capture_output=True, text=True, env=hugepage_env(args.hugepages, args.buffer_cache))
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"case": case, "impl": impl, "error": (p.stderr or p.stdout).strip().splitlines()[-1:]}


def _thp_mode() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:  # noqa: PTH123
            txt = f.read()
        return txt[txt.index("[") + 1:txt.index("]")]
    except (OSError, ValueError):
        return "unknown"


def fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def print_table(results: list[dict], bw: float | None) -> None:
    print(f"\n{'case':<28} {'impl':<8} {'median':>10} {'vs eager':>9} {'peak mem':>10} {'GB/s':>7}"
          + ("  %bw" if bw else ""))
    eager = {case_name(r["case"]): r["median_s"] for r in results if r.get("impl") == "eager" and "median_s" in r}
    for r in results:
        name = case_name(r["case"])
        if "error" in r:
            print(f"{name:<28} {r['impl']:<8} error: {r['error']}")
            continue
        ratio = eager.get(name, float("nan")) / r["median_s"]
        line = (f"{name:<28} {r['impl']:<8} {r['median_s'] * 1e3:>8.2f}ms {ratio:>8.2f}x "
                f"{fmt_bytes(r['peak_mem_bytes']):>10} {r['gbps']:>7.1f}")
        if bw:
            line += f"  {100 * r['gbps'] * 1e9 / bw:4.0f}%"
        print(line)


OVERHEAD_CASES = [{"kind": "loss", "B": b} for b in (8, 64, 512, 4096, 65536)] + [
    {"kind": "head", "B": b, "H": 1024} for b in (8, 64, 512, 4096)]


def _timed(fn, iters: int, sync=lambda: None) -> float:
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - t) / iters


def combine_rounds(runs: list[dict]) -> dict:
    """One row from an implementation's rounds: the median of the rounds' medians (and its GB/s), the
    fastest single run, the largest peak memory; every round's median is kept."""
    import statistics

    row = dict(runs[0])
    row["median_s"] = statistics.median(r["median_s"] for r in runs)
    row["min_s"] = min(r["min_s"] for r in runs)
    row["peak_mem_bytes"] = max(r["peak_mem_bytes"] for r in runs)
    row["reps"] = sum(r["reps"] for r in runs)
    row["gbps"] = row["fused_bytes"] / row["median_s"] / 1e9
    row["round_medians_s"] = [r["median_s"] for r in runs]
    return row


def run_overhead(args) -> dict:
    """Interleaved rounds of eager vs the default mmreward path, forward + backward and forward only."""
    cases = OVERHEAD_CASES[:3] + OVERHEAD_CASES[5:7] if args.quick else OVERHEAD_CASES
    rounds = 3 if args.quick else args.rounds
    built = {}
    for case in cases:
        for impl in ("eager", "mmreward"):
            step, clear, _, _ = build(case, "eager" if impl == "eager" else "default", args.device, torch.float32)
            built[case_name(case), impl] = step
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    load_before = os.getloadavg()
    times = {key: {"fwd_bwd": [], "fwd": []} for key in built}
    iters = {}  # per case: enough iterations for ~20 ms per measurement (the slower implementation)
    for case in cases:
        name = case_name(case)
        for impl in ("eager", "mmreward"):
            built[name, impl]()  # warm up
        per_iter = max(_timed(built[name, impl], 3, sync) for impl in ("eager", "mmreward"))
        iters[name] = max(3, min(5000, int(0.02 / per_iter)))
    for r in range(rounds):
        for case in cases:
            name = case_name(case)
            n = iters[name]
            for impl in ("eager", "mmreward") if r % 2 == 0 else ("mmreward", "eager"):
                step = built[name, impl]
                times[name, impl]["fwd_bwd"].append(_timed(step, n, sync))
                with torch.no_grad():
                    times[name, impl]["fwd"].append(_timed(step.forward, n, sync))
    load_after = os.getloadavg()
    rows = []
    for case in cases:
        name = case_name(case)
        row = {"case": case}
        for mode in ("fwd_bwd", "fwd"):
            e, m = times[name, "eager"][mode], times[name, "mmreward"][mode]
            ratios = sorted(a / b for a, b in zip(e, m))
            row[mode] = {"eager_median_us": statistics.median(e) * 1e6,
                         "mmreward_median_us": statistics.median(m) * 1e6,
                         "ratio_median": statistics.median(ratios), "ratio_worst_round": ratios[0],
                         "iterations_per_round": iters[name],
                         "eager_us": [round(x * 1e6, 2) for x in e], "mmreward_us": [round(x * 1e6, 2) for x in m]}
        rows.append(row)
    print(f"\n{'case':<24} {'mode':<8} {'eager':>10} {'mmreward':>10} {'ratio':>7} {'worst':>7}")
    for row in rows:
        for mode in ("fwd_bwd", "fwd"):
            v = row[mode]
            print(f"{case_name(row['case']):<24} {mode:<8} {v['eager_median_us']:>8.1f}us "
                  f"{v['mmreward_median_us']:>8.1f}us {v['ratio_median']:>6.2f}x {v['ratio_worst_round']:>6.2f}x")
    return {"mode": "overhead", "device": args.device, "dtype": "float32", "machine": machine(),
            "load_average_before": load_before, "load_average_after": load_after, "rounds": rounds,
            "ratio": "eager time / mmreward time (> 1: mmreward faster)", "results": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, in-process, no torch.compile")
    ap.add_argument("--overhead", action="store_true",
                    help="small batches: the default path vs eager in interleaved rounds (see the docstring)")
    ap.add_argument("--rounds", type=int, default=15, help="rounds of --overhead")
    ap.add_argument("--case-rounds", type=int, default=3,
                    help="rounds of the full / --quick run: every implementation once per round, interleaved "
                         "(each in a fresh subprocess in the full run); median over rounds")
    ap.add_argument("--json", metavar="PATH", help="save the results as JSON")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds of timed iterations per case")
    ap.add_argument("--max-reps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads in every worker (e.g. 1 on a shared, oversubscribed machine)")
    ap.add_argument("--only", default=None, help="run only cases whose kind is this (loss|head|listwise)")
    ap.add_argument("--impls", default=None,
                    help="comma-separated subset of implementations to run (e.g. eager,cpp: skips torch.compile)")
    ap.add_argument("--hugepages", choices=["on", "off"], default=None,
                    help="transparent huge pages for every implementation's allocations (default: on unless "
                         "MMREWARD_CPU_HUGEPAGES=0); eager and mmreward always get the same setting")
    ap.add_argument("--buffer-cache", choices=["on", "off"], default="on",
                    help="mmreward's CPU cache of large grad buffers (default on, as in the library)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--impl", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case_rounds < 1 or args.rounds < 1:
        ap.error("--case-rounds and --rounds must be at least 1")
    if args.hugepages is None:
        args.hugepages = "off" if os.environ.get("MMREWARD_CPU_HUGEPAGES") == "0" else "on"
    if args.worker:
        return run_worker(args)
    # in-process runs (--quick) and the parent: same setting (read lazily by c10 and by mmreward)
    env = hugepage_env(args.hugepages, args.buffer_cache)
    os.environ.update({k: env[k] for k in ("MMREWARD_CPU_HUGEPAGES", "THP_MEM_ALLOC_ENABLE")})
    if args.buffer_cache == "off":
        os.environ["MMREWARD_CPU_BUFFER_CACHE_MB"] = "0"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.overhead:
        out = run_overhead(args)
        if args.json:
            with open(args.json, "w") as f:  # noqa: PTH123
                json.dump(out, f, indent=1)
            print(f"saved {args.json}")
        return

    from mmreward.ops import _backend

    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.only:
        cases = [c for c in cases if c["kind"] == args.only]
    impls = impls_for(args.device, args.quick)
    if args.impls:
        wanted = [i.strip() for i in args.impls.split(",") if i.strip()]
        impls = [i for i in wanted if i in impls] or impls
    dtype = getattr(torch, args.dtype)
    print(f"device={args.device} dtype={args.dtype} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"extension={'loaded' if _backend.extension_loaded() else _backend.extension_error()}")
    if args.device == "cpu":
        print(f"huge pages: {args.hugepages} for all implementations "
              f"(MMREWARD_CPU_HUGEPAGES={os.environ['MMREWARD_CPU_HUGEPAGES']}, "
              f"THP_MEM_ALLOC_ENABLE={os.environ['THP_MEM_ALLOC_ENABLE']}; "
              f"system THP mode: {_thp_mode()}); mmreward CPU buffer cache: {args.buffer_cache}")
    results = []
    rounds = max(1, args.case_rounds)
    load_before = list(os.getloadavg())
    for case in cases:
        op = {"loss": "pairwise_loss", "head": "reward_head_pairwise_loss", "listwise": "listwise_loss"}[case["kind"]]
        done = {impl: None for impl in impls}
        for impl in impls:
            if impl in ("cpp", "cuda", "triton") and _backend.why_unavailable(impl, op, args.device):
                done[impl] = {"case": case, "impl": impl, "error": _backend.why_unavailable(impl, op, args.device)}
        runs = {impl: [] for impl in impls}
        for rnd in range(rounds):  # implementations interleaved, the first one rotating from round to round
            order = impls[rnd % len(impls):] + impls[:rnd % len(impls)]
            for impl in order:
                if done[impl] is not None:
                    continue
                if args.quick:
                    r = measure(case, impl, args.device, dtype, min(args.min_time, 0.3), 10)
                else:
                    r = run_subprocess(case, impl, args)
                if "median_s" not in r:
                    done[impl] = r
                    continue
                runs[impl].append(r)
                print(f"  {case_name(case):<28} {impl:<8} {r['median_s'] * 1e3:9.2f} ms"
                      + (f"  (round {rnd + 1}/{rounds})" if rounds > 1 else ""), flush=True)
        for impl in impls:
            if done[impl] is not None:
                print(f"  {case_name(case):<28} {impl:<8} error: {done[impl]['error']}", flush=True)
                results.append(done[impl])
            else:
                results.append(combine_rounds(runs[impl]))
    bw = copy_bandwidth(args.device)
    print_table(results, bw)
    if args.json:
        with open(args.json, "w") as f:  # noqa: PTH123
            json.dump({"device": args.device, "dtype": args.dtype, "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "copy_bandwidth_Bps": bw, "hugepages": args.hugepages,
                       "buffer_cache": args.buffer_cache, "machine": machine(),
                       "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
                       "case_rounds": rounds, "median_s": "median over rounds of each round's median",
                       "results": results}, f, indent=1)
        print(f"saved {args.json}")


if __name__ == "__main__":
    main()
