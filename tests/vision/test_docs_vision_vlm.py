"""docs/vision_vlm.md's backbone forms, checked as written: a local transformers folder; an
mmreward model folder or a folder without config.json is named, not a transformers error."""
import pytest

pytest.importorskip("transformers")

from mmreward.vision.vlm_data import build_backbone  # noqa: E402


def test_a_folder_that_is_not_a_transformers_model_is_named(tmp_path):
    """An mmreward VLM folder given as the backbone used to fail inside transformers ("The checkpoint
    you are trying to load has model type `vlm_reward` but Transformers does not recognize this
    architecture"); a folder without config.json with "Unrecognized model in ..."."""
    import json

    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "config.json").write_text(json.dumps({"model_type": "vlm_reward", "config": {},
                                                             "backbone_config": {"model_type": "qwen2_vl"}}))
    with pytest.raises(ValueError, match=r"holds an mmreward 'vlm_reward' model: open it with mmreward.load"):
        build_backbone(str(tmp_path / "rm"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"'.*empty' has no config.json: give a transformers VLM folder"):
        build_backbone(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="is not a local folder"):
        build_backbone("Qwen/Qwen2-VL-2B-Instruct")
