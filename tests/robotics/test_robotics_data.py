"""Episode files, manifests and EpisodeDataset windows (numpy only: no simulator needed)."""
import json
import os

import numpy as np
import pytest

from mmreward.robotics.data.episodes import (
    Episode,
    EpisodeDataset,
    EpisodeFileError,
    episode_entry,
    load_episode,
    read_manifest,
    save_episode,
    update_manifest,
)


def make_episode(steps, seed=0, size=8, action_dim=4):
    rng = np.random.default_rng(seed)
    return Episode(
        frames=rng.integers(0, 256, (steps + 1, size, size, 3), dtype=np.uint8),
        actions=rng.uniform(-1, 1, (steps, action_dim)).astype(np.float32),
        rewards=rng.uniform(0, 1, steps).astype(np.float32),
        success=np.arange(steps) >= steps - 2,
    )


def write_folder(folder, specs):
    """specs: list of (task, policy, steps)."""
    entries = []
    for i, (task, policy, steps) in enumerate(specs):
        ep = make_episode(steps, seed=i)
        name = f"{task}_{policy}_{i}.npz"
        save_episode(os.path.join(folder, name), ep)
        entries.append(episode_entry(name, ep, task=task, policy=policy, noise=0.0, seed=i))
    update_manifest(str(folder), entries)
    return entries


def test_save_load_roundtrip_exact(tmp_path):
    ep = make_episode(5)
    path = tmp_path / "ep.npz"
    save_episode(str(path), ep)
    back = load_episode(str(path))
    for key in ("frames", "actions", "rewards", "success"):
        a, b = getattr(ep, key), getattr(back, key)
        assert a.dtype == b.dtype and np.array_equal(a, b), key
    assert back.labelled and back.length == 5 and back.succeeded
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # atomic write left no temp file


def test_episode_validates_shapes():
    with pytest.raises(ValueError, match="actions must be"):
        Episode(frames=np.zeros((3, 4, 4, 3), np.uint8), actions=np.zeros((3, 2)), rewards=np.zeros(2),
                success=np.zeros(2, bool))
    with pytest.raises(ValueError, match="uint8"):
        Episode(frames=np.zeros((3, 4, 4, 3), np.float32), actions=np.zeros((2, 2)), rewards=np.zeros(2),
                success=np.zeros(2, bool))


def test_corrupt_missing_and_foreign_files_name_the_file(tmp_path):
    good = tmp_path / "good.npz"
    save_episode(str(good), make_episode(4))
    data = good.read_bytes()
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all" * 10)
    for path in (trunc, garbage):
        with pytest.raises(EpisodeFileError, match=str(path.name)):
            load_episode(str(path))
    with pytest.raises(EpisodeFileError, match="missing episode file .*nope.npz"):
        load_episode(str(tmp_path / "nope.npz"))
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.arange(3))
    with pytest.raises(EpisodeFileError, match="foreign.npz lacks"):
        load_episode(str(foreign))
    # object arrays need pickle: refused, and reported as corrupt with the name
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, frames=np.array([{"a": 1}], dtype=object), actions=np.zeros((0, 1)), rewards=np.zeros(0),
             success=np.zeros(0, bool), labelled=np.array(True))
    with pytest.raises(EpisodeFileError, match="pickled.npz"):
        load_episode(str(pickled))


def test_manifest_update_replaces_by_file_and_reports_corruption(tmp_path):
    write_folder(tmp_path, [("a", "expert", 4), ("b", "random", 3)])
    entries = read_manifest(str(tmp_path))
    assert [e["file"] for e in entries] == ["a_expert_0.npz", "b_random_1.npz"]
    assert entries[0]["frames"] == 5 and entries[0]["length"] == 4 and entries[0]["size"] == [8, 8]
    assert entries[0]["success"] is True and entries[0]["return"] == pytest.approx(
        float(make_episode(4, seed=0).rewards.sum()), rel=1e-5)
    update_manifest(str(tmp_path), [dict(entries[0], task="a2")])
    assert [e["task"] for e in read_manifest(str(tmp_path))] == ["a2", "b"]
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(EpisodeFileError, match="corrupt manifest"):
        read_manifest(str(tmp_path))
    with pytest.raises(EpisodeFileError, match="no manifest.json"):
        read_manifest(str(tmp_path / "empty"))


