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
    Tiny(TinyConfig(width=9)).save_pretrained(str(tmp_path / "b"))
    _edit_config(str(tmp_path / "b"), width=4)  # weights of width 9 under a config of width 4
    with pytest.raises(CheckpointError, match="do not match its config"):
        Tiny.from_pretrained(str(tmp_path / "b"))
    m = Tiny(TinyConfig(width=4))  # save_pretrained refuses to write such a folder from given weights
    with pytest.raises(ValueError, match=r"state_dict\['lin.weight'\] has shape \(1, 9\), the model's has \(1, 4\)"):
        m.save_pretrained(str(tmp_path / "c"), state_dict={"lin.weight": torch.zeros(1, 9), "lin.bias": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"lacks 1 of the model's tensors, e.g. \['lin.bias'\]"):
        m.save_pretrained(str(tmp_path / "c"), state_dict={"lin.weight": torch.zeros(1, 4)})
    with pytest.raises(ValueError, match="holds 2 the model does not have"):
        m.save_pretrained(str(tmp_path / "c"), state_dict={f"module.{k}": v for k, v in m.state_dict().items()})
    with pytest.raises(TypeError, match=r"state_dict\['lin.bias'\] must be a tensor, got int"):
        m.save_pretrained(str(tmp_path / "c"), state_dict={"lin.weight": torch.zeros(1, 4), "lin.bias": 1})
    assert not (tmp_path / "c").exists()


def _edit_config(folder, **changes):
    """config.json edited by hand (the manifest rewritten to match, as a user who edits on purpose does)."""
    import json
    import os

    from mmreward.core import folders

    path = os.path.join(folder, "config.json")
    with open(path) as f:
        body = json.load(f)
    for key, value in changes.items():
        if key == "format_version":
            body[key] = value
        else:
            body["config"][key] = value
    with open(path, "w") as f:
        json.dump(body, f)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(folders.build_manifest(folder), f)


@pytest.mark.parametrize("changes,message", [
    ({"width": "3"}, r"'width' must be an integer, got '3'"),
    ({"width": 3.0}, r"'width' must be an integer, got 3.0"),
    ({"width": True}, r"'width' must be an integer, got True"),
    ({"dims": 4}, r"'dims' must be a list, got 4"),
    ({"scale": float("nan")}, r"'scale' must be a number, not NaN"),
    ({"scale": "0.5"}, r"'scale' must be a number, got '0.5'"),
    ({"norm": "yes"}, r"'norm' must be true or false, got 'yes'"),
    ({"names": ["a", 2]}, r"'names' must be a list whose items are each a string"),
    ({"format_version": 99}, r"format_version 99; this mmreward reads up to 2"),
    ({"format_version": "2"}, r"format_version must be an integer >= 1, got '2'"),
])
def test_a_hand_edited_config_names_the_file_and_field(tmp_path, changes, message):
    """Values of the wrong kind failed deep inside torch (a string width) or loaded silently (NaN,
    "yes" for a flag, a format from a newer version)."""
    from typing import Optional

    @dataclass
    class TypedConfig:
        width: int = 3
        dims: tuple = (2, 2)
        scale: float = 1.0
        norm: bool = True
        names: tuple[str, ...] = ("a",)
        label: Optional[str] = None

    class Typed(Tiny):
        model_type = "typed"
        config_class = TypedConfig

    Typed(TypedConfig()).save_pretrained(str(tmp_path / "m"))
    _edit_config(str(tmp_path / "m"), **changes)
    with pytest.raises(CheckpointError, match=message) as info:
        Typed.from_pretrained(str(tmp_path / "m"))
    assert "config.json" in str(info.value)
    _edit_config(str(tmp_path / "m"), width=3, dims=[2, 2], scale=1, norm=False, names=["b"], label=None,
                 format_version=2)  # the plain JSON kinds of each field load (an int where a float belongs)
    assert Typed.from_pretrained(str(tmp_path / "m")).config == TypedConfig(scale=1, norm=False, names=("b",))


def test_batch_sizes_of_any_integer_type_are_taken():
    import numpy as np

    from mmreward.core.model import check_batch_size

    assert check_batch_size(np.int64(2)) == 2 and type(check_batch_size(np.int64(2))) is int
    for bad in (0, -1, 2.0, True, "2", None):
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            check_batch_size(bad)
