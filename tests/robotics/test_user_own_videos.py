"""A robot-learning user's own expert videos through the Diffusion Reward chain (import -> train-codec ->
train-video -> fit-stats -> score), on what such a user really runs into: a codec retrained after the video
model, episodes of two sizes, an output folder of their own files, grayscale / RGBA frames, an episode
folder passed where one episode goes."""
import os

import numpy as np
import pytest
import torch

from mmreward.core.data import DataError
from mmreward.core.inputs import Episode
from mmreward.robotics.cli import main
from mmreward.robotics.codec import VQGAN, VQGANConfig, train_vqgan
from mmreward.robotics.reward import DiffusionReward, DiffusionRewardConfig
from mmreward.robotics.video import VQDiffusionConfig, train_video_model

from test_diffusion_reward import CODEC, VIDEO, frames, make_reward
from test_pipeline_cli import QUIET, synthetic_folder


def _codec(seed):
    torch.manual_seed(seed)
    return VQGAN(VQGANConfig(**CODEC)).eval()


def test_a_video_model_is_refused_next_to_a_codec_it_was_not_trained_on(tmp_path):
    """A codec retrained into the same folder after train-video (same sizes, other weights) was paired with
    the old video model by fit-stats / DiffusionReward without a word: every frame was scored as unrelated
    token sequences, statistics and all."""
    codec, other = _codec(0), _codec(1)
    eps = [frames(4, s).numpy() for s in range(2)]
    video = train_video_model(eps, VQDiffusionConfig(**VIDEO), str(tmp_path / "v"), codec=codec, steps=1,
                              batch_size=2, progress_bar=False)
    assert video.config.codec_digest == codec.token_digest() != other.token_digest()
    with pytest.raises(ValueError, match=r"video model was trained on the tokens of another codec .*"
                                         r"train-video --codec"):
        DiffusionReward(other, video)
    dr = DiffusionReward(codec, video, DiffusionRewardConfig(skip_step=4))
    dr.save_pretrained(str(tmp_path / "r"))  # the pair saved together loads (and the digest survives the trip)
    again = DiffusionReward.from_pretrained(str(tmp_path / "r"))
    assert again.video.config.codec_digest == codec.token_digest() == again.codec.token_digest()
    for dtype in (torch.bfloat16, torch.float16, torch.float64):  # the same codec saved in another dtype matches
        folder = str(tmp_path / f"r_{dtype}".replace("torch.", ""))
        DiffusionReward(_codec(0), video, DiffusionRewardConfig(skip_step=4)).to(dtype).save_pretrained(folder)
        assert DiffusionReward.from_pretrained(folder).codec.made_tokens_of(video.config.codec_digest)
    # a model trained on tokens (no codec) or saved before the digest was recorded is not checked
    assert DiffusionReward(other, make_reward(rnd=False).video).video.config.codec_digest == ""


def test_fit_stats_refuses_a_retrained_codec_before_fitting(tmp_path, capsys, monkeypatch):
    data = synthetic_folder(str(tmp_path / "data"))
    codec_cfg = VQGANConfig(**CODEC)
    eps = [np.load(os.path.join(data, f"expert_{i}.npz"))["frames"] for i in range(2)]
    codec = train_vqgan(eps, codec_cfg, str(tmp_path / "codec"), steps=1, batch_size=2, progress_bar=False)
    train_video_model(eps, VQDiffusionConfig(**VIDEO), str(tmp_path / "video"), codec=codec, steps=1, batch_size=2,
                      progress_bar=False)
    train_vqgan(eps, codec_cfg, str(tmp_path / "codec"), steps=2, batch_size=2, progress_bar=False)  # --resume
    monkeypatch.setattr(DiffusionReward, "fit_statistics", lambda *a, **k: pytest.fail("fitted before the check"))
    args = ["fit-stats", "--data", data, "--codec", str(tmp_path / "codec"), "--video", str(tmp_path / "video"),
            "--out", str(tmp_path / "reward"), *QUIET]
    assert main(args) == 2
    assert "trained on the tokens of another codec" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "reward")


