"""A robot-learning user's own expert videos through the Diffusion Reward chain (import -> train-codec ->
train-video -> fit-stats -> score), on what such a user really runs into: a codec retrained after the video
model, episodes of two sizes, an output folder of their own files, grayscale / RGBA frames, an episode
folder passed where one episode goes; demo folders as they come (hidden macOS files, nested sub-folders,
.m4v / HDF5 files, a corrupt video mid-import, a demo given twice, 1-frame stills), frames as Python code has
them (lists of frames, int / PIL images, another size) and a gymnasium env rendering RGBA / grayscale."""
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


def _demos(root, names, T=3):
    """Videos (``.mp4``) and frame folders (names without an extension) under ``root``, 24 px."""
    from mmreward.robotics.data.video import write_frame_folder, write_video

    for i, name in enumerate(names):
        x = frames(T + i, i).numpy()[:, :24, :24]
        (write_video if name.endswith(".mp4") else write_frame_folder)(str(root / name), x)
    return root


def test_hidden_files_next_to_the_videos_are_no_episodes(tmp_path, capsys):
    """Demos copied from a Mac carry ``._ep_0.mp4`` metadata files (and a frame folder ``._000.png``), a
    notebook ``.ipynb_checkpoints/``: import-videos and score failed on them as corrupt videos / empty frame
    folders, so the folder could not be used at all."""
    from mmreward.robotics import find_episodes
    from mmreward.robotics.data.video import expand_sources, read_frame_folder

    demos = _demos(tmp_path / "demos", ["ep_0.mp4", "ep_1"])
    (demos / "._ep_0.mp4").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (demos / "ep_1" / "._000000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (demos / ".ipynb_checkpoints").mkdir()
    (demos / ".DS_Store").write_bytes(b"junk")
    (demos / "__MACOSX").mkdir()  # an unzipped macOS archive's metadata folder
    (demos / "__MACOSX" / "._ep_0.mp4").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    want = [str(demos / "ep_0.mp4"), str(demos / "ep_1")]
    assert expand_sources(str(demos)) == want == [s.path for s in find_episodes(str(demos))]
    assert len(read_frame_folder(str(demos / "ep_1"))) == 4
    out = tmp_path / "data"
    assert main(["import-videos", str(demos), "--task", "t", "--out", str(out), "--size", "16", "--no-progress"]) == 0
    assert sorted(os.listdir(out)) == ["manifest.json", "t_demo_ep_0.npz", "t_demo_ep_1.npz"]
    hidden = demos / ".hidden.mp4"  # a hidden file named as a source is read
    hidden.write_bytes((demos / "ep_0.mp4").read_bytes())
    assert expand_sources([str(hidden)]) == [str(hidden)]


def test_videos_in_sub_folders_are_imported_as_score_reads_them(tmp_path, capsys):
    """``demos/robot_a/clip.mp4``: score took the videos of a sub-folder, import-videos read the sub-folder as
    a frame folder and failed with "frame folder demos/robot_a holds no .png/.jpg/.jpeg/.bmp images"."""
    from mmreward.robotics import find_episodes
    from mmreward.robotics.data.video import load_frames

    demos = tmp_path / "demos"
    _demos(demos / "robot_a", ["a.mp4", "b"])
    _demos(demos / "robot_b" / "day 2", ["c.mp4"])
    _demos(demos, ["top.mp4"])
    want = [str(demos / "robot_a" / "a.mp4"), str(demos / "robot_a" / "b"), str(demos / "robot_b" / "day 2" / "c.mp4"),
            str(demos / "top.mp4")]
    assert [s.path for s in find_episodes([str(demos)])] == want
    out = tmp_path / "data"
    assert main(["import-videos", str(demos), "--task", "t", "--out", str(out), "--size", "16", "--no-progress"]) == 0
    assert "4 episodes" in capsys.readouterr().out
    with pytest.raises(DataError, match=r"robot_a holds no .* images but videos, .npz files or folders: it is a folder "
                                        r"of episodes, not one frame folder; give it as a source of its own"):
        load_frames(str(demos / "robot_a"))
    eps = synthetic_folder(str(demos / "robot_b" / "episodes"), size=24)  # an episode folder two levels down
    assert [s.path for s in find_episodes([str(demos)])] == [*want[:3], os.path.join(eps, "expert_0.npz"),
                                                              os.path.join(eps, "expert_1.npz"), want[3]]
    (demos / "empty").mkdir()  # an empty sub-folder is named, not skipped
    assert main(["import-videos", str(demos), "--task", "t", "--out", str(out), "--size", "16", "--no-progress"]) == 2
    assert os.path.join(str(demos), "empty") + " holds no videos" in capsys.readouterr().err


def test_a_corrupt_video_mid_import_leaves_a_manifest_of_what_was_stored(tmp_path, capsys):
    """Adding demos to an episode folder, one of them corrupt: the episodes stored before it were files its
    manifest did not list, and the import run again (corrupt file removed) took their names as taken and stored
    every demo a second time as ``…-2.npz``."""
    from mmreward.robotics.data.episodes import read_manifest

    demos = _demos(tmp_path / "demos", ["a.mp4", "c.mp4"])
    (demos / "b.mp4").write_bytes(b"not a video" * 50)
    out = tmp_path / "data"
    synthetic_folder(str(out), size=16)  # the user's folder, with episodes already
    args = ["import-videos", str(demos), "--task", "t", "--out", str(out), "--size", "16", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "b.mp4" in err and "1 of 3 sources were imported" in err, err
    assert [e["file"] for e in read_manifest(str(out))] == ["expert_0.npz", "expert_1.npz", "t_demo_a.npz"]
    (demos / "b.mp4").unlink()
    assert main(args) == 0
    assert sorted(os.listdir(out)) == ["expert_0.npz", "expert_1.npz", "manifest.json", "t_demo_a.npz", "t_demo_c.npz"]
    assert len(read_manifest(str(out))) == 4


def test_integer_frames_are_refused_saying_how_to_make_them_uint8(tmp_path):
    """``np.array(frames)`` of Python ints is int64, a 16-bit PNG uint16: refused with only "got torch.int64"."""
    dr = make_reward(rnd=False)
    for dtype in (np.int64, np.uint16, np.int32):
        x = frames(3).numpy().astype(dtype)
        with pytest.raises(DataError, match=r"got torch\.\w+ \[3, 32, 32, 3\]; integer frames\? .*astype\(np\.uint8\)"):
            dr.score([Episode(x)])
        with pytest.raises(TypeError, match=r"integer frames\? values 0\.\.255: x\.astype\(np\.uint8\)"):
            train_vqgan([x], VQGANConfig(**CODEC), str(tmp_path / "c"), steps=1, progress_bar=False)
    with pytest.raises(TypeError, match=r"uint8 \(pixel values 0\.\.255\), got torch\.bool$"):  # no hint that misleads
        train_vqgan([np.zeros((3, 32, 32, 3), bool)], VQGANConfig(**CODEC), str(tmp_path / "c"), steps=1,
                    progress_bar=False)


@pytest.mark.parametrize("shape, dtype, hint", [((32, 32, 4), np.uint8, r"RGBA\? .*frame\[\.\.\., :3\]"),
                                                ((32, 32), np.uint8, r"grayscale\? .*np\.repeat"),
                                                ((32, 32, 1), np.uint8, r"grayscale\? .*np\.repeat"),
                                                ((32, 32, 3), np.int64, r"values 0\.\.255: x\.astype\(np\.uint8\)")])
def test_the_wrapper_says_how_to_convert_a_render_of_another_kind(shape, dtype, hint):
    """A user's env rendering RGBA / grayscale frames: "must give one uint8 frame [H, W, 3], got shape
    [32, 32, 4]" said nothing of the conversion (frame_fn) to apply; int frames said nothing at all."""
    import gymnasium as gym

    from mmreward.robotics.wrappers import DiffusionRewardWrapper

    class Env(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (2,))
        action_space = gym.spaces.Box(-1, 1, (2,))

        def reset(self, seed=None, options=None):
            return np.zeros(2, np.float32), {}

        def render(self):
            return np.zeros(shape, dtype)

    env = DiffusionRewardWrapper(Env(), make_reward(rnd=False))
    with pytest.raises((ValueError, TypeError), match=r"env\.render\(\) must give .*" + hint):
        env.reset(seed=0)
    env.close()


def test_episodes_as_lists_of_frames_train_as_they_score(tmp_path):
    """The frames an RL loop collects (a list of [H, W, 3] arrays per episode) are scored as they are, but
    train_vqgan / train_video_model / fit_statistics refused them: "episode 0 must be a uint8 tensor / array,
    got list"; a list of PIL images did not say how to convert it."""
    from PIL import Image

    eps = [frames(3, s).numpy() for s in range(2)]
    as_lists = [list(e) for e in eps]
    kw = dict(steps=1, batch_size=2, progress_bar=False, seed=0)
    a = train_vqgan(eps, VQGANConfig(**CODEC), str(tmp_path / "a"), **kw)
    b = train_vqgan(as_lists, VQGANConfig(**CODEC), str(tmp_path / "b"), **kw)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    video = train_video_model(as_lists, VQDiffusionConfig(**VIDEO), str(tmp_path / "v"), codec=a, **kw)
    dr = DiffusionReward(a, video, DiffusionRewardConfig(skip_step=4))
    assert dr.fit_statistics(as_lists) == dr.fit_statistics(eps)
    pil = [[Image.fromarray(f) for f in e] for e in eps]
    with pytest.raises(TypeError, match=r"episode 0 must be .*got list; PIL images\? np\.stack\(\[np\.asarray"):
        train_vqgan(pil, VQGANConfig(**CODEC), str(tmp_path / "c"), **kw)
    with pytest.raises(DataError, match=r"input 0: field 'frames' .*; PIL images\? np\.stack"):
        dr.score([Episode(pil[0])])


def test_m4v_and_mpeg_videos_in_a_folder_are_episodes(tmp_path, capsys):
    """A phone's / ffmpeg's ``.m4v`` export next to ``.mp4`` demos was skipped without a word (a folder of only
    ``.m4v`` files "holds no videos"), though OpenCV decodes it."""
    from mmreward.robotics import find_episodes

    demos = _demos(tmp_path / "demos", ["a.mp4"])
    os.replace(demos / "a.mp4", demos / "a.m4v")
    _demos(demos, ["b.mp4"])
    assert [s.name for s in find_episodes(str(demos))] == ["a.m4v", "b.mp4"]
    out = tmp_path / "data"
    assert main(["import-videos", str(demos), "--task", "t", "--out", str(out), "--size", "16", "--no-progress"]) == 0
    assert sorted(os.listdir(out)) == ["manifest.json", "t_demo_a.npz", "t_demo_b.npz"]


def test_train_progress_leaves_out_one_frame_demos_naming_them(tmp_path, capsys):
    """A 1-frame demo in --data trains the codec and the video model (it has no window) but train-progress
    failed on it with "episode 2 has 1 frame ... leave the 1-frame ones out", naming no file to leave out."""
    data = synthetic_folder(str(tmp_path / "data"))
    np.savez(tmp_path / "still.npz", frames=frames(1).numpy())
    assert main(["import-videos", str(tmp_path / "still.npz"), "--task", "synthetic", "--out", data, "--size", "32",
                 "--no-progress"]) == 0
    capsys.readouterr()
    base = ["train-progress", "--data", data, "--steps", "4", "--stop-at", "1", "--set", "channels=8,16,16", *QUIET]
    assert main([*base, "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    assert "left out 1 episode of 1 frame (" + os.path.join(data, "synthetic_demo_still.npz") + ")" in err, err
    assert main([*base, "--out", str(tmp_path / "q"), "--policies", "demo"]) == 2  # nothing left: refused, named
    assert "every --data episode has 1 frame (" + os.path.join(data, "synthetic_demo_still.npz") in \
        capsys.readouterr().err


def test_hdf5_demos_are_named_with_how_to_bring_them_in_before_any_import(tmp_path, capsys):
    """robomimic / LIBERO demos are HDF5: import-videos stored the videos before it and then failed with
    "demos.hdf5 is neither a frame folder nor a video", saying nothing of the .npz form it does read."""
    demos = _demos(tmp_path / "demos", ["a.mp4"])
    (demos / "b.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n")
    out = tmp_path / "data"
    assert main(["import-videos", str(demos / "a.mp4"), str(demos / "b.hdf5"), "--task", "t", "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "b.hdf5 is neither a video" in err and "np.savez('demo_0.npz', frames=" in err
    assert not out.exists()
    os.unlink(demos / "a.mp4")
    assert main(["import-videos", str(demos), "--task", "t", "--out", str(out), "--no-progress"]) == 2
    assert "holds no videos, .npz frame arrays, frame folders or images; HDF5 is not read" in capsys.readouterr().err


def test_one_frame_demos_alone_say_how_long_a_video_episode_must_be(tmp_path):
    """Only stills (1-frame demos) for the video model: "no episode is long enough to make a training window"
    said neither how long they are nor how long one must be."""
    with pytest.raises(ValueError, match=r"each of the 2 has at most 1 frame\(s\), a window needs 2 .*longer episodes"):
        train_video_model([frames(1).numpy(), frames(1, 1).numpy()], VQDiffusionConfig(**VIDEO), str(tmp_path / "v"),
                          codec=_codec(0), steps=1, progress_bar=False)


def test_a_demo_given_twice_is_refused_before_any_import(tmp_path, capsys):
    """``import-videos demos demos/ep_0.mp4`` (a folder and a glob that overlap) stored ep_0 twice (``…_ep_0.npz``
    and ``…_ep_0-2.npz``): the codec and video model then trained on it twice, without a word."""
    demos = _demos(tmp_path / "demos", ["ep_0.mp4", "ep_1.mp4"])
    os.symlink(demos / "ep_1.mp4", tmp_path / "link.mp4")
    out = tmp_path / "data"
    for extra, also in ((str(demos / "ep_0.mp4"), "by itself and inside a source folder"),
                        (str(tmp_path / "link.mp4"), "also as " + str(demos / "ep_1.mp4"))):
        assert main(["import-videos", str(demos), extra, "--task", "t", "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"{extra} is given twice ({also}" in err, err
        assert not out.exists()


def test_frames_of_another_size_say_how_to_resize_them_when_scored():
    """A model trained on 32 px demos scoring 64 px frames: the trainers and relabel_episode say how to resize
    (as the docs promise: "other sizes are refused with the conversion to apply"), score said only the sizes."""
    dr = make_reward(rnd=False)
    with pytest.raises(DataError, match=r"has 64x64 frames; the model takes 32x32: resize each frame with "
                                        r"mmreward\.robotics\.data\.video\.resize_frame\(frame, 32\)"):
        dr.score([Episode(np.zeros((2, 64, 64, 3), np.uint8))])


@pytest.mark.parametrize("fps", [0, -5, float("nan"), 1e6, "30"])
def test_write_video_refuses_an_fps_it_cannot_write_naming_it(tmp_path, fps):
    """A recording's unknown rate (0 / NaN) passed on to write_video failed as "OpenCV cannot write .mp4 video
    here (codec mp4v unavailable)", below FFmpeg's own error lines; "30" (a string from metadata) the same."""
    from mmreward.robotics.data.video import read_video, write_video

    with pytest.raises(ValueError, match=r"fps must be a number in \(0, 65535\], got"):
        write_video(str(tmp_path / "a.mp4"), frames(2).numpy(), fps=fps)
    assert not os.listdir(tmp_path)
    write_video(str(tmp_path / "a.mp4"), frames(2).numpy(), fps=np.float32(29.97))
    assert read_video(str(tmp_path / "a.mp4")).shape == (2, 32, 32, 3)


def test_a_policy_label_that_cannot_be_selected_is_refused_not_rewritten(tmp_path, capsys):
    """``import-videos --policy "human demo"`` stored the episodes as policy "human-demo" without a word, so
    ``--policies "human demo"`` (split at the blank) selected nothing; ``--policy ""`` became "demo"."""
    demos = _demos(tmp_path / "demos", ["a.mp4"])
    out = tmp_path / "data"
    for policy, suggestion in (("human demo", "'human-demo'"), ("", "'demo'"), ("teleop/vr", "'teleop-vr'")):
        assert main(["import-videos", str(demos), "--task", "t", "--policy", policy, "--out", str(out),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"policy label {policy!r} may hold only letters, digits" in err and f"e.g. {suggestion}" in err, err
        assert not out.exists()
    assert main(["import-videos", str(demos), "--task", "t", "--policy", "human-demo_v1.2", "--out", str(out),
                 "--size", "16", "--no-progress"]) == 0
    assert os.path.isfile(out / "t_human-demo_v1.2_a.npz")
