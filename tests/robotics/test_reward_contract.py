"""The robotics reward models on the one model contract: Diffusion Reward, the progress ranker and RND
score `Episode` inputs (score = summed reward, score_parts = per-frame rewards), save as one atomic
folder with one manifest, load through `mmreward.load` (the shipped checkpoints by name, in their
0.1 format), and report bad inputs, devices and dtypes clearly."""
import hashlib
import importlib.util
import json
import os

import numpy as np
import pytest
import torch

import mmreward
from mmreward.core.data import DataError
from mmreward.core.device import DeviceError
from mmreward.core.folders import CheckpointError
from mmreward.core.inputs import Episode
from mmreward.robotics.data.episodes import Episode as StoredEpisode, save_episode
from mmreward.robotics.pretrained import HERE, available
from mmreward.robotics.reward import RND, DiffusionReward, ProgressConfig, ProgressModel, RNDConfig

from test_diffusion_reward import frames, make_reward


def fitted_reward():
    dr = make_reward()
    dr.fit_statistics([frames(6, s) for s in range(2)])
    dr.update_rnd(frames(6, 3))
    return dr


def fitted_ranker():
    torch.manual_seed(0)
    ranker = ProgressModel(ProgressConfig(image_size=32, channels=(4, 8), hidden_dim=8))
    ranker.statistics.copy_(torch.tensor([0.1, 2.0, 12.0, -1.0, 1.0], dtype=torch.float64))
    return ranker


def test_diffusion_reward_scores_episodes_as_its_forward_does(tmp_path):
    dr = fitted_reward()
    ep, success = frames(7, 5), torch.tensor([0, 0, 0, 0, 1, 1, 1])
    per_frame = dr(ep, success=success)
    path = str(tmp_path / "ep.npz")
    save_episode(path, StoredEpisode(frames=ep.numpy(), actions=np.zeros((6, 2)), rewards=np.zeros(6),
                                     success=np.zeros(6, bool)))
    inputs = [Episode(ep, success), Episode(ep.numpy(), success.tolist()),
              {"frames": path, "success": success.tolist()}, Episode(ep)]
    parts = dr.score_parts(inputs)
    for p in parts[:3]:
        assert torch.equal(p, per_frame)
    assert torch.equal(parts[3], dr(ep))
    scores = dr.score(inputs)
    assert scores.shape == (4,) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, torch.stack([p.sum() for p in parts]))
    # the video-model batch is the saved one unless asked: the chain noise is drawn per batch
    assert dr.default_batch_size == dr.config.batch_size
    assert dr.score_parts([Episode(ep)], batch_size=2)[0].shape == (7,)


def test_frames_saved_elsewhere_score_from_any_npz_resized(tmp_path):
    """An .npz with just a ``frames`` array (from another environment) scores like the frames; a path's
    frames of another size are resized like a video's; files that are not archives or hold no frames are
    one error naming the file."""
    from mmreward.robotics.data.inputs import find_episodes
    from mmreward.robotics.data.video import resize_frame

    dr = fitted_reward()
    ep = frames(5, 2)
    np.savez(tmp_path / "own.npz", frames=ep.numpy(), success=np.array([0, 0, 0, 1, 1]))
    assert torch.equal(dr.score_parts([Episode(str(tmp_path / "own.npz"))])[0], dr(ep))
    (src,) = find_episodes([str(tmp_path / "own.npz")], with_success=True)
    assert torch.equal(dr.score_parts([src.input])[0], dr(ep, success=torch.tensor([0, 0, 0, 1, 1])))
    big = np.repeat(np.repeat(ep.numpy(), 2, axis=1), 2, axis=2)  # (5, 64, 64, 3)
    np.savez(tmp_path / "big.npz", frames=big)
    resized = torch.from_numpy(np.stack([resize_frame(f, (32, 32)) for f in big]))
    assert torch.equal(dr.score_parts([Episode(str(tmp_path / "big.npz"))])[0], dr(resized))
    with pytest.raises(DataError, match="big.npz must be uint8 frames"):  # checked, not converted
        np.savez(tmp_path / "big.npz", frames=big.astype(np.float32))
        dr.score([Episode(str(tmp_path / "big.npz"))])
    np.savez(tmp_path / "other.npz", images=big)
    with pytest.raises(DataError, match=r"other.npz has no 'frames' array \(it holds images\)"):
        dr.score([Episode(str(tmp_path / "other.npz"))])
    (tmp_path / "text.npz").write_text("hello")
    for run in (lambda p: dr.score([Episode(p)]), lambda p: find_episodes([p])):
        with pytest.raises(DataError, match="text.npz is not an .npz archive"):
            run(str(tmp_path / "text.npz"))