def test_dataset_windows_filters_and_lazy_loading(tmp_path):
    write_folder(tmp_path, [("a", "expert", 6), ("b", "random", 4), ("a", "noisy", 2)])
    ds = EpisodeDataset(str(tmp_path), n_history=2)
    # span 3 -> windows per episode = frames - 2 = 5, 3, 1
    assert len(ds) == 5 + 3 + 1
    assert not ds._cache  # nothing loaded yet
    item = ds[6]
    assert item["task"] == "b" and item["episode"] == 1 and item["start"] == 1
    ep_b = load_episode(str(tmp_path / "b_random_1.npz"))
    assert item["frames"].shape == (3, 8, 8, 3) and item["frames"].dtype == np.uint8
    assert np.array_equal(item["frames"], ep_b.frames[1:4])
    assert list(ds._cache) == [1]
    assert np.array_equal(ds[-1]["frames"], load_episode(str(tmp_path / "a_noisy_2.npz")).frames[0:3])
    with pytest.raises(IndexError):
        ds[len(ds)]

    skip = EpisodeDataset(str(tmp_path), n_history=1, skip=2, tasks=["a"])
    assert len(skip) == (7 - 2) + (3 - 2)
    first = load_episode(str(tmp_path / "a_expert_0.npz")).frames
    assert np.array_equal(skip[0]["frames"], first[[0, 2]])
    assert {e["policy"] for e in EpisodeDataset(str(tmp_path), policies=["expert", "noisy"]).entries} == {"expert", "noisy"}
    assert len(EpisodeDataset(str(tmp_path), tasks=["zzz"])) == 0

    small = EpisodeDataset(str(tmp_path), n_history=0, cache_size=1)
    small[0], small[len(small) - 1]
    assert len(small._cache) == 1


def test_dataset_reports_missing_episode_file(tmp_path):
    write_folder(tmp_path, [("a", "expert", 3)])
    os.remove(tmp_path / "a_expert_0.npz")
    ds = EpisodeDataset(str(tmp_path))
    with pytest.raises(EpisodeFileError, match="a_expert_0.npz"):
        ds[0]


def test_dataset_checks_frame_count_against_manifest(tmp_path):
    write_folder(tmp_path, [("a", "expert", 3)])
    body = json.loads((tmp_path / "manifest.json").read_text())
    body["episodes"][0]["frames"] = 9
    (tmp_path / "manifest.json").write_text(json.dumps(body))
    with pytest.raises(EpisodeFileError, match="manifest says 9"):
        EpisodeDataset(str(tmp_path))[0]


def _write_raw(path, **overrides):
    """An episode file written with np.savez, bypassing save_episode's checks."""
    ep = make_episode(4)
    arrays = dict(frames=ep.frames, actions=ep.actions, rewards=ep.rewards, success=ep.success,
                  labelled=np.asarray(True))
    arrays.update(overrides)
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("field,value,message", [
    ("labelled", np.array([True, False]), "labelled must be one boolean, got bool of shape [2]"),
    ("labelled", np.asarray(1), "labelled must be one boolean, got int64 of shape []"),
    ("actions", np.where(np.arange(16).reshape(4, 4) == 9, np.nan, 0.0),
     "actions has NaN / inf values (first at step 2)"),
    ("rewards", np.array([0.0, np.inf, 0.0, 0.0]), "rewards has NaN / inf values (first at step 1)"),
    ("rewards", np.array([0.0, 0.0, np.nan, 0.0]), "rewards has NaN / inf values (first at step 2)"),
    ("success", np.array([0.0, 0.5, 1.0, 1.0], np.float32),
     "success must be booleans (or 0 / 1 integers), got float32"),
    ("success", np.array([0, 2, 1, 1]), "success must be booleans (or 0 / 1 integers), got int64"),
])
def test_episode_files_with_bad_values_name_the_file_and_field(tmp_path, field, value, message):
    path = _write_raw(tmp_path / "bad.npz", **{field: value})
    with pytest.raises(EpisodeFileError) as e:
        load_episode(path)
    assert str(e.value) == f"malformed episode file {path}: {message}"
    assert isinstance(e.value, ValueError)  # a user error: the CLI reports it in one line, exit 2


