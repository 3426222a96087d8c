"""Dataclass config <-> argparse round trip shared by every CLI."""
import argparse
from dataclasses import dataclass, field
from typing import Optional

import pytest

from mmreward.core.cli_config import add_config_options, config_from_args


@dataclass
class Cfg:
    steps: int = field(default=10, metadata={"help": "optimizer steps"})
    lr: float = 1e-3
    clip: Optional[float] = 1.0
    name: Optional[str] = None
    tasks: list = field(default_factory=lambda: ["a", "b"])
    channels: tuple = (16, 32)
    progress: bool = True
    mode: str = "x"


def _parse(argv, **kw):
    p = argparse.ArgumentParser()
    add_config_options(p, Cfg, **kw)
    return p, config_from_args(Cfg, p.parse_args(argv))


def test_defaults_round_trip_and_help():
    p, cfg = _parse([])
    assert cfg == Cfg()
    assert "optimizer steps (default: 10)" in p.format_help()


def test_every_kind_of_field():
    _, cfg = _parse(["--steps", "3", "--lr", "0.5", "--clip", "none", "--name", "run", "--tasks", "x,y z",
                     "--channels", "8,16,-1.5", "--no-progress", "--mode", "y"])
    assert cfg == Cfg(steps=3, lr=0.5, clip=None, name="run", tasks=["x", "y", "z"], channels=(8, 16, -1.5),
                      progress=False, mode="y")


def test_bad_values_and_choices_are_errors():
    with pytest.raises(SystemExit):
        _parse(["--steps", "three"])
    with pytest.raises(SystemExit):
        _parse(["--mode", "z"], choices={"mode": ("x", "y")})
    _, cfg = _parse(["--lr", "1"], skip=("steps",))
    assert cfg.steps == 10 and cfg.lr == 1.0


def test_command_json_output_is_valid_json_when_a_score_is_not_finite():
    """``json.dumps`` writes NaN / Infinity, which jq and JavaScript refuse: commands print null instead."""
    import json
    import math

    import numpy as np

    from mmreward.core.cli_config import json_text

    text = json_text({"score": float("nan"), "rewards": [1.5, float("inf"), np.float32("nan"), np.float64(2.0)],
                      "steps": 3, "flag": True, "nested": ({"m": -math.inf},)})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in output")) == {
        "score": None, "rewards": [1.5, None, None, 2.0], "steps": 3, "flag": True, "nested": [{"m": None}]}


def test_training_summary_prints_valid_json_for_a_nan_metric(capsys):
    """A tie-only held-out set has a NaN accuracy: the summary line stays JSON (null), not NaN."""
    import json

    from mmreward.core.cli_config import print_training_summary

    print_training_summary([{"step": 4, "loss": 0.5, "eval_accuracy": float("nan")}], {"accuracy": float("nan")}, "m")
    line = capsys.readouterr().out.splitlines()[0]
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in output")) == {
        "step": 4, "loss": 0.5, "eval_accuracy_before": None, "eval_accuracy": None}
