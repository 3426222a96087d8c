"""DDP: `torchrun --nproc_per_node 2 -m mmreward.cli text train ...` (gloo on CPU) gives the same
weights as one process training on the same global batch (length-grouped batches included)."""
import csv
import json
import os
import random
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
import torch.distributed as dist  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from helpers import word_tokenizer  # noqa: E402
from transformers import BertConfig  # noqa: E402

from mmreward.text import RewardModel  # noqa: E402
from mmreward.text.cli import main  # noqa: E402

KEYWORDS = [f"w{i}" for i in range(8)]
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def tiny_rm_folder(folder):
    tok = word_tokenizer(["say"] + KEYWORDS, model_max_length=16)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                     max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    RewardModel.from_backbone(cfg, tokenizer=tok).save_pretrained(str(folder))


def write_pairs(path, n, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            k, a, b, other = rng.sample(KEYWORDS, 4)
            # different lengths, so the two ranks pad their micro-batches differently
            chosen = " ".join([a, k] + [b] * rng.randrange(3))
            f.write(json.dumps({"prompt": f"say {k}", "chosen": chosen, "rejected": f"{a} {other}"}) + "\n")


def test_torchrun_two_processes_match_single_process(tmp_path):
    tiny_rm_folder(tmp_path / "init")
    write_pairs(tmp_path / "train.jsonl", 40, 0)
    common = ["--data", str(tmp_path / "train.jsonl"), "--model", str(tmp_path / "init"), "--max-steps", "4",
              "--grad-accum-steps", "2", "--lr", "1e-3", "--center-coef", "0.01", "--warmup-steps", "1", "--no-progress", "--no-tensorboard",
              "--no-plot", "--log-every", "0"]
    # centering gives the head bias a real gradient: under pure BT its gradient is exactly 0 and
    # Adam would amplify the float noise of a different summation order into lr-sized steps
    # one process, micro-batch 8 == two processes x micro-batch 4 (global batch 16 per optimizer step)
    assert main(["train", *common, "--batch-size", "8", "--out", str(tmp_path / "single")]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mmreward.cli", "text", "train", *common, "--batch-size", "4", "--out", str(tmp_path / "ddp"),
           "--fused-head"]  # the head's params are used outside DDP's forward here: must still sync
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("model: ") == 1  # rank 0 only
    single = load_file(str(tmp_path / "single" / "model" / "model.safetensors"))
    ddp = load_file(str(tmp_path / "ddp" / "model" / "model.safetensors"))
    init = load_file(str(tmp_path / "init" / "model.safetensors"))
    assert single.keys() == ddp.keys()
    moved = max((single[k] - init[k]).abs().max().item() for k in single)
    assert moved > 1e-3  # it trained
    print(f"DDP vs single process: max |dw| = {max((ddp[k] - single[k]).abs().max().item() for k in single):.2e}")
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], atol=1e-5, rtol=1e-4, msg=k)
    rows = [list(csv.DictReader(open(tmp_path / d / "metrics.csv"))) for d in ("single", "ddp")]
    assert [r["step"] for r in rows[1]] == ["1", "2", "3", "4"]
    for a, b in zip(*rows):  # losses are averaged over ranks: the same global mean
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4)


def test_torchrun_critic_rm_matches_single_process(tmp_path):
    """`text train-critic-rm` under torchrun runs its joint forward through the DDP wrapper: with λ = 0 (a
    pure Bradley–Terry loss, a mean over pairs) two processes × 4 pairs give one process × 8's weights."""
    from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

    good, bad = "good fine great nice".split(), "bad poor awful weak".split()
    tok = word_tokenizer([" ".join(good + bad) + " q strong weak answer Score : 2 3 8 9 Critique the response"])
    tiny_llama(len(tok), hidden=32, layers=1, heads=2, seed=1).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    rng = random.Random(0)
    with open(tmp_path / "train.jsonl", "w") as f:
        for _ in range(32):
            f.write(json.dumps({"prompt": "q", "chosen": " ".join(rng.choices(good, k=rng.randrange(1, 4))),
                                "rejected": " ".join(rng.choices(bad, k=2)), "critique_chosen": "strong answer Score : 8",
                                "critique_rejected": "weak answer Score : " + rng.choice("23")}) + "\n")
    common = ["--model", str(tmp_path / "base"), "--data", str(tmp_path / "train.jsonl"), "--request",
              "Critique the response", "--lam-start", "0", "--lam-end", "0", "--max-steps", "3", "--lr", "1e-3",
              "--warmup-steps", "1", "--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0"]
    assert main(["train-critic-rm", *common, "--batch-size", "8", "--output-dir", str(tmp_path / "single")]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mmreward.cli",
           "text", "train-critic-rm", *common, "--batch-size", "4", "--output-dir", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    init = load_file(str(tmp_path / "base" / "model.safetensors"))
    for part in ("lm/model.safetensors", "head.safetensors"):
        single, ddp = load_file(str(tmp_path / "single" / "model" / part)), load_file(str(tmp_path / "ddp" / "model" / part))
        assert single.keys() == ddp.keys()
        for k in single:
            torch.testing.assert_close(ddp[k], single[k], atol=1e-5, rtol=1e-4, msg=f"{part}: {k}")
    moved = max((single_w - init[k]).abs().max().item()
                for k, single_w in load_file(str(tmp_path / "single" / "model" / "lm/model.safetensors")).items()
                if k in init)
    assert moved > 1e-4  # the backbone trained


def test_prm_train_saves_and_prints_on_rank_0_only(tmp_path, monkeypatch, capsys):
    """`prm train` under torchrun: a rank other than 0 prints no summary (every rank printed its own, and saved
    <out>/model a second time after the trainer, two ranks swapping the folder in at once)."""
    import mmreward
    from mmreward.cli import main as mmreward_main
    from mmreward.core import train as core_train

    args = ["prm", "train", "--synthetic", "16", "--max-steps", "2", "--no-progress", "--no-tensorboard", "--no-plot"]
    monkeypatch.setattr(core_train, "is_main_process", lambda: False)
    assert mmreward_main([*args, "--out", str(tmp_path / "rank1")]) == 0
    assert '"model"' not in capsys.readouterr().out
    monkeypatch.setattr(core_train, "is_main_process", lambda: True)
    assert mmreward_main([*args, "--out", str(tmp_path / "rank0")]) == 0
    assert capsys.readouterr().out.count('"model":') == 1
    mmreward.load(str(tmp_path / "rank0" / "model"))