def test_ranker_and_rnd_score_episodes_the_same_way():
    ep = frames(5, 1)
    ranker = fitted_ranker()
    rnd = RND(RNDConfig(image_size=32, channels=(4, 8, 8), feature_dim=16, hidden_dim=16))
    for model in (ranker, rnd):
        (parts,) = model.score_parts([Episode(ep)])
        torch.testing.assert_close(parts, model(ep))
        torch.testing.assert_close(model.score([Episode(ep)], batch_size=2), parts.sum()[None])


def test_save_is_one_atomic_folder_with_one_manifest(tmp_path, monkeypatch):
    dr = fitted_reward()
    dr.set_progress(fitted_ranker())
    folder = tmp_path / "dr"
    dr.save_pretrained(str(folder))
    manifest = json.loads((folder / "manifest.json").read_text())["files"]
    for part in ("codec", "video", "rnd", "progress"):
        assert f"{part}/model.safetensors" in manifest and f"{part}/config.json" in manifest
        assert not (folder / part / "manifest.json").exists()  # one manifest for the whole folder
    ep = frames(6, 9)
    loaded = mmreward.load(str(folder))
    assert isinstance(loaded, DiffusionReward) and loaded.progress is not None and loaded.rnd is not None
    assert torch.equal(loaded(ep), dr(ep)) and torch.equal(loaded.rnd.stat, dr.rnd.stat)

    # a save killed half-way (after the codec, inside the video model) leaves the old folder as it was
    before = {p: (folder / p).read_bytes() for p in manifest}
    dr.statistics[0] += 1.0
    import mmreward.robotics.reward.diffusion_reward as drmod

    real = drmod._write_part

    def dies_in_video(part, where):
        if where.endswith("video"):
            raise KeyboardInterrupt
        real(part, where)

    monkeypatch.setattr(drmod, "_write_part", dies_in_video)
    with pytest.raises(KeyboardInterrupt):
        dr.save_pretrained(str(folder))
    assert {p: (folder / p).read_bytes() for p in manifest} == before
    assert sorted(os.listdir(tmp_path)) == ["dr"]  # no temporary folder left behind
    # a truncated sub-model is caught by the manifest, naming the file
    weights = folder / "video" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="video/model.safetensors"):
        DiffusionReward.from_pretrained(str(folder))


def test_every_robotics_reward_loads_with_mmreward_load(tmp_path):
    ranker, rnd = fitted_ranker(), RND(RNDConfig(image_size=32, channels=(4, 8, 8), feature_dim=16, hidden_dim=16))
    rnd.update(frames(4, 0))
    for name, model in (("ranker", ranker), ("rnd", rnd)):
        model.save_pretrained(str(tmp_path / name))
        back = mmreward.load(str(tmp_path / name))
        assert type(back) is type(model)
        assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))
    assert mmreward.load(str(tmp_path / "rnd")).predictor.training  # RND stays trainable after loading


