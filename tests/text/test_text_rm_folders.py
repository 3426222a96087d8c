"""Text RM folders copied in part: a folder without its tokenizer/ (relative or absolute path), one with NaN
weights, ``mmreward info`` on a copy without its weights file."""
import os
import shutil

import pytest
import torch

import mmreward
from mmreward.core.folders import CheckpointError
from mmreward.text.reward_model import RewardModel

from text_rm_fixtures import llama_config, word_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rmfolders") / "rm"
    torch.manual_seed(0)
    RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer()).save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("manifest", [False, True])
def test_a_folder_without_its_tokenizer_says_so_not_a_hub_error(saved, tmp_path, monkeypatch, manifest):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(saved, "copy")
    shutil.rmtree("copy/tokenizer")
    if not manifest:
        os.remove("copy/manifest.json")
    for path in ("copy", str(tmp_path / "copy")):  # relative "copy/tokenizer" once read as a hub id
        with pytest.raises(CheckpointError) as e:
            mmreward.load(path)
        msg = str(e.value)
        assert "huggingface" not in msg and "connect" not in msg
        assert "tokenizer" in msg and ("lacks its tokenizer/" in msg or "is incomplete" in msg)
    if not manifest:  # the way out the message names works
        rm = mmreward.load("copy", tokenizer=word_tokenizer())
        assert rm.score([{"prompt": "what is", "response": "two"}]).shape == (1,)


def test_nan_weights_of_a_text_rm_are_refused(tmp_path):
    rm = RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer())
    with torch.no_grad():
        rm.head.weight[0, 3] = float("nan")
    rm.save_pretrained(str(tmp_path / "nan"))
    with pytest.raises(CheckpointError, match="weight 'head.weight' holds NaN"):
        RewardModel.from_pretrained(str(tmp_path / "nan"))


def test_info_without_load_names_a_missing_tokenizer_or_weights(saved, tmp_path, capsys):
    from mmreward.cli import main

    copy = shutil.copytree(saved, tmp_path / "copy")
    os.remove(copy / "manifest.json")
    assert main(["info", str(copy)]) == 0
    capsys.readouterr()
    shutil.rmtree(copy / "tokenizer")
    assert main(["info", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "has none of tokenizer/tokenizer.json, tokenizer/vocab.txt" in err and len(err.strip().splitlines()) == 1
    os.remove(copy / "model.safetensors")
    assert main(["info", str(copy)]) == 2
    assert "has no model.safetensors, which loading reads" in capsys.readouterr().err


def test_a_backbone_config_transformers_cannot_build_names_the_field(saved, tmp_path):
    import json

    copy = shutil.copytree(saved, tmp_path / "copy")
    os.remove(copy / "manifest.json")
    body = json.loads((copy / "config.json").read_text())
    body["config"]["backbone"]["model_type"] = "no_such_arch"
    (copy / "config.json").write_text(json.dumps(body))
    with pytest.raises(CheckpointError, match=r"config.json: config field 'backbone' \(a 'no_such_arch' transformers config\)"):
        mmreward.load(str(copy))


def test_save_refuses_a_partial_state_dict_and_writes_nothing(saved, tmp_path):
    rm = mmreward.load(str(saved))
    with pytest.raises(ValueError, match="state_dict lacks 1 of the model's tensors, e.g. \\['head.bias'\\]"):
        rm.save_pretrained(str(tmp_path / "ema"), state_dict={k: v for k, v in rm.state_dict().items() if k != "head.bias"})
    assert not (tmp_path / "ema").exists()


def test_a_published_classifier_with_nan_weights_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file
    from text_rm_fixtures import bert_config, save_classifier

    save_classifier(tmp_path / "clf", bert_config(), word_tokenizer(pair=True))
    path = str(tmp_path / "clf" / "model.safetensors")
    state = load_file(path)
    state["classifier.weight"][0, 1] = float("nan")
    save_file(state, path, metadata={"format": "pt"})
    for load in (lambda: mmreward.load(str(tmp_path / "clf")), lambda: RewardModel.from_pretrained(str(tmp_path / "clf"))):
        with pytest.raises(CheckpointError, match=r"clf: weight 'head.weight' holds NaN"):
            load()


def test_prompt_share_true_is_not_read_as_one():
    from mmreward.text.reward_model import RewardModelConfig

    with pytest.raises(ValueError, match="prompt_share must be in"):
        RewardModelConfig(backbone={"model_type": "llama"}, prompt_share=True)


def test_tokenizer_argument_takes_a_folder_and_refuses_other_kinds(saved):
    rm = RewardModel.from_pretrained(str(saved), tokenizer=str(saved / "tokenizer"))  # as from_backbone takes it
    assert rm.score([{"prompt": "what is", "response": "two"}]).shape == (1,)
    with pytest.raises(TypeError, match="tokenizer= must be a transformers tokenizer or the folder of one, got int"):
        mmreward.load(str(saved), tokenizer=5)


def test_info_without_load_names_a_published_folder_without_weights(tmp_path, capsys):
    from text_rm_fixtures import bert_config, save_classifier

    from mmreward.cli import main

    save_classifier(tmp_path / "clf", bert_config(), word_tokenizer(pair=True))
    assert main(["info", str(tmp_path / "clf")]) == 0
    capsys.readouterr()
    os.remove(tmp_path / "clf" / "model.safetensors")  # config + tokenizer copied, the weights left behind
    assert main(["info", str(tmp_path / "clf")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "clf has no weights (model.safetensors" in err


def test_a_published_classifier_takes_a_tokenizer_folder(tmp_path):
    """``mmreward.load(published_folder, tokenizer="path")`` as for mmreward's own folders (was "'str' object
    is not callable"); a tokenizer of the wrong kind is named."""
    from text_rm_fixtures import bert_config, save_classifier

    tok = word_tokenizer(pair=True)
    save_classifier(tmp_path / "clf", bert_config(), tok)
    tok.save_pretrained(str(tmp_path / "tok"))
    ref = mmreward.load(str(tmp_path / "clf")).score([{"prompt": "what is", "response": "two"}])
    got = mmreward.load(str(tmp_path / "clf"), tokenizer=str(tmp_path / "tok")).score([{"prompt": "what is", "response": "two"}])
    torch.testing.assert_close(got, ref)
    with pytest.raises(TypeError, match="tokenizer= must be a transformers tokenizer or the folder of one, got int"):
        mmreward.load(str(tmp_path / "clf"), tokenizer=3)


def test_score_command_names_the_file_row_a_model_refuses(saved, tmp_path, capsys):
    """A preference row is two model inputs: the model's "input 2" is the file's row 1."""
    import json

    from mmreward.cli import main

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "what is", "chosen": "two", "rejected": "one"}) + "\n"
                    + json.dumps({"messages": [{"role": "user", "content": "what is"}]}) + "\n")
    assert main(["score", "--model", str(saved), "--data", str(rows)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{rows}: row 1" in err and "input 2" not in err and len(err.splitlines()) == 1, err