def test_output_folders_of_the_users_own_files_are_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """fit-stats --out (train-video --reward-out) naming a folder of the user's videos was refused only when
    the model was saved: after fitting the statistics (train-video: after the whole training run)."""
    data = synthetic_folder(str(tmp_path / "data"))
    mine = tmp_path / "my videos"
    mine.mkdir()
    (mine / "demo.mp4").write_bytes(b"not really")
    monkeypatch.setattr(DiffusionReward, "fit_statistics", lambda *a, **k: pytest.fail("fitted before the check"))
    import mmreward.robotics.video.vq_diffusion as vq

    monkeypatch.setattr(vq, "train_video_model", lambda *a, **k: pytest.fail("trained before the check"))
    codec, video = tmp_path / "codec", tmp_path / "video"
    _codec(0).save_pretrained(str(codec))
    make_reward(rnd=False).video.save_pretrained(str(video))
    for args in (["fit-stats", "--video", str(video), "--out", str(mine)],
                 ["train-video", "--out", str(tmp_path / "run"), "--reward-out", str(mine), "--steps", "1"]):
        assert main([*args, "--data", data, "--codec", str(codec), *QUIET]) == 2
        err = capsys.readouterr().err
        assert "did not save (demo.mp4)" in err and ("--out" in err or "--reward-out" in err), err
    assert os.listdir(mine) == ["demo.mp4"]


def test_training_data_of_two_frame_sizes_names_the_episodes(tmp_path, capsys):
    """``--data a,b`` of 32 px and 48 px episodes: "episodes have different frame shapes: [(32, 32, 3),
    (48, 48, 3)]" named neither the folder nor the file; train_vqgan / fit_statistics did not say which
    episode either (fit_statistics found it only after fitting the episodes before it)."""
    a = synthetic_folder(str(tmp_path / "a"))
    b = synthetic_folder(str(tmp_path / "b"), size=48)
    assert main(["train-codec", "--data", f"{a},{b}", "--out", str(tmp_path / "c"), "--steps", "1", *QUIET]) == 2
    err = capsys.readouterr().err
    assert "different frame sizes" in err and os.path.join(b, "expert_0.npz") in err and "48x48" in err, err
    small, big = frames(3).numpy(), np.zeros((3, 48, 48, 3), np.uint8)
    with pytest.raises(ValueError, match=r"episode 1 has 48x48 frames, episode 0 32x32"):
        train_vqgan([small, big], VQGANConfig(**CODEC), str(tmp_path / "v"), steps=1, progress_bar=False)
    dr = make_reward(rnd=False)
    dr.tokenize = lambda *a: pytest.fail("fitted an episode before checking them all")
    with pytest.raises(ValueError, match=r"episode 1 must be 32x32 pixels, got 48x48"):
        dr.fit_statistics([small, big])
    with pytest.raises(ValueError, match=r"episode 1 must be 32x32 pixels, got 48x48"):
        train_video_model([small, big], VQDiffusionConfig(**VIDEO), str(tmp_path / "w"), codec=_codec(0), steps=1,
                          progress_bar=False)


@pytest.mark.parametrize("shape, hint", [((3, 32, 32), r"grayscale frames \[T, H, W\]\? .*np.repeat"),
                                         ((3, 32, 32, 1), r"grayscale frames \[T, H, W, 1\]"),
                                         ((3, 32, 32, 4), r"RGBA frames\? .*x\[\.\.\., :3\]")])
