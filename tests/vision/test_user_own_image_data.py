"""A vision-RLHF user training and evaluating scorers on their OWN image files: paths with spaces and
non-ASCII letters, mixed sizes and PIL modes, a held-out file that repeats training rows, a CSV file,
an image that is a folder, a corrupt image met mid-training, and paths written relative to the working
folder instead of the data file. Bad input is one line naming the file, row and field (exit 2)."""
import json
import warnings

import numpy as np
import pytest

from mmreward.cli import main as mmreward_main
from mmreward.core.data import DataError

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
FAST = ["--no-progress", "--no-tensorboard", "--no-plot"]


def _png(path, colour, size=(8, 8), mode="RGB"):
    from PIL import Image

    a = np.zeros((*size, 3), np.uint8)
    a[...] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).convert(mode).save(path)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _colour_sets(root, split, n, seed):
    """Exactly-labelled ranked sets: the image of the prompt's colour is best, the two others tie; images of
    random sizes (6..39 px) in RGB / RGBA / P / L-able modes, in a folder whose name has a space and an é."""
    rng = np.random.default_rng(seed)
    rows, modes = [], ["RGB", "RGBA", "P", "RGB"]
    for i in range(n):
        names = list(COLOURS)
        rng.shuffle(names)
        images = []
        for k, c in enumerate(names):
            h, w = (int(v) for v in rng.integers(6, 40, 2))
            a = np.clip(np.array(COLOURS[c]) + rng.integers(-25, 25, (h, w, 3)), 0, 255).astype(np.uint8)
            rel = f"imgs é dir/{split}{i}_{k}.png"
            from PIL import Image

            (root / "imgs é dir").mkdir(exist_ok=True)
            Image.fromarray(a).convert(modes[(i + k) % 4]).save(root / rel)
            images.append(rel)
        rows.append({"prompt": f"a {names[0]} picture", "images": images, "ranks": [0, 1, 1]})
    return _jsonl(root / f"{split}.jsonl", rows)


def _train(args, capsys):
    rc = mmreward_main(["vision", "train", "--embed-dim", "8", "--max-steps", "1", "--batch-size", "2", *FAST, *args])
    return rc, capsys.readouterr()


