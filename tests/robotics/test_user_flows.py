"""User flows of the Diffusion Reward: the same frames given as an array, a list, an ``.npz``, a
frame folder of PNGs or a lossless video score the same; ``mmreward robotics score`` on a plain
folder of episode ``.npz`` files; the Gymnasium wrapper on dict observations and before reset."""
import json
import os

import numpy as np
import pytest
import torch

from mmreward.core.inputs import Episode

from test_diffusion_reward import frames
from test_robotics_input_edges import FrameEnv, fitted

gym = pytest.importorskip("gymnasium")
cv2 = pytest.importorskip("cv2")


def test_same_frames_score_the_same_however_given(tmp_path):
    from mmreward.robotics.data.video import write_frame_folder

    dr = fitted(noise=False)
    ep = frames(6, 3).numpy()
    want = dr(torch.from_numpy(ep))
    np.savez(tmp_path / "a.npz", frames=ep)
    write_frame_folder(str(tmp_path / "f"), ep)
    given = [ep, list(ep), str(tmp_path / "a.npz"), str(tmp_path / "f")]
    path = str(tmp_path / "v.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"FFV1"), 10, (32, 32))  # lossless
    if w.isOpened():
        for f in ep:
            w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        w.release()
        given.append(path)
    for g in given:
        assert torch.equal(dr.score_parts([Episode(g)])[0], want), g
    # other sizes are resized the same way from an .npz and from a frame folder
    big = np.stack([cv2.resize(f, (96, 96), interpolation=cv2.INTER_NEAREST) for f in ep])
    np.savez(tmp_path / "big.npz", frames=big)
    write_frame_folder(str(tmp_path / "bigf"), big)
    a, b = dr.score_parts([Episode(str(tmp_path / "big.npz")), Episode(str(tmp_path / "bigf"))])
    assert torch.equal(a, b) and a.shape == (6,)


def test_score_cli_reads_a_plain_folder_of_npz_files(tmp_path, capsys):
    """A folder (no manifest) of .npz files used to be "holds no videos, frame folders or images", and
    .npz files next to a frame folder were skipped without a word."""
    from mmreward.robotics.cli import main
    from mmreward.robotics.data.video import write_frame_folder

    dr = fitted(noise=False)
    model = str(tmp_path / "model")
    dr.save_pretrained(model)
    ep = frames(5, 2).numpy()
    d = tmp_path / "eps"
    d.mkdir()
    np.savez(d / "a.npz", frames=ep)
    np.savez(d / "b.npz", frames=ep[::-1].copy(), success=np.zeros(4))
    write_frame_folder(str(d / "c"), ep)
    (d / "notes.txt").write_text("ignored")
    capsys.readouterr()
    assert main(["score", "--model", model, str(d), "--json", "--no-progress", "--threads", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in doc["episodes"]] == ["a", "b", "c"]
    want = dr(torch.from_numpy(ep)).tolist()
    assert doc["episodes"][0]["rewards"] == want and doc["episodes"][2]["rewards"] == want
    # b's flags are of the wrong length: named when they are used
    assert main(["score", "--model", model, str(d), "--success", "--no-progress", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "b.npz: field 'success' must have one value per frame (5), got 4" in err and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    assert main(["score", "--model", model, str(empty), "--no-progress", "--threads", "1"]) == 2
    assert "holds no episode .npz files, videos, frame folders or images" in capsys.readouterr().err


class DictEnv(FrameEnv):
    """Dict observations {"pixels", "state"}: the wrapper takes its frames from render()."""

    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (32, 32, 3), np.uint8),
                                                  "state": gym.spaces.Box(-1, 1, (3,), np.float32)})

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        return {"pixels": obs, "state": np.zeros(3, np.float32)}, info

    def step(self, action):
        obs, *rest = super().step(action)
        return ({"pixels": obs, "state": np.zeros(3, np.float32)}, *rest)


def test_wrapper_on_dict_observations_matches_the_offline_score():
    from mmreward.robotics.wrappers import DiffusionRewardWrapper, relabel_episode

    dr = fitted(noise=False)
    env = DiffusionRewardWrapper(DictEnv(), dr)
    obs, _ = env.reset(seed=0)
    seen, rewards = [obs["pixels"]], []
    for _ in range(3):
        obs, r, *_ = env.step(np.zeros(2, np.float32))
        seen.append(obs["pixels"]), rewards.append(r)
    env.close()
    np.testing.assert_allclose(rewards, relabel_episode(dr, np.stack(seen)), atol=1e-4)
    np.testing.assert_allclose(rewards, dr.score_parts([Episode(seen)])[0][1:].numpy(), atol=1e-4)


def test_wrapper_step_before_reset_is_named():
    """step() before reset() scored a window with no reset frame (or failed deep in the model)."""
    from mmreward.robotics.wrappers import DiffusionRewardWrapper

    class Lenient(FrameEnv):
        def step(self, action):
            self.t = getattr(self, "t", 0)
            self._last = np.zeros((32, 32, 3), np.uint8)
            return super().step(action)

    env = DiffusionRewardWrapper(Lenient(), fitted(displacement_scale=1.0))
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        env.step(np.zeros(2, np.float32))


def test_score_cli_keeps_episodes_of_the_same_name_apart(tmp_path, capsys):
    """Two runs' ep.npz were both "ep": the per-step --out .json (keyed by name) kept one of them;
    a name with a comma split its --out .csv row."""
    import csv

    from mmreward.robotics.cli import main

    dr = fitted(noise=False)
    model = str(tmp_path / "model")
    dr.save_pretrained(model)
    paths = []
    for run, seed in (("run1", 1), ("run2", 2)):
        (tmp_path / run).mkdir()
        paths.append(str(tmp_path / run / "ep.npz"))
        np.savez(paths[-1], frames=frames(4, seed).numpy())
    comma = str(tmp_path / "a,b.npz")
    np.savez(comma, frames=frames(4, 3).numpy())
    out, out_csv = str(tmp_path / "r.json"), str(tmp_path / "r.csv")
    q = ["--no-progress", "--threads", "1"]
    assert main(["score", "--model", model, *paths, comma, "--out", out, *q]) == 0
    assert main(["score", "--model", model, *paths, comma, "--out", out_csv, *q]) == 0
    capsys.readouterr()
    doc = json.load(open(out))
    assert list(doc) == [*paths, "a,b"]
    for p in paths:
        assert doc[p] == dr(torch.from_numpy(np.load(p)["frames"])).tolist()
    rows = list(csv.reader(open(out_csv)))
    assert rows[0] == ["episode", "frame", "reward"] and all(len(r) == 3 for r in rows)
    assert {r[0] for r in rows[1:]} == {*paths, "a,b"}


def test_generic_score_cli_reads_a_folder_of_episodes_as_robotics_score_does(tmp_path, capsys):
    """`mmreward score --model M FOLDER` on a folder of episodes failed ("frame folder … holds no images")
    where `mmreward robotics score` read it; each episode is now one row, in the same order."""
    from mmreward.cli import main
    from mmreward.robotics.data.video import write_frame_folder

    dr = fitted(noise=False)
    model = str(tmp_path / "model")
    dr.save_pretrained(model)
    ep = frames(5, 2).numpy()
    d = tmp_path / "eps"
    d.mkdir()
    np.savez(d / "a.npz", frames=ep)
    np.savez(d / "b.npz", frames=ep[::-1].copy())
    write_frame_folder(str(d / "c"), ep)
    capsys.readouterr()
    assert main(["score", "--model", model, str(d), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [os.path.basename(r["file"]) for r in rows] == ["a.npz", "b.npz", "c"]
    want = dr(torch.from_numpy(ep)).tolist()
    assert rows[0]["parts"] == pytest.approx(want, abs=1e-6) and rows[2]["parts"] == pytest.approx(want, abs=1e-6)
    # a frame folder given itself is still one episode
    assert main(["score", "--model", model, str(d / "c"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parts"] == pytest.approx(want, abs=1e-6)