def test_grayscale_and_rgba_frames_are_refused_with_the_conversion(tmp_path, shape, hint):
    """Frames are never recoloured silently; the error now says how to make grayscale / RGBA frames RGB."""
    dr = make_reward(rnd=False)
    x = np.zeros(shape, np.uint8)
    with pytest.raises(DataError, match=r"input 0: field 'frames' must be uint8 frames \[T, H, W, 3\].*" + hint):
        dr.score([Episode(x)])
    np.savez(tmp_path / "gray.npz", frames=x)
    with pytest.raises(DataError, match=r"gray.npz must be uint8 frames.*" + hint):
        dr.score([Episode(str(tmp_path / "gray.npz"))])
    with pytest.raises(ValueError, match=r"episode 0 must be uint8 \[T, H, W, 3\].*" + hint):
        train_vqgan([x], VQGANConfig(**CODEC), str(tmp_path / "c"), steps=1, progress_bar=False)


def test_an_episode_folder_given_as_one_episode_says_what_to_do(tmp_path):
    """``Episode("data/mine")`` (the folder import-videos wrote) failed with "frame folder data/mine holds no
    .png/.jpg/.jpeg/.bmp images", though the CLI's score takes that folder."""
    from mmreward.robotics import find_episodes

    data = synthetic_folder(str(tmp_path / "data"))
    dr = make_reward(rnd=False, use_std=False)
    with pytest.raises(DataError, match=r"is an episode folder \(manifest.json\) without frame images, not one "
                                        r"episode: .*find_episodes"):
        dr.score([Episode(data)])
    found = find_episodes([data])  # what the message points to scores the folder's episodes
    assert [r.shape for r in dr.score_parts([s.input for s in found])] == [torch.Size([6])] * 2


def test_a_retrained_video_model_does_not_leave_the_old_reward_model_in_its_run(tmp_path, capsys):
    """``train-video --overwrite --no-fit-stats`` (or ``--resume`` to more steps with ``--no-fit-stats``) left
    OUT/reward of the previous video model in place, and ``score --model OUT`` scored with it silently."""
    from test_pipeline_cli import VIDEO as VIDEO_ARGS

    data = synthetic_folder(str(tmp_path / "data"))
    codec, run = tmp_path / "codec", str(tmp_path / "run")
    _codec(0).save_pretrained(str(codec))
    base = ["train-video", "--data", data, "--codec", str(codec), "--out", run, "--batch-size", "4", *VIDEO_ARGS,
            *QUIET]
    assert main([*base, "--steps", "1"]) == 0 and os.path.isdir(os.path.join(run, "reward"))
    assert main([*base, "--steps", "1", "--resume", "--no-fit-stats"]) == 0  # a finished run: still its reward
    assert os.path.isdir(os.path.join(run, "reward"))
    capsys.readouterr()
    assert main([*base, "--steps", "2", "--resume", "--no-fit-stats"]) == 0
    assert "removed" in capsys.readouterr().out and not os.path.exists(os.path.join(run, "reward"))
    assert main([*base, "--steps", "1", "--overwrite"]) == 0 and os.path.isdir(os.path.join(run, "reward"))
    reward = os.path.join(run, "reward", "manifest.json")
    before = open(reward).read()
    # an --overwrite run refused on its settings leaves the folder as it was, its reward model included
    assert main([*base, "--steps", "1", "--overwrite", "--set", "num_codes=2"]) == 2
    assert open(reward).read() == before
    # the same run again (same seed and data: the same model) keeps its reward; another seed's model does not
    assert main([*base, "--steps", "1", "--overwrite", "--no-fit-stats"]) == 0 and open(reward).read() == before
    assert main([*base, "--steps", "1", "--overwrite", "--no-fit-stats", "--seed", "1"]) == 0
    assert not os.path.exists(os.path.join(run, "reward"))
    assert main(["score", "--model", run, os.path.join(data, "expert_0.npz"), *QUIET]) == 2
    assert "no 'diffusion_reward'" in capsys.readouterr().err


