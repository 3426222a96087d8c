"""Across the command tree: every option and positional has help text (`prm eval --data`, `prm train
--format` and `robotics info FOLDER` had none), every command that reads rows has `--split`, and the
spellings other commands use for the same setting are accepted (hidden from --help)."""
from __future__ import annotations

import argparse
import importlib

import pytest


class _Parsed(BaseException):
    pass


def _parsers(monkeypatch) -> list[tuple[str, argparse.ArgumentParser]]:
    """(prog, parser) of every `mmreward` command and subcommand, captured where each calls parse_args."""
    from mmreward.cli import COMMANDS
    from mmreward.text.cli import COMMANDS as TEXT
    from mmreward.vision.cli import SUBCOMMANDS as VISION

    def grab(self, args=None, namespace=None):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", grab)
    entries = [(f"mmreward {n}", m, f) for n, (m, f, _) in COMMANDS.items() if n not in ("text", "vision")]
    entries += [(f"mmreward text {n}", m, f) for n, (_, (m, f)) in TEXT.items()]
    entries += [(f"mmreward vision {n}", *spec.split(":")) for n, (spec, _) in VISION.items()]
    out = []

    def walk(prog, parser):
        out.append((prog, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if sub not in [p for _, p in out]:  # an alias names the same parser
                        walk(f"{prog} {name}", sub)

    for prog, module, func in entries:
        with pytest.raises(_Parsed) as got:
            getattr(importlib.import_module(module), func)([])
        walk(prog, got.value.args[0])
    return out


def test_every_option_has_help_and_every_row_reader_has_split(monkeypatch):
    parsers = _parsers(monkeypatch)
    assert len(parsers) >= 40
    missing = [f"{prog} {a.option_strings or a.dest}" for prog, p in parsers for a in p._actions
               if not isinstance(a, argparse._SubParsersAction) and not a.help]
    assert not missing, missing
    no_split = [prog for prog, p in parsers
                if any("--data" in a.option_strings for a in p._actions)
                and not any("--split" in a.option_strings for a in p._actions)
                and not prog.startswith("mmreward robotics")]  # robotics --data: episode folders, not rows
    assert not no_split, no_split
    no_eval_split = [prog for prog, p in parsers if any("--eval-data" in a.option_strings for a in p._actions)
                     and not any("--eval-split" in a.option_strings for a in p._actions)]
    assert not no_eval_split, no_eval_split


@pytest.mark.parametrize("argv, expected", [
    (["train-codec", "--data", "d", "--out", "o", "--max-steps", "7", "--save-every", "3"],
     {"steps": 7, "ckpt_every": 3}),
    (["train-video", "--data", "d", "--codec", "c", "--out", "o", "--max-steps", "7"], {"steps": 7}),
    (["train-progress", "--data", "d", "--out", "o", "--max-steps", "9"], {"steps": 9}),
    (["train-expert", "--save-every", "2", "--num-eval-episodes", "3", "--replay-buffer-size", "100"],
     {"snapshot_every": 2, "eval_episodes": 3, "replay_size": 100}),
    (["collect", "--episode-steps", "70", "--out", "o"], {"max_steps": 70}),  # train-expert's spelling
    (["collect", "--out", "o"], {"max_steps": None}),
    (["train-rl", "--eval-episodes", "4", "--replay-size", "50"], {"num_eval_episodes": 4, "replay_buffer_size": 50}),
    (["eval-expert", "--model", "m", "--out", "x.json"], {"json": "x.json"}),
    (["eval-rl", "--run", "r", "--out", "y.json"], {"json": "y.json"}),
    (["eval-rl", "--run", "r"], {"json": None}),
    (["train-codec", "--data", "d", "--out", "o"], {"steps": 2000, "ckpt_every": 500}),  # defaults kept
])
def test_robotics_accepts_the_spellings_of_the_other_commands(argv, expected):
    from mmreward.robotics.cli import build_parser

    args = vars(build_parser().parse_args(argv))
    assert {k: args[k] for k in expected} == expected


def test_choices_spelled_with_hyphens_are_accepted():
    from mmreward.text.prm.cli import _parser

    assert _parser().parse_args(["eval", "--model", "m", "--data", "d", "--format", "math-shepherd"]).format == \
        "math_shepherd"


def test_a_json_object_of_several_row_lists_needs_a_split(tmp_path):
    """{"train": [...], "test": [...]} read without a split was read from "train" without a word: an
    evaluation then reported training rows. Several lists of rows need a split, as a DatasetDict does."""
    import json

    from mmreward.core.data import DataError, read_records

    path = tmp_path / "d.json"
    path.write_text(json.dumps({"train": [{"a": 1}], "test": [{"a": 2}], "meta": ["x"]}))
    with pytest.raises(DataError, match=r"several lists of rows, \['test', 'train'\]: choose one with split="):
        read_records(str(path))
    assert read_records(str(path), split="test") == [{"a": 2}]
    path.write_text(json.dumps({"train": [{"a": 1}], "columns": ["a"]}))  # one list of rows: no choice to make
    assert read_records(str(path)) == [{"a": 1}]



def test_a_missing_split_of_eval_data_names_eval_split(tmp_path, capsys):
    """The refusal of a source of several splits named only --split: given for --eval-data, the user
    was told to use the flag of the other data source."""
    import json

    from mmreward.cli import main
    from mmreward.text.prm.synthetic import make_dataset

    rows = make_dataset(4, seed=0, max_value=5)
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"dev": rows[:2], "test": rows[2:]}))
    assert main(["prm", "train", "--data", str(path), "--split", "test", "--eval-data", str(path), "--out",
                 str(tmp_path / "run"), "--tiny-tokenizer", "step", "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "several lists of rows" in err and "--eval-split for --eval-data" in err, err
    assert not (tmp_path / "run").exists()  # refused before the run started
