"""Registrations that are wrong in ways found only at load time: a model_type registered by path to
something that is not a model class, a registered layout whose detect function fails."""
import json

import pytest

import mmreward
from mmreward import registry


def failing_detect(folder, config):
    return config["no_such_key"]  # a user's detect that assumes every folder has a config.json field


@pytest.fixture
def odd_folder(tmp_path):
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"model_type": "edge_registered"}))
    yield str(tmp_path / "odd")
    registry.MODEL_TYPES.pop("edge_registered", None)
    registry.LAYOUTS[:] = [x for x in registry.LAYOUTS if x.name != "failing"]


def test_a_model_type_registered_to_a_function_is_named(odd_folder):
    registry.register_model("edge_registered", "json:dumps")
    with pytest.raises(registry.LoadError, match="'edge_registered' is registered as 'json:dumps', which is a function, "
                                                 "not a class with from_pretrained"):
        mmreward.load(odd_folder)


def test_a_failing_registered_detect_function_is_named(odd_folder):
    registry.register_layout("failing", failing_detect, failing_detect, first=True)
    with pytest.raises(registry.LoadError, match=r"layout 'failing' \(.*failing_detect\): its detect function failed "
                                                 r"on .*odd: KeyError: 'no_such_key'"):
        mmreward.load(odd_folder)
