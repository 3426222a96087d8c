from dataclasses import dataclass

import pytest
import torch

from mmreward.core.checkpoint import CheckpointError
from mmreward.core.model import Pretrained


@dataclass
class TinyConfig:
    width: int = 3
    dims: tuple = (2, 2)


class Tiny(Pretrained, torch.nn.Module):
    model_type = "tiny"
    config_class = TinyConfig

    def __init__(self, config=None):
        super().__init__()
        self.config = config or TinyConfig()
        self.lin = torch.nn.Linear(self.config.width, 1)


class Other(Tiny):
    model_type = "other"


def test_roundtrip_keeps_weights_config_and_eval_mode(tmp_path):
    m = Tiny(TinyConfig(width=5, dims=(1, 4)))
    m.save_pretrained(str(tmp_path))
    m2 = Tiny.from_pretrained(str(tmp_path))
    assert m2.config == TinyConfig(width=5, dims=(1, 4)) and not m2.training
    assert torch.equal(m2.lin.weight, m.lin.weight)


def test_wrong_model_type_and_mismatched_weights_are_clear_errors(tmp_path):
    Tiny().save_pretrained(str(tmp_path / "a"))
    with pytest.raises(CheckpointError, match="holds a 'tiny' model, not 'other'"):
        Other.from_pretrained(str(tmp_path / "a"))
    m = Tiny(TinyConfig(width=4))
    m.save_pretrained(str(tmp_path / "b"), state_dict={"lin.weight": torch.zeros(1, 9), "lin.bias": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="do not match its config"):
        Tiny.from_pretrained(str(tmp_path / "b"))
