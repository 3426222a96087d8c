"""The benchmarks' own contract, without running them: a smoke or recipe run cannot replace a
published results file (the README's table and the docs read them), the documented output of each
setting is the file the docs name, flags out of range stop at once with a usage error, and the
machine and load are recorded from the machine itself. Each test is fast (no training, no models)."""
from __future__ import annotations

import argparse
import os

import pytest

from helpers import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def _exits_2(fn, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        fn()
    assert e.value.code == 2
    return capsys.readouterr().err


def test_text_rm_smoke_run_needs_out(tmp_path, monkeypatch, capsys):
    """`--limit 4` ("smoke runs") or the recipe comparison (`--validation --steps 300`) used to write
    benchmarks/results/text_rm_minilm.json, the README's text RM figure; they now stop before any work."""
    mod = load_script("benchmarks/bench_text_rm_minilm.py")
    monkeypatch.setattr(mod, "train_cli", lambda *a, **k: pytest.fail("trained instead of refusing"))
    before = os.path.getmtime(os.path.join(RESULTS, "text_rm_minilm.json"))
    for argv in (["--limit", "4"], ["--validation", "--threads", "1", "--steps", "300", "--no-baselines", "--plain"]):
        err = _exits_2(lambda: mod.main(["--data", str(tmp_path), *argv]), capsys)
        assert "--out is required" in err and "text_rm_minilm.json" in err
    assert os.path.getmtime(os.path.join(RESULTS, "text_rm_minilm.json")) == before
    # the published setting (docs: `python benchmarks/bench_text_rm_minilm.py --plain`) keeps its default file
    ns = argparse.Namespace(limit=0, validation=False, steps=0, rrm=False, margin=None, flags="", seed=0,
                            heldout_frac=0.2, name="", no_baselines=False, plain=True)
    assert mod.unpublished_settings(ns) == []
    assert mod.unpublished_settings(argparse.Namespace(**{**vars(ns), "plain": False, "limit": 3})) == ["--limit", "no --plain"]


def test_generative_judges_outputs_follow_template_and_smoke_needs_json(capsys):
    """docs/generative.md: `--template paper` → generative_judges_paper.json; it used to overwrite
    generative_judges.json (the default for every template, relative to the working folder)."""
    mod = load_script("benchmarks/bench_generative_judges.py")
    ap = argparse.ArgumentParser()
    ns = argparse.Namespace(json=None, items=8, max_new_tokens=192, template="paper")
    assert mod.output_path(ns, ap) == os.path.join(RESULTS, "generative_judges_paper.json")
    assert mod.output_path(argparse.Namespace(**{**vars(ns), "template": "mmreward"}), ap) == os.path.join(
        RESULTS, "generative_judges.json")
    assert mod.output_path(argparse.Namespace(**{**vars(ns), "items": 2, "json": "/x/y.json"}), ap) == "/x/y.json"
    err = _exits_2(lambda: mod.main(["--items", "4"]), capsys)
    assert "--json is required with --items 4" in err
    err = _exits_2(lambda: mod.main(["--items", "0", "--json", "/nonexistent/x.json"]), capsys)
    assert "--items" in err


def test_serve_rejects_empty_load_levels(capsys):
    """`--clients 0` used to end in an IndexError on an empty latency list after starting both servers."""
    mod = load_script("benchmarks/bench_serve.py")
    assert "--clients" in _exits_2(lambda: mod.main(["--clients", "0"]), capsys)
    assert "--words" in _exits_2(lambda: mod.main(["--words", "8"]), capsys)
    assert "--words" in _exits_2(lambda: mod.main(["--words", "16,8"]), capsys)


def test_machine_info_states_cpu_and_load():
    mod = load_script("benchmarks/machine_info.py")
    info = mod.machine(threads=1, device="cpu")
    assert info["cpu"] and info["logical_cpus"] >= 1 and info["threads"] == 1 and info["device"] == "cpu"
    assert info["load_average"] is None or len(info["load_average"]) == 3


def test_codebook_rounds_interleave_and_fill_every_figure():
    """Implementations are timed round by round (the eager ones in fewer rounds), each row complete."""
    import torch

    mod = load_script("benchmarks/bench_codebook.py")
    calls = []
    real = mod.fused

    def spy_fused(op):
        fn = real(op)

        def wrapped(*a):
            calls.append("fused")
            return fn(*a)
        return wrapped

    mod.fused = spy_fused
    real_eager = mod.eager

    def spy_eager(op, dtype):
        fn = real_eager(op, dtype)

        def wrapped(*a):
            calls.append(str(dtype))
            return fn(*a)
        return wrapped

    mod.eager = spy_eager
    results = []
    mod.run_case("nll", 2, 4, 8, -1, torch.device("cpu"), 3, 1, results, {"bw": 1e9}, 1 << 16)
    row = results[0]
    for impl in ("fused", "eager_f32", "eager_f64"):
        assert row[f"{impl}_fwd_s"] > 0 and row[f"{impl}_bwd_s"] > 0
    # after the warm-up (2 calls each), round 1 runs all three, then fused alone
    timed = calls[6:]
    assert timed[:6] == ["fused", "fused", "torch.float32", "torch.float32", "torch.float64", "torch.float64"]
    assert timed[6:] == ["fused"] * 4


def test_pairwise_rounds_combine_to_median_of_round_medians(capsys):
    """The full run (README's fused-ops row) times the implementations in interleaved rounds; a row is
    the median over rounds, every round kept; `--case-rounds 0` is a usage error."""
    mod = load_script("benchmarks/bench_pairwise.py")
    runs = [{"case": {"kind": "loss", "B": 8}, "impl": "cpp", "median_s": m, "min_s": m / 2, "reps": 3,
             "peak_mem_bytes": p, "fused_bytes": 1000, "gbps": 0.0} for m, p in ((3.0, 10), (1.0, 30), (2.0, 20))]
    row = mod.combine_rounds(runs)
    assert row["median_s"] == 2.0 and row["min_s"] == 0.5 and row["peak_mem_bytes"] == 30 and row["reps"] == 9
    assert row["round_medians_s"] == [3.0, 1.0, 2.0] and row["gbps"] == pytest.approx(1000 / 2.0 / 1e9)
    import sys

    argv = sys.argv
    try:
        sys.argv = ["bench_pairwise.py", "--case-rounds", "0"]
        assert "--case-rounds" in _exits_2(mod.main, capsys)
    finally:
        sys.argv = argv


def test_quality_quick_run_writes_outside_results():
    """`bench_diffusion_reward_quality.py --quick` used to write diffusion_reward_quality_quick.{json,png}
    into benchmarks/results, next to the cited files; an explicit --json keeps its place (with _quick)."""
    mod = load_script("benchmarks/bench_diffusion_reward_quality.py")
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="benchmarks/results/diffusion_reward_quality.json")
    ap.add_argument("--plot", default="benchmarks/results/diffusion_reward_quality.png")
    args = ap.parse_args([])
    args.work = "runs/w"
    mod.quick_outputs(args, ap)
    assert args.work == "runs/w_quick"
    assert args.json == os.path.join("runs/w_quick", "diffusion_reward_quality_quick.json")
    assert args.plot == os.path.join("runs/w_quick", "diffusion_reward_quality_quick.png")
    args = ap.parse_args(["--json", "/t/q.json", "--plot", "/t/q.png"])
    args.work = "w"
    mod.quick_outputs(args, ap)
    assert (args.json, args.plot) == ("/t/q_quick.json", "/t/q_quick.png")


def test_serve_reports_the_median_round():
    """Load levels run in interleaved rounds; the reported row is the median round's, all rounds kept."""
    mod = load_script("benchmarks/bench_serve.py")
    rows = [{"clients": 8, "requests_per_s": rps, "p99_ms": p99, "answers": {0: 1.0, 1: 2.0 + d}}
            for rps, p99, d in ((50.0, 9.0, 0.0), (70.0, 7.0, 1e-7), (60.0, 8.0, 0.0))]
    row = mod.median_round(rows)
    assert row["requests_per_s"] == 60.0 and row["p99_ms"] == 8.0
    assert row["rounds_requests_per_s"] == [50.0, 70.0, 60.0]
    assert row["answers"] == {0: 1.0, 1: 2.0} and row["max_abs_diff_between_rounds"] == pytest.approx(1e-7)