def test_unlabelled_episodes_may_have_unknown_rewards_but_not_infinite_ones(tmp_path):
    nan = np.full(4, np.nan, np.float32)
    ep = load_episode(_write_raw(tmp_path / "video.npz", rewards=nan, labelled=np.asarray(False),
                                 actions=np.zeros((4, 0), np.float32), success=np.zeros(4, bool)))
    assert not ep.labelled and np.isnan(ep.rewards).all() and np.isnan(ep.total_reward)
    with pytest.raises(EpisodeFileError, match="rewards has inf values"):
        load_episode(_write_raw(tmp_path / "inf.npz", rewards=np.array([np.nan, np.inf, 0, 0]),
                                labelled=np.asarray(False)))
    with pytest.raises(ValueError, match="success must be booleans"):  # the same checks on episodes built in Python
        Episode(frames=np.zeros((3, 4, 4, 3), np.uint8), actions=np.zeros((2, 2)), rewards=np.zeros(2),
                success=np.array([0.2, 1.0]))
    assert Episode(frames=np.zeros((3, 4, 4, 3), np.uint8), actions=np.zeros((2, 2), int), rewards=np.zeros(2),
                   success=np.array([0, 1])).success.dtype == bool


def test_load_episode_folder_filters_and_names_what_the_folder_has(tmp_path):
    from mmreward.robotics.data.episodes import load_episode_folder

    write_folder(tmp_path, [("a", "expert", 4), ("b", "random", 3)])
    assert [e["file"] for e, _ in load_episode_folder(str(tmp_path), policies=["expert"])] == ["a_expert_0.npz"]
    assert len(load_episode_folder(str(tmp_path), policies=["all"])) == 2
    with pytest.raises(ValueError, match=r"no episodes in .* match tasks=\['zzz'\].*\('a', 'expert'\)"):
        load_episode_folder(str(tmp_path), tasks=["zzz"])


@pytest.mark.parametrize("file", ["../outside.npz", "sub/../../outside.npz", "ABS"])
def test_manifest_entries_naming_files_outside_the_folder_are_refused(tmp_path, file):
    """Before: a manifest entry '../x.npz' or '/abs/x.npz' was joined to the folder and read (by
    EpisodeDataset, find_episodes, load_episode_folder): a folder's manifest could pull in any file."""
    from mmreward.robotics.data.episodes import load_episode_folder
    from mmreward.robotics.data.inputs import find_episodes

    folder = tmp_path / "data"
    folder.mkdir()
    write_folder(folder, [("a", "expert", 3)])
    save_episode(str(tmp_path / "outside.npz"), make_episode(3))
    body = json.loads((folder / "manifest.json").read_text())
    body["episodes"][0]["file"] = str(tmp_path / "outside.npz") if file == "ABS" else file
    (folder / "manifest.json").write_text(json.dumps(body))
    named = rf"manifest {folder}/manifest.json: episode entry 0: 'file' .* is outside the episode folder"
    for read in (read_manifest, load_episode_folder, lambda d: find_episodes([d]), lambda d: EpisodeDataset(d)):
        with pytest.raises(EpisodeFileError, match=named):
            read(str(folder))


def test_manifest_entry_fields_and_duplicates_are_named(tmp_path):
    write_folder(tmp_path, [("a", "expert", 3), ("b", "expert", 2)])
    good = json.loads((tmp_path / "manifest.json").read_text())
    body = json.loads(json.dumps(good))
    body["episodes"][0]["frames"] = 4.0  # a count written as 4.0 is a count
    (tmp_path / "manifest.json").write_text(json.dumps(body))
    ds = EpisodeDataset(str(tmp_path))
    assert len(read_manifest(str(tmp_path))) == 2 and len(ds) == 3 + 2 and ds[0]["frames"].shape == (2, 8, 8, 3)
    for field, value, msg in [("frames", "4", "'frames' must be a frame count >= 1, got '4'"),
                              ("frames", 0, "got 0"), ("size", 8, r"'size' must be \[H, W\]"),
                              ("task", None, "'task' must be a string"), ("file", 7, "'file' must be a file name"),
                              ("file", good["episodes"][1]["file"], "entries 0 and 1 both name")]:
        body = json.loads(json.dumps(good))
        body["episodes"][0][field] = value
        (tmp_path / "manifest.json").write_text(json.dumps(body))
        with pytest.raises(EpisodeFileError, match=msg):
            read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps(dict(good, format_version="1")))
    with pytest.raises(EpisodeFileError, match="format_version must be an integer"):
        read_manifest(str(tmp_path))