def test_scorer_learns_from_own_mixed_image_files_and_evaluates_from_another_folder(tmp_path, capsys, monkeypatch):
    # own files (mixed sizes and modes, a folder name with a space and an é), relative to the data file; the
    # CLI run from an unrelated working folder: the held-out accuracy must cross the bar, and `vision eval`
    # on the saved run gives the same figure
    train, held = _colour_sets(tmp_path, "train", 48, 0), _colour_sets(tmp_path, "held", 16, 1)
    monkeypatch.chdir(tmp_path / "imgs é dir")
    rc = mmreward_main(["vision", "train", "--data", train, "--eval-data", held, "--out", str(tmp_path / "run"),
                        "--max-steps", "20", "--batch-size", "8", "--embed-dim", "16", "--no-head-dropout",
                        "--lr", "4e-3", "--warmup-steps", "4", "--image-size", "16", *FAST])
    out = capsys.readouterr().out
    assert rc == 0, out
    summary = json.loads(next(x for x in out.splitlines() if x.startswith("{")))
    assert summary["eval_pairwise_accuracy"] >= 0.9, summary
    assert mmreward_main(["vision", "eval", "--model", str(tmp_path / "run"), "--data", held]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["pairwise_accuracy"] == pytest.approx(summary["eval_pairwise_accuracy"], abs=1e-4), (got, summary)


def test_an_image_that_is_a_folder_is_named_as_a_folder(tmp_path, capsys):
    # before: "image file '…/shots.png' does not exist" for a folder that plainly exists
    _png(tmp_path / "a.png", COLOURS["red"])
    (tmp_path / "shots.png").mkdir()
    data = _jsonl(tmp_path / "sets.jsonl", [{"prompt": "red", "images": ["a.png", "shots.png"], "ranks": [0, 1]}])
    rc, cap = _train(["--data", data, "--out", str(tmp_path / "run")], capsys)
    err = cap.err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "sets.jsonl: row 0: field 'images': image 1" in err and "is a folder, not an image file" in err, err


def test_vlm_row_image_that_is_a_folder_is_named_as_a_folder(tmp_path):
    pytest.importorskip("transformers")
    from mmreward.vision.vlm_rm import as_pairs

    (tmp_path / "shots").mkdir()
    row = {"image": str(tmp_path / "shots"), "question": "what colour", "chosen": "red", "rejected": "blue"}
    with pytest.raises(DataError, match=r"rows: row 0: field 'images': image 0: .* is a folder, not an image file"):
        as_pairs([row])


def test_a_corrupt_image_met_mid_training_names_file_row_and_field(tmp_path, capsys):
    # before: "ranked set with prompt 'red': image 1: cannot read …": no file, no row, no field
    _png(tmp_path / "a.png", COLOURS["red"])
    _png(tmp_path / "b.png", COLOURS["blue"])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    data = _jsonl(tmp_path / "sets.jsonl", [{"prompt": "red", "images": ["a.png", "b.png"], "ranks": [0, 1]},
                                            {"prompt": "red", "images": ["a.png", "broken.png"], "ranks": [0, 1]}])
    rc, cap = _train(["--data", data, "--out", str(tmp_path / "run"), "--max-steps", "2"], capsys)
    err = cap.err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "sets.jsonl: row 1: field 'images': image 1: cannot read image" in err and "broken.png" in err, err


def test_paths_relative_to_the_working_folder_get_a_hint(tmp_path, capsys, monkeypatch):
    _png(tmp_path / "pics" / "a.png", COLOURS["red"])
    _png(tmp_path / "pics" / "b.png", COLOURS["blue"])
    (tmp_path / "data").mkdir()
    data = _jsonl(tmp_path / "data" / "sets.jsonl",
                  [{"prompt": "red", "images": ["pics/a.png", "pics/b.png"], "ranks": [0, 1]}])
    monkeypatch.chdir(tmp_path)
    rc, cap = _train(["--data", data, "--out", str(tmp_path / "run")], capsys)
    err = cap.err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "row 0: field 'images': image 0" in err and "relative to the data file's folder" in err \
        and "'pics/a.png' exists in the working folder" in err, err


def test_csv_ranked_sets_name_the_list_cell_and_the_per_image_layout_trains(tmp_path, capsys):
    _png(tmp_path / "a b.png", COLOURS["red"], (5, 9), "L")
    _png(tmp_path / "b.png", COLOURS["blue"], (30, 12), "RGBA")
    listed = tmp_path / "sets.csv"
    listed.write_text('prompt,images,ranks\nred,"[""a b.png"", ""b.png""]","[0, 1]"\n')
    rc, cap = _train(["--data", str(listed), "--out", str(tmp_path / "run")], capsys)
    err = cap.err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "sets.csv: row 0: field 'images'" in err and "a CSV cell holds no list" in err \
        and "one row per image" in err, err
    per_image = tmp_path / "db.csv"  # ImageRewardDB's layout: one image per row, which a CSV holds
    per_image.write_text("prompt_id,prompt,image,rank\n1,red,a b.png,1\n1,red,b.png,2\n2,blue,b.png,1\n2,blue,a b.png,2\n")
    rc, cap = _train(["--data", str(per_image), "--out", str(tmp_path / "run2")], capsys)
    assert rc == 0, cap.err


def test_eval_data_that_repeats_training_sets_is_warned(tmp_path):
    from mmreward.core.trainer import TrainConfig
    from mmreward.vision.train import ImageRewardTrainConfig, train_image_reward

    for name, c in COLOURS.items():
        _png(tmp_path / f"{name}.png", c)
    train = _jsonl(tmp_path / "train.jsonl", [{"prompt": "red", "images": ["red.png", "blue.png"], "ranks": [0, 1]},
                                              {"prompt": "blue", "images": ["red.png", "blue.png"], "ranks": [1, 0]}])
    (tmp_path / "held").mkdir()  # the same images, written relative to another folder, in another order
    held = _jsonl(tmp_path / "held" / "held.jsonl",
                  [{"prompt": "green", "images": ["../green.png", "../red.png"], "ranks": [0, 1]},
                   {"prompt": "red", "images": ["../blue.png", "../red.png"], "ranks": [1, 0]}])
    tcfg = dict(max_steps=1, batch_size=2, progress=False, tensorboard=False, plot=False)
    with pytest.warns(UserWarning, match=r"held.jsonl: 1 of its 2 ranked sets are also training sets.*row 1"):
        train_image_reward(ImageRewardTrainConfig(data=train, eval_data=held, embed_dim=8),
                           TrainConfig(output_dir=str(tmp_path / "run"), **tcfg))
    disjoint = _jsonl(tmp_path / "held" / "other.jsonl",
                      [{"prompt": "green", "images": ["../green.png", "../red.png"], "ranks": [0, 1]}])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        train_image_reward(ImageRewardTrainConfig(data=train, eval_data=disjoint, embed_dim=8),
                           TrainConfig(output_dir=str(tmp_path / "run2"), **tcfg))


def test_vlm_eval_rows_that_repeat_training_rows_are_warned(tmp_path):
    from mmreward.vision.cli import read_rows
    from mmreward.vision.vlm_cli import _warn_shared_rows

    _png(tmp_path / "red.png", COLOURS["red"])
    row = {"image": "red.png", "question": "what colour", "chosen": "red", "rejected": "blue"}
    train = _jsonl(tmp_path / "train.jsonl", [row, {**row, "question": "which colour"}])
    (tmp_path / "held").mkdir()
    held = _jsonl(tmp_path / "held" / "held.jsonl", [{**row, "question": "name the colour"},
                                                      {**row, "image": "../red.png"}])
    with pytest.warns(UserWarning, match=r"held.jsonl: 1 of its 2 rows are also training rows \(first: row 1\)"):
        _warn_shared_rows(read_rows(train), read_rows(held), held)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _warn_shared_rows(read_rows(train), read_rows(held)[:1], held)


def test_home_folder_image_paths_in_rows_are_read_as_the_home_folder(tmp_path, capsys, monkeypatch):
    # "~/pics/a.png" in a row was joined to the data file's folder ("data/~/pics/a.png": does not exist), although
    # an image given to score as "~/pics/a.png" is the home folder's
    from mmreward.vision.cli import read_rows
    from mmreward.vision.train import read_ranked_sets

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _png(tmp_path / "home" / "pics" / "a.png", COLOURS["red"])
    _png(tmp_path / "home" / "pics" / "b.png", COLOURS["blue"])
    (tmp_path / "data").mkdir()
    sets = _jsonl(tmp_path / "data" / "sets.jsonl",
                  [{"prompt": "red", "images": ["~/pics/a.png", "~/pics/b.png"], "ranks": [0, 1]}])
    assert read_ranked_sets(sets)[0].images == [str(tmp_path / "home" / "pics" / n) for n in ("a.png", "b.png")]
    rows = _jsonl(tmp_path / "data" / "rows.jsonl",
                  [{"image": "~/pics/a.png", "question": "what colour", "chosen": "red", "rejected": "blue"}])
    assert read_rows(rows)[0]["image"] == str(tmp_path / "home" / "pics" / "a.png")
    rc, cap = _train(["--data", sets, "--out", str(tmp_path / "run"), "--batch-size", "1"], capsys)
    assert rc == 0, cap.err