def test_84px_frames_are_refused_saying_which_sizes_the_codec_takes(tmp_path, capsys):
    """DrQ-style 84 px demos: train-codec printed "(16 codes, 10x10 tokens)" and then failed with only
    "image_size 84 is not divisible by 2^3"."""
    data = synthetic_folder(str(tmp_path / "data"), size=84)
    assert main(["train-codec", "--data", data, "--out", str(tmp_path / "c"), "--steps", "1",
                 "--set", "channels=8,8,8,8", *QUIET]) == 2
    out, err = capsys.readouterr()
    assert "tokens" not in out and "image_size 84 is not divisible by 2^3 = 8" in err and "use 80 or 88 px" in err
    assert not os.path.exists(tmp_path / "c")
    VQGANConfig(**{**CODEC, "image_size": 84, "channels": (8, 8, 8)}).validate()  # 3 levels: 84 / 4 = 21 tokens


def test_score_success_says_which_episodes_have_no_flags(tmp_path, capsys):
    """``score --success`` on imported demos / videos (unlabelled) scored them without the success term and
    said nothing, as if the flag had been applied."""
    from mmreward.robotics.data.episodes import Episode as Stored, episode_entry, save_episode, update_manifest

    labelled = synthetic_folder(str(tmp_path / "data"))
    demos = tmp_path / "demos"
    ep = Stored(frames=frames(4).numpy(), actions=np.zeros((3, 0), np.float32), rewards=np.full(3, np.nan, np.float32),
                success=np.zeros(3, bool), labelled=False)
    save_episode(str(demos / "demo_0.npz"), ep)
    update_manifest(str(demos), [episode_entry("demo_0.npz", ep, task="t", policy="demo")])
    model = tmp_path / "model"
    make_reward(rnd=False, use_std=False).save_pretrained(str(model))
    assert main(["score", "--model", str(model), labelled, *QUIET, "--success"]) == 0
    assert "no success flags" not in capsys.readouterr().err
    assert main(["score", "--model", str(model), labelled, str(demos), *QUIET, "--success"]) == 0
    assert "--success: 1 of 3 episodes have no success flags" in capsys.readouterr().err


def test_find_episodes_takes_one_folder_as_a_string_or_a_path(tmp_path):
    """``find_episodes("data/mine")`` read the string's characters as sources ("video source 'd' does not
    exist"), and a ``pathlib.Path`` in the list failed on ``.lower()``."""
    import pathlib

    from mmreward.robotics import find_episodes
    from mmreward.robotics.data.video import expand_sources, write_video

    data = synthetic_folder(str(tmp_path / "data"))
    want = [s.path for s in find_episodes([data])]
    assert [s.path for s in find_episodes(data)] == want == [s.path for s in find_episodes(pathlib.Path(data))]
    assert [s.path for s in find_episodes([pathlib.Path(data)])] == want
    demos = tmp_path / "demos"
    write_video(str(demos / "a.mp4"), frames(3).numpy())
    assert expand_sources(str(demos)) == expand_sources(demos) == [str(demos / "a.mp4")]


def test_a_video_run_saved_before_the_codec_digest_was_recorded_still_resumes(tmp_path, monkeypatch):
    """The codec digest entered the settings a resume must match: a run saved before it (its snapshot has no
    such key) was refused on --resume ("model.codec_digest: saved ..., now ...")."""
    import mmreward.robotics.video.vq_diffusion as vq

    codec = _codec(0)
    eps = [frames(4, s).numpy() for s in range(2)]
    recorded = vq.resume_settings

    def as_before(*args, **kwargs):  # what a run of the earlier code saved: its model config had no such field
        settings = recorded(*args, **kwargs)
        settings["model"].pop("codec_digest")
        return settings

    monkeypatch.setattr(vq, "resume_settings", as_before)
    kw = dict(codec=codec, batch_size=2, progress_bar=False, ckpt_every=1)
    train_video_model(eps, VQDiffusionConfig(**VIDEO), str(tmp_path / "v"), steps=1, **kw)
    monkeypatch.setattr(vq, "resume_settings", recorded)
    video = train_video_model(eps, VQDiffusionConfig(**VIDEO), str(tmp_path / "v"), steps=2, resume=True, **kw)
    assert video.config.codec_digest == codec.token_digest()
