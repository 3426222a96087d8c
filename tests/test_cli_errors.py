"""Every command, given a path that does not exist (or another user error), answers with one line on
stderr naming it and exit status 2 — never a traceback."""
from __future__ import annotations

import pytest

from mmreward.cli import main

BAD = "/nonexistent/mmreward-input"

# (argv with {tmp} for a writable folder, text the one-line error must contain)
COMMANDS = [
    (["text", "train", "--model", BAD, "--data", BAD, "--out", "{tmp}/o"], "nonexistent"),
    (["text", "score", "--model", BAD, "--data", BAD], "nonexistent"),
    (["text", "eval", "--model", BAD, "--data", BAD], "nonexistent"),
    (["text", "merge", "--out", "{tmp}/o", BAD, BAD], "nonexistent"),
    (["text", "judge", "genrm", "--model", BAD, "--data", BAD], "nonexistent"),
    (["text", "train-genrm", "--model", BAD, "--data", BAD, "--out", "{tmp}/o"], "nonexistent"),
    (["text", "train-gram", "--model", BAD, "--data", BAD, "--out", "{tmp}/o"], "nonexistent"),
    (["text", "train-critic-rm", "--model", BAD, "--data", BAD, "--out", "{tmp}/o"], "nonexistent"),
    (["text", "train-meta-rm", "--model", BAD, "--data", BAD, "--out", "{tmp}/o"], "nonexistent"),
    (["prm", "train", "--model", BAD, "--data", BAD, "--out", "{tmp}/o"], "nonexistent"),
    (["prm", "score", "--model", BAD, "--data", BAD], "nonexistent"),
    (["prm", "eval", "--model", BAD, "--data", BAD], "nonexistent"),
    (["prm", "search", "--model", BAD], "nonexistent"),
    (["vision", "train", "--data", BAD, "--out", "{tmp}/o"], "nonexistent"),
    (["vision", "train-vlm-rm", "--data", BAD, "--out", "{tmp}/o"], "nonexistent"),
    (["vision", "train-visual-prm", "--data", BAD, "--out", "{tmp}/o"], "nonexistent"),
    (["vision", "eval", "--model", BAD, "--data", BAD], "nonexistent"),
    (["vision", "colour-data", "--out", "{tmp}/a-file/o", "--n", "2"], "a-file"),
    (["vision", "vl-rewardbench", "--model", BAD, "--data", BAD], "nonexistent"),
    (["robotics", "collect", "--tasks", "no-such-task-v3", "--out", "{tmp}/o"], "no-such-task"),
    (["robotics", "import-videos", "--task", "door-open-v3", "--out", "{tmp}/o", BAD], "nonexistent"),
    (["robotics", "info", BAD], "nonexistent"),
    (["robotics", "train-codec", "--data", BAD, "--out", "{tmp}/o"], "nonexistent"),
    (["robotics", "train-video", "--data", BAD, "--codec", BAD, "--out", "{tmp}/o"], "nonexistent"),
    (["robotics", "fit-stats", "--data", BAD, "--codec", BAD, "--video", BAD, "--out", "{tmp}/o"], "nonexistent"),
    (["robotics", "train-progress", "--data", BAD, "--out", "{tmp}/o"], "nonexistent"),
    (["robotics", "score", "--model", BAD, BAD], "nonexistent"),
    (["robotics", "train-rl", "--model", BAD, "--out", "{tmp}/o", "--device", "cuda:7"], "cuda"),
    (["score", "--model", BAD, "--data", BAD], "nonexistent"),
    # words typed where files go (a text model's prompt and answer): the error says where text goes
    (["score", "--model", BAD, "--prompt", "hi", "hello there"], "--data"),
    (["info", BAD], "nonexistent"),
    (["score-video", "--model", BAD, "--prompt", "x", BAD], "nonexistent"),
    (["serve", "--model", BAD], "nonexistent"),
    (["ops", "--device", "tpu"], "tpu"),
    (["text", "score", "--model", BAD, "--data", BAD, "--device", "cuda"], "cuda"),
]


@pytest.mark.parametrize("argv,names", COMMANDS, ids=lambda x: " ".join(x[:2]) if isinstance(x, list) else None)
def test_bad_paths_are_one_line_exit_2(argv, names, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, f"{' '.join(argv)} exited {rc}: {err}"
    assert len(err) == 1 and "Traceback" not in err[0], f"{' '.join(argv)}: stderr was {err}"
    assert names in err[0], f"{' '.join(argv)}: the error does not name {names!r}: {err[0]}"
    assert err[0].startswith("mmreward"), err[0]
    if argv[0] in ("text", "prm", "vision", "robotics"):  # the subcommand run is named, not only its group
        assert err[0].startswith(f"mmreward {argv[0]} {argv[1]}"), err[0]


def test_debug_env_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("MMREWARD_DEBUG", "1")
    with pytest.raises(Exception):
        main(["score", "--model", BAD, "--data", BAD])