def test_find_episodes_checks_files_without_reading_their_frames_and_scoring_reads_each_once(tmp_path, monkeypatch):
    """Before: find_episodes loaded every episode in full to check it, and scoring loaded it again."""
    import mmreward.robotics.data.episodes as episodes
    from mmreward.robotics.data.inputs import episode_tensors, find_episodes

    write_folder(tmp_path, [("a", "expert", 4), ("b", "random", 3)])
    loads = []
    real = episodes.load_episode
    monkeypatch.setattr(episodes, "load_episode", lambda path, *a, **kw: loads.append(path) or real(path, *a, **kw))
    found = find_episodes([str(tmp_path)], with_success=True)
    found += find_episodes([str(tmp_path / "a_expert_0.npz")])
    assert loads == []  # checked: no frames decompressed
    assert [s.meta["success"] for s in found] == [True, True, True]
    assert found[0].input.success.tolist() == [False] + make_episode(4, seed=0).success.tolist()
    frames, _ = episode_tensors(found[1].input, 8, "input 1")
    assert np.array_equal(frames.numpy(), make_episode(3, seed=1).frames) and len(loads) == 1
    # what the check refuses without the pixels: a field, the frames' dtype / shape, a broken archive
    ep = make_episode(3)
    bad = dict(frames=ep.frames, actions=ep.actions, rewards=ep.rewards, success=ep.success, labelled=np.array(True))
    for change, msg in [(dict(success=ep.success.astype(np.float32)), "success must be booleans"),
                        (dict(frames=ep.frames.astype(np.float32)), "frames must be uint8"),
                        (dict(frames=ep.frames[:3]), r"actions must be numbers \[T-1=2, A\]")]:
        np.savez_compressed(tmp_path / "bad.npz", **{**bad, **change})
        with pytest.raises(EpisodeFileError, match=f"malformed episode file .*bad.npz: {msg}"):
            find_episodes([str(tmp_path / "bad.npz")])
    data = (tmp_path / "a_expert_0.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(EpisodeFileError, match="cut.npz"):
        find_episodes([str(tmp_path / "cut.npz")])


@pytest.mark.parametrize("kw", [dict(n_history=1.5), dict(skip=2.5), dict(skip=0), dict(n_history=-1),
                                dict(skip="2"), dict(cache_size=True)])
def test_dataset_window_settings_must_be_integers(tmp_path, kw):
    """Before: n_history=1.5 / skip=2.5 were truncated to 1 / 2 without a word; "2" failed in a comparison."""
    write_folder(tmp_path, [("a", "expert", 4)])
    (name, value), = kw.items()
    with pytest.raises(ValueError, match=f"EpisodeDataset: {name} must be an integer >= ., got {value!r}"):
        EpisodeDataset(str(tmp_path), **kw)


def test_tasks_select_by_task_id_without_its_version_as_collect_stores_them(tmp_path):
    # `collect --tasks door-open` and `import-videos --task door-open` store "door-open-v3"; selecting with the
    # name the user typed there found nothing ("no episodes match tasks=['door-open']")
    pytest.importorskip("metaworld")
    from mmreward.robotics.data.episodes import load_episode_folder

    write_folder(tmp_path, [("door-open-v3", "expert", 4), ("pick cup", "demo", 3), ("drawer-open-v3", "expert", 3)])
    assert [e["task"] for e, _ in load_episode_folder(str(tmp_path), tasks=["door-open"])] == ["door-open-v3"]
    assert len(EpisodeDataset(str(tmp_path), tasks=["door-open", "pick cup"])) > 0
    assert {e["task"] for e in EpisodeDataset(str(tmp_path), tasks=["door-open", "pick cup"]).entries} == {
        "door-open-v3", "pick cup"}
    with pytest.raises(ValueError, match=r"match tasks=\['pick'\]"):  # free-form labels stay whole
        load_episode_folder(str(tmp_path), tasks=["pick"])
