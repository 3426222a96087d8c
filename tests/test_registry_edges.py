"""Registrations that are wrong in ways found only at load time: a model_type registered by path to
something that is not a model class, a registered layout whose detect function fails."""
import json
import os

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


def test_a_run_folder_resolves_to_the_reward_model_it_holds(tmp_path):
    """train-video writes its video model to RUN/model and the reward to RUN/reward: `mmreward.load(RUN)`
    (info / score / serve) took RUN/model and failed with "cannot tell which reward model this is"."""
    from mmreward.registry import resolve_folder

    for sub, model_type in (("model", "vq_diffusion"), ("reward", "diffusion_reward")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "config.json").write_text(json.dumps({"model_type": model_type}))
    assert resolve_folder(str(tmp_path)) == str(tmp_path / "reward")
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "text_reward_model"}))
    assert resolve_folder(str(tmp_path)) == str(tmp_path / "model")  # a run's model/ first, as before
    solo = tmp_path / "solo"
    (solo / "model").mkdir(parents=True)
    (solo / "model" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert resolve_folder(str(solo)) == str(solo / "model")  # the only candidate: read, refused with its reason


def test_a_snapshot_folder_and_a_missing_folder_are_named_as_such(tmp_path, monkeypatch):
    from mmreward.core.folders import CheckpointError
    from mmreward.registry import LoadError, load

    snap = tmp_path / "checkpoint-00000004"
    snap.mkdir()
    (snap / "state.safetensors").write_bytes(b"")
    with pytest.raises(LoadError, match=r"is a training snapshot \(step 4 .*not a model folder.*--resume"):
        load(str(snap))
    # a trailing separator or a space makes a path a folder, not an owner/name hub id (no hub lookup); relative to
    # an empty folder (a checkout's own runs/ would exist)
    monkeypatch.chdir(tmp_path)
    for missing in ("runs/", "my runs/rm", "runs/rm v2"):
        with pytest.raises(CheckpointError, match="does not exist"):
            load(missing)


def test_a_finished_run_of_a_trainer_that_saves_no_model_is_not_called_unfinished(tmp_path):
    """A Trainer run of a plain nn.Module (or train_refl, which saves its UNet by hand) writes no model/: it
    was named "a training run that has not finished", to be rerun."""
    import torch

    from mmreward.core.trainer import TrainConfig, Trainer
    from mmreward.registry import LoadError, load

    data = [{"x": torch.randn(3), "y": torch.randn(1)} for _ in range(8)]
    net = torch.nn.Linear(3, 1)
    collate = lambda rows: {k: torch.stack([r[k] for r in rows]) for k in rows[0]}  # noqa: E731
    loss = lambda model, b: (((model(b["x"]) - b["y"]) ** 2).mean(), {})  # noqa: E731
    Trainer(net, TrainConfig(output_dir=str(tmp_path), max_steps=2, batch_size=4, progress=False, tensorboard=False,
                             log_every=0, plot=False), data, collate, loss).fit()
    with pytest.raises(LoadError, match="finished training run that saved no model folder.*checkpoint-00000002"):
        load(str(tmp_path))


def test_another_trainers_checkpoint_folders_are_not_called_an_unfinished_run(tmp_path):
    """A folder of transformers-Trainer-style checkpoint-<N>/ folders (a release such as VideoReward's) was
    "a training run that has not finished … rerun with --resume": advice for a run mmreward never made."""
    from mmreward.core.checkpoint import run_folder_problem
    from mmreward.registry import LoadError, load

    (tmp_path / "checkpoint-1000").mkdir()
    (tmp_path / "checkpoint-1000" / "model.pth").write_bytes(b"x")
    (tmp_path / "model_config.json").write_text("{}")
    assert run_folder_problem(str(tmp_path)) is None
    with pytest.raises(LoadError) as e:
        load(str(tmp_path))
    assert "--resume" not in str(e.value) and "not finished" not in str(e.value)
    # an mmreward snapshot in it is a run again
    (tmp_path / "checkpoint-00000004").mkdir()
    (tmp_path / "checkpoint-00000004" / "state.safetensors").write_bytes(b"")
    assert "has not finished" in run_folder_problem(str(tmp_path))


def test_a_load_option_the_folders_loader_does_not_take_is_one_error(tmp_path):
    """mmreward.load(folder, normalize_reward=True) on a layout without that option raised the loader's internal
    TypeError ("load_sequence_classifier() got an unexpected keyword argument")."""
    import sys

    pytest.importorskip("transformers")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "text"))
    from text_rm_fixtures import bert_config, word_tokenizer

    import mmreward
    from mmreward.text import RewardModel

    RewardModel.from_backbone(bert_config(), tokenizer=word_tokenizer(pair=True)).save_pretrained(str(tmp_path / "rm"))
    for option in ("normalize_reward", "step_separator"):
        with pytest.raises(ValueError, match=rf"mmreward.load: {option}= is not an option of text_reward_model "
                                             r"folders .*they take tokenizer"):
            mmreward.load(str(tmp_path / "rm"), **{option: True})
    assert mmreward.load(str(tmp_path / "rm"), tokenizer=None) is not None  # an option it takes still works


def test_a_mistyped_local_folder_with_one_slash_is_named_as_a_local_folder(tmp_path, monkeypatch):
    """``runs/rmm`` (one slash, a typo of runs/rm) was read as a hub id: "not a local folder and could not be
    fetched from the hub ... set HF_HUB_OFFLINE=0" told the user to enable downloads."""
    from mmreward.core.folders import CheckpointError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "rm").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"model folder 'runs/rmm' does not exist \(runs/ holds \['rm'\]\)"):
        registry.resolve_folder("runs/rmm")
    with pytest.raises(CheckpointError, match="could not be fetched from the hub"):  # no such local owner folder
        registry.resolve_folder("no-such-org/no-such-reward-model")
