"""`mmreward.load` and its tables: every registered type is a contract model, errors say what is wrong.
(Each domain's tests round-trip its own model types: save → mmreward.load → identical scores.)"""
import json
import os
import subprocess
import sys

import pytest
import torch

import mmreward
from mmreward import registry
from mmreward.core.folders import CheckpointError
from mmreward.core.inputs import INPUT_TYPES
from mmreward.core.model import RewardScorer


@pytest.mark.parametrize("model_type", sorted(registry.MODEL_TYPES))
def test_every_model_type_is_a_contract_model(model_type):
    cls = registry.model_class(model_type)
    assert issubclass(cls, RewardScorer), f"{cls} does not implement the model contract"
    assert model_type in (cls.model_type, *cls.legacy_model_types)
    assert cls.input_types and all(t in INPUT_TYPES.values() for t in cls.input_types)


@pytest.mark.parametrize("layout", registry.LAYOUTS, ids=lambda x: x.name)
def test_every_layout_resolves(layout):
    assert callable(registry._resolve(layout.detect)) and callable(registry._resolve(layout.load))


def test_unknown_and_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        mmreward.load(str(tmp_path / "nope"))
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"model_type": "frobnicator"}))
    with pytest.raises(registry.LoadError, match="frobnicator.*text_reward_model"):
        mmreward.load(str(tmp_path / "odd"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        mmreward.load(str(tmp_path / "file.txt"))


def test_run_folder_resolves_to_its_model_and_shipped_names(tmp_path):
    from mmreward.robotics.reward.rnd import RND, RNDConfig

    torch.manual_seed(0)
    RND(RNDConfig(image_size=32)).save_pretrained(str(tmp_path / "run" / "model"))
    (tmp_path / "run" / "metrics.csv").write_text("step,loss\n")
    model = mmreward.load(str(tmp_path / "run"))
    assert type(model).__name__ == "RND"
    assert registry.resolve_folder("metaworld-64").endswith(os.path.join("pretrained", "metaworld-64"))


class _Tiny(RewardScorer, torch.nn.Module):
    model_type = "tiny_test_scorer"
    from mmreward.core.inputs import TextPair as _TP

    input_types = (_TP,)

    def __init__(self, config=None):
        super().__init__()
        self.config = config
        self.w = torch.nn.Parameter(torch.tensor(2.0))

    def _score(self, items, batch_size):
        return torch.stack([self.w * len(x.response) for x in items]).detach()

    @classmethod
    def _load(cls, folder, body, device, **kw):
        from mmreward.core.model import load_state_strict, load_weights

        m = cls()
        load_state_strict(m, load_weights(folder), folder)
        return m


def test_register_model_and_score_cli(tmp_path, capsys):
    registry.register_model("tiny_test_scorer", f"{__name__}:_Tiny")
    try:
        _Tiny().save_pretrained(str(tmp_path / "m"))
        model = mmreward.load(str(tmp_path / "m"))
        assert model.score([{"prompt": "p", "response": "abc"}]).tolist() == [6.0]
        rows = tmp_path / "rows.jsonl"
        rows.write_text('{"prompt": "p", "response": "ab"}\n{"prompt": "p", "chosen": "abcd", "rejected": "a"}\n')
        from mmreward.cli import main

        assert main(["score", "--model", str(tmp_path / "m"), "--data", str(rows), "--json"]) == 0
        out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert out[0]["score"] == 4.0 and out[1]["score_chosen"] == 8.0 and out[1]["score_rejected"] == 2.0
        rows.write_text('{"prompt": "p"}\n')
        assert main(["score", "--model", str(tmp_path / "m"), "--data", str(rows)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "rows.jsonl" in err[0] and "row 0" in err[0]
    finally:
        registry.MODEL_TYPES.pop("tiny_test_scorer", None)


def test_python_dash_m_mmreward_runs():
    out = subprocess.run([sys.executable, "-m", "mmreward", "--help"], capture_output=True, text=True, check=True)
    assert "score" in out.stdout and "serve" in out.stdout
