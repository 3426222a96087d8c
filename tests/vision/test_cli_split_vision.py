"""`mmreward vision train | eval | train-vlm-rm | train-visual-prm | vl-rewardbench` take `--split`
(training also `--eval-split`) as `mmreward text train` does: a source holding several splits is read
from the chosen one and refused, naming its splits, without a choice; `vision train` also trains on a
saved DatasetDict folder."""
import json

import pytest

from mmreward.cli import main as mmreward_main
from mmreward.vision import synthetic as S

QUIET = ["--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0"]
SMALL = ["--embed-dim", "16", "--max-steps", "1", "--batch-size", "2", "--lr", "1e-3", "--normalize-on", "0", *QUIET]


def _fails(argv, capsys, *expected):
    capsys.readouterr()
    assert mmreward_main(argv) == 2, argv
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err


def _split_json(jsonl: str, path, n_dev: int) -> str:
    """The rows of ``jsonl`` as a .json object of two lists (no 'train' / 'data' list: a split must be chosen)."""
    rows = [json.loads(line) for line in open(jsonl, encoding="utf-8") if line.strip()]
    path.write_text(json.dumps({"dev": rows[:n_dev], "test": rows[n_dev:]}))
    return str(path)


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    d = tmp_path_factory.mktemp("split_vision")
    return _split_json(S.write_jsonl(S.ranked_sets(6, seed=0, image_size=24), str(d)), d / "sets.json", 2)


def test_train_and_eval_read_the_chosen_split(ranked, tmp_path, capsys):
    run = tmp_path / "run"
    assert mmreward_main(["vision", "train", "--data", ranked, "--split", "test", "--eval-data", ranked,
                          "--eval-split", "dev", "--image-size", "24", "--out", str(run), *SMALL]) == 0
    settings = json.loads((run / "train_config.json").read_text())["settings"]["image_reward_train"]
    assert settings["split"] == "test" and settings["eval_split"] == "dev"
    capsys.readouterr()
    assert mmreward_main(["vision", "eval", "--model", str(run / "model"), "--data", ranked, "--split", "dev"]) == 0
    assert "pairwise_accuracy" in json.loads(capsys.readouterr().out.splitlines()[-1])
    for argv in (["vision", "train", "--data", ranked, "--out", str(tmp_path / "r2"), *SMALL],
                 ["vision", "train", "--data", ranked, "--split", "test", "--eval-data", ranked,
                  "--out", str(tmp_path / "r3"), *SMALL],
                 ["vision", "eval", "--model", str(run / "model"), "--data", ranked]):
        _fails(argv, capsys, "['dev', 'test']", "--split")
    # a split of data there is none of would be silently ignored
    _fails(["vision", "train", "--split", "test", "--out", str(tmp_path / "r4"), *SMALL], capsys, "split 'test'",
           "synthetic")
    _fails(["vision", "train", "--data", ranked, "--split", "test", "--eval-split", "dev",
            "--out", str(tmp_path / "r5"), *SMALL], capsys, "eval_split 'dev'")


def test_train_on_a_saved_dataset_dict_and_resume_only_with_its_split(tmp_path, capsys):
    """A saved dataset folder was read, then the run's data digest opened the folder as a file
    (IsADirectoryError) before the first step."""
    datasets = pytest.importorskip("datasets")
    jsonl = S.write_jsonl(S.ranked_sets(8, seed=1, image_size=24), str(tmp_path / "sets"))
    rows = [json.loads(line) for line in open(jsonl, encoding="utf-8")]
    for r in rows:
        r["images"] = [str(tmp_path / "sets" / p) for p in r["images"]]
    folder = str(tmp_path / "ds")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:4]),
                          "test": datasets.Dataset.from_list(rows[4:])}).save_to_disk(folder)
    run = str(tmp_path / "run")
    base = ["vision", "train", "--data", folder, "--image-size", "24", "--out", run, *SMALL]
    assert mmreward_main([*base, "--split", "train"]) == 0
    _fails(base, capsys, "holds splits ['train', 'test']", "--split")
    # the run continues only on the split it trained on (the same number of sets: only the split differs)
    _fails([*base[:-len(SMALL)], *SMALL[:2], "--max-steps", "2", *SMALL[4:], "--split", "test"], capsys,
           "data.split: saved 'train', now 'test'")


def test_vlm_training_reads_the_chosen_split(tmp_path, capsys):
    pytest.importorskip("transformers")
    assert mmreward_main(["vision", "colour-data", "--out", str(tmp_path / "c"), "--n", "6", "--seed", "0"]) == 0
    rows = _split_json(str(tmp_path / "c" / "rows.jsonl"), tmp_path / "c" / "rows.json", 2)
    base = ["vision", "train-vlm-rm", "--data", rows, "--max-steps", "1", "--batch-size", "2", "--warmup-steps", "0",
            *QUIET]
    assert mmreward_main([*base, "--split", "test", "--eval-data", rows, "--eval-split", "dev",
                          "--out", str(tmp_path / "rm")]) == 0
    assert (tmp_path / "rm" / "model" / "config.json").exists()
    _fails([*base, "--out", str(tmp_path / "r2")], capsys, "['dev', 'test']", "--split")
    _fails([*base, "--split", "test", "--eval-split", "dev", "--out", str(tmp_path / "r3")], capsys,
           "--eval-split dev", "--eval-data")
    _fails(["vision", "train-visual-prm", "--data", "synthetic", "--split", "test", "--out", str(tmp_path / "r4")],
           capsys, "--split test", "synthetic")


def test_vl_rewardbench_reads_the_chosen_split(tmp_path, capsys):
    from PIL import Image

    from mmreward.vision.published.vl_rewardbench import read_vl_rewardbench

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    row = {"id": "RLAIF-V-14", "image_path": "a.png", "query": "what?", "response": ["x", "yy"], "human_ranking": [0, 1]}
    path = tmp_path / "vl.json"
    path.write_text(json.dumps({"dev": [row], "test": [row, {**row, "id": "RLHF-V-31"}]}))
    assert len(read_vl_rewardbench(str(path), split="test")) == 2
    _fails(["vision", "vl-rewardbench", "--model", str(tmp_path / "none"), "--data", str(path)], capsys,
           "['dev', 'test']", "--split")
