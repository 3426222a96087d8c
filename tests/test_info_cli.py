"""``mmreward info``: what a folder holds and which reader opens it, without loading (or with --load);
bad folders are one line and exit 2."""
import json
import os

import pytest

from mmreward.cli import main

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory):
    import sys

    import torch
    from transformers import BertConfig

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "text"))
    from text_rm_fixtures import word_tokenizer

    from mmreward.text import RewardModel

    folder = tmp_path_factory.mktemp("info") / "rm"
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                     max_position_embeddings=64)
    RewardModel.from_backbone(cfg, tokenizer=word_tokenizer(pair=True)).save_pretrained(str(folder))
    return str(folder)


def test_info_names_the_reader_without_loading_and_details_with_load(rm_folder, capsys):
    assert main(["info", rm_folder, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["reads_as"] == "text_reward_model" and info["kind"] == "mmreward model" and "manifest" in info
    assert "parameters" not in info and info["files"] >= 3 and info["bytes"] > 0
    assert main(["info", rm_folder, "--load", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["input_types"] == {"TextPair": ["prompt", "response"]} and info["parameters"] > 1000
    assert info["dtype"] == "float32" and info["per_step_scores"] is False and info["config"]["input_format"] == "pair"
    assert main(["info", "metaworld-64", "--load"]) == 0
    out = capsys.readouterr().out
    assert "read as 'diffusion_reward'" in out and "Episode(frames, success)" in out and "one per step / frame" in out


def test_info_on_bad_folders_is_one_line_exit_2(rm_folder, tmp_path, capsys):
    import shutil

    damaged = shutil.copytree(rm_folder, tmp_path / "damaged")
    with open(os.path.join(damaged, "model.safetensors"), "r+b") as f:
        f.truncate(100)
    (tmp_path / "empty").mkdir()
    for target, message in ((str(damaged), "manifest records"), (str(tmp_path / "empty"), "cannot tell which reward model"),
                            (str(tmp_path / "missing"), "does not exist")):
        assert main(["info", target]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_hub_snapshot_links_are_followed_and_a_missing_blob_is_named(tmp_path, capsys):
    """A hub cache snapshot links every file to a blob; a download that stopped leaves a link to nothing."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "text"))
    from text_rm_fixtures import bert_config, save_classifier, word_tokenizer

    source, blobs = tmp_path / "source", tmp_path / "models--org--rm" / "blobs"
    snapshot = tmp_path / "models--org--rm" / "snapshots" / "0abc"
    save_classifier(source, bert_config(), word_tokenizer(pair=True))
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, name in enumerate(sorted(os.listdir(source))):
        os.rename(source / name, blobs / f"blob{i}")
        os.symlink(os.path.join("..", "..", "blobs", f"blob{i}"), snapshot / name)
    assert main(["info", str(snapshot), "--load", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reads_as"] == "transformers-sequence-classifier"
    os.remove(os.path.realpath(snapshot / "model.safetensors"))
    assert main(["info", str(snapshot)]) == 0  # what the folder holds, and what it lacks
    assert "missing  model.safetensors: a link to a file that is not there" in capsys.readouterr().out
    assert main(["info", str(snapshot), "--load"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.safetensors is a link to ../../blobs/blob" in err[0] and "which does not exist" in err[0], err


def test_load_reports_the_dtype_of_most_parameters_and_the_others(rm_folder, capsys, monkeypatch):
    """It reported the first parameter's dtype: a bf16 backbone under an fp32 head showed as fp32 or
    bf16 depending on which came first."""
    import torch

    import mmreward.registry as registry

    real_detect = registry.detect

    def mixed_detect(folder):
        what, loader = real_detect(folder)

        def load_mixed(*a, **kw):
            model = loader(*a, **kw)
            model.backbone.to(torch.bfloat16)  # a large bf16 backbone under a small fp32 head
            model.head.float()
            return model

        return what, load_mixed

    monkeypatch.setattr(registry, "detect", mixed_detect)
    assert main(["info", rm_folder, "--load", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dtype"] == "bfloat16" and set(info["dtypes"]) == {"bfloat16", "float32"}
    assert info["dtypes"]["bfloat16"] > info["dtypes"]["float32"] > 0
    assert main(["info", rm_folder, "--load"]) == 0
    out = capsys.readouterr().out
    assert f"parameters, bfloat16 ({info['dtypes']['float32']:,} float32) on cpu" in out, out