def _tree_digest(folder):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            h.update(f.encode())
            with open(os.path.join(root, f), "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


@pytest.mark.skipif("metaworld-64" not in available(), reason="no shipped checkpoint")
def test_shipped_checkpoints_load_by_name_and_path_unchanged():
    ep = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    motion_frames = {"metaworld-64": 22720, "metaworld-64-v1": 0, "adroit-64": 8080}
    for name in ("metaworld-64", "metaworld-64-v1", "adroit-64"):
        folder = os.path.join(HERE, name)
        digest = _tree_digest(folder)
        if name == "metaworld-64-v1":  # the 0.1 format, read as it is
            assert not os.path.exists(os.path.join(folder, "manifest.json"))
        by_name, by_path = mmreward.load(name), mmreward.load(folder)
        assert isinstance(by_name, DiffusionReward) and by_name.progress is not None
        assert torch.equal(by_name.score_parts([Episode(ep)])[0], by_path(ep))
        # the default carries its expert motion statistics: --motion-scale needs no refit
        assert int(by_name.motion_statistics[1]) == motion_frames[name]
        assert _tree_digest(folder) == digest  # loading never rewrites the shipped weights


@pytest.mark.skipif("metaworld-64" not in available(), reason="no shipped checkpoint")
def test_devices_and_dtypes_are_checked_before_loading():
    bad = "cuda:99" if torch.cuda.is_available() else "cuda"
    with pytest.raises(DeviceError, match="device 'cuda"):
        DiffusionReward.from_pretrained(os.path.join(HERE, "metaworld-64"), bad)
    with pytest.raises(DeviceError, match="float32"):
        mmreward.load("metaworld-64", dtype="bf16")
    assert next(mmreward.load("metaworld-64", dtype=torch.float32).parameters()).dtype == torch.float32


def test_bad_score_inputs_name_the_input_and_field(tmp_path):
    dr = fitted_reward()
    ep = frames(4)
    cases = [
        (Episode(ep.float()), r"input 0: field 'frames' must be uint8"),
        (Episode(ep[..., 0]), r"input 0: field 'frames' must be uint8 frames \[T, H, W, 3\]"),
        (Episode(torch.zeros(3, 16, 16, 3, dtype=torch.uint8)), "16x16 frames; the model takes 32x32"),
        (Episode(ep, [1, 0]), r"input 0: field 'success' must have one value per frame \(4\), got 2"),
        (Episode(ep, [0, 0, float("nan"), 1]), "field 'success' has NaN"),
        (Episode(ep, ["yes"] * 4), "field 'success' must be per-frame booleans or numbers"),
        (Episode(123), "field 'frames' must be uint8 frames"),
    ]
    for bad, msg in cases:
        with pytest.raises(DataError, match=msg):
            dr.score([bad])
    with pytest.raises(DataError, match="missing video or frame folder .*nope.mp4"):
        dr.score([Episode(str(tmp_path / "nope.mp4"))])
    with pytest.raises(DataError, match="input 0: missing field 'frames'"):
        dr.score([{"prompt": "p", "response": "r"}])


def test_robotics_exports_the_shipped_parts_and_no_names_of_other_domains():
    import mmreward.robotics as robotics
    import mmreward.text as text
    import mmreward.vision as vision
    from mmreward.core import inputs

    def exported(mod):
        names = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
        return set(names) - {"annotations", "importlib", "TYPE_CHECKING"}

    ours = exported(robotics)
    assert {"ProgressModel", "ProgressConfig", "DiffusionReward", "RND", "Episode"} <= ours
    assert not ours & exported(text) and not ours & exported(vision)
    assert robotics.Episode is inputs.Episode  # the score input, the same class as core's
    optional = {"gymnasium": {"DiffusionRewardWrapper", "DiffusionRewardVectorWrapper", "MetaWorldPixelEnv", "PixelGymEnv", "relabel_episode"}}
    missing = set().union(*(names for mod, names in optional.items() if importlib.util.find_spec(mod) is None))
    for name in sorted(ours - missing):
        assert getattr(robotics, name) is not None


def test_a_served_episode_model_scores_as_mmreward_load_does():
    """The server asked every model for batch_size = the inputs of one forward; an episode model's batch_size
    counts video-model windows (Diffusion Reward draws its chain noise per batch), so served rewards differed
    from the same model's. A client given numpy / torch frames sends them as the protocol's shape + data."""
    from mmreward.serve import RewardClient
    from mmreward.serve.app import BackgroundServer
    from mmreward.serve.config import ServeConfig

    dr = fitted_reward()
    eps = [Episode(frames(7, 5).numpy(), np.array([0, 0, 0, 0, 1, 1, 1])), Episode(frames(6, 1))]
    want, want_parts = dr.score(eps).tolist(), [p.tolist() for p in dr.score_parts(eps)]
    assert dr.score(eps, batch_size=2).tolist() != want  # what batch_size = 2 inputs gave: other rewards
    with BackgroundServer(dr, ServeConfig(port=0)) as url:
        client = RewardClient(url)
        got_parts = client.score(eps)["parts"]
        assert [len(p) for p in got_parts] == [7, 6]
        for got, expected in zip(got_parts, want_parts):
            np.testing.assert_allclose(got, expected, atol=1e-6)
        assert client.score(eps, output="scores")["scores"] == pytest.approx(want, abs=1e-5)
        with pytest.raises(ValueError, match=r"input 0.frames: frames go to the server as uint8"):
            client.score([Episode(frames(3, 0).float())])
