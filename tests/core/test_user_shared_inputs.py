"""Shared input and output rules every domain's entry points go through: in-memory data sources, rows that
name two media, and result files written over a model's own files."""
from __future__ import annotations

import json

import pytest

from mmreward.core.cli_config import check_output_file
from mmreward.core.data import DataError, read_records
from mmreward.core.inputs import ImagePrompt, StepSolution, VideoPrompt, as_inputs

ROWS = [{"prompt": "p0", "response": "a"}, {"prompt": "p1", "response": None}, {"prompt": "p2", "response": "c"}]


def test_read_records_takes_a_pandas_dataframe_with_empty_cells_as_none():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"prompt": ["p0", "p1"], "score": [1.0, float("nan")]})
    assert read_records(df) == [{"prompt": "p0", "score": 1.0}, {"prompt": "p1", "score": None}]


def test_read_records_takes_one_split_of_an_in_memory_dataset_dict():
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"x": i} for i in range(5)]),
                               "test": datasets.Dataset.from_list([{"x": 10}])})
    assert read_records(dd, split="train[1:3]") == [{"x": 1}, {"x": 2}]
    assert read_records(dd, split="test") == [{"x": 10}]
    with pytest.raises(DataError, match=r"holds splits \['train', 'test'\]"):
        read_records(dd)  # which rows are held out must not be guessed
    with pytest.raises(DataError, match="has no split 'val'"):
        read_records(dd, split="val")
    one = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"x": 1}])})
    assert read_records(one) == [{"x": 1}]


@pytest.mark.parametrize("row", [{"image": "a.png", "video": "a.mp4"}, {"image": "a.png", "frames": "clip/"},
                                 {"prompt": "p", "video": "a.mp4", "image": "a.png"}])
@pytest.mark.parametrize("types", [(ImagePrompt, VideoPrompt), (VideoPrompt, ImagePrompt), (ImagePrompt,),
                                   (VideoPrompt,)])
def test_a_row_with_an_image_and_a_video_is_refused_not_half_read(row, types):
    with pytest.raises(DataError, match=r"input 0: fields 'image' and '(video|frames)' both given"):
        as_inputs(types, [row])


def test_a_row_with_one_medium_and_a_null_other_is_read():
    assert as_inputs((ImagePrompt, VideoPrompt), [{"image": "a.png", "video": None}]) == [ImagePrompt("", "a.png")]
    assert as_inputs((ImagePrompt, VideoPrompt), [{"video": "a.mp4", "image": None}]) == [VideoPrompt("", "a.mp4")]


def test_a_math_shepherd_row_names_a_command_that_exists():
    from mmreward.cli import main

    with pytest.raises(DataError) as e:
        StepSolution.from_record({"input": "1+1=2 ки", "label": "1+1=2 +"}, "row 0")
    command = str(e.value).split("`")[1]  # "mmreward prm score --data"
    assert command == "mmreward prm score --data"
    assert main(command.split()[1:3] + ["--help"]) == 0


def test_an_out_file_inside_a_model_folder_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="is a file of the --model folder"):
        check_output_file(str(model / "config.json"), "--out", folders=[("--model", str(model))])
    # through a symlink to the folder, too
    (tmp_path / "link").symlink_to(model)
    with pytest.raises(ValueError, match="is a file of the --model folder"):
        check_output_file(str(tmp_path / "link" / "config.json"), "--out", folders=[("--model", str(model))])
    # a new file, or one beside the folder, is fine; a hub id (no such folder) is no folder to protect
    check_output_file(str(model / "scores.jsonl"), "--out", folders=[("--model", str(model))])
    # the same command run again over its own results file; the model's other files are refused
    (model / "scores.jsonl").write_text("{}\n")
    check_output_file(str(model / "scores.jsonl"), "--out", folders=[("--model", str(model))])
    for kept in ("model.safetensors", "tokenizer.json", "metrics.csv", "model/config.json", "listed.txt"):
        (model / kept).parent.mkdir(exist_ok=True)
        (model / kept).write_text("x")
        (model / "manifest.json").write_text(json.dumps({"files": {"listed.txt": {"bytes": 1}}}))
        with pytest.raises(ValueError, match="is a file of the --model folder"):
            check_output_file(str(model / kept), "--out", folders=[("--model", str(model))])
    (tmp_path / "scores.jsonl").write_text("")
    check_output_file(str(tmp_path / "scores.jsonl"), "--out", folders=[("--model", str(model))])
    check_output_file(str(tmp_path / "scores.jsonl"), "--out", folders=[("--model", "owner/name"), ("--x", None)])


def test_mmreward_score_out_onto_the_models_config_is_refused_and_the_model_still_loads(tmp_path, capsys):
    from test_contract_inputs_and_folders import LinRM

    import mmreward
    from mmreward import registry
    from mmreward.cli import main

    registry.register_model(LinRM.model_type, "test_contract_inputs_and_folders:LinRM")
    try:
        folder = tmp_path / "rm"
        LinRM().save_pretrained(str(folder))
        config = (folder / "config.json").read_text()
        rows = tmp_path / "rows.jsonl"
        rows.write_text(json.dumps({"prompt": "q", "response": "an answer"}) + "\n")
        assert main(["score", "--model", str(folder), "--data", str(rows), "--out", str(folder / "config.json")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is a file of the --model folder" in err[0]
        assert (folder / "config.json").read_text() == config
        mmreward.load(str(folder))
        assert main(["score", "--model", str(folder), "--data", str(rows), "--out", str(tmp_path / "s.jsonl")]) == 0
    finally:
        registry.MODEL_TYPES.pop(LinRM.model_type, None)


def test_mmreward_score_scores_an_animated_gif_as_the_video_it_is(tmp_path, capsys):
    pytest.importorskip("transformers")
    import numpy as np
    import torch
    from PIL import Image

    from mmreward.cli import main
    from mmreward.vision import synthetic as S
    from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel

    torch.manual_seed(0)
    ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=16)).save_pretrained(
        str(tmp_path / "m"))
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(tmp_path / "still.gif")
    from mmreward import load

    model = load(str(tmp_path / "m"))
    prompt = "a red circle"
    assert main(["score", "--model", str(tmp_path / "m"), "--prompt", prompt, "--json", "--no-parts",
                 str(tmp_path / "anim.gif"), str(tmp_path / "still.gif")]) == 0
    got = {r["image"].rsplit("/", 1)[1]: r["score"] for r in json.loads(capsys.readouterr().out)["results"]}
    from mmreward.core.inputs import VideoPrompt as V

    video = model.score([V(prompt, str(tmp_path / "anim.gif"))]).item()
    first = model.score([ImagePrompt(prompt, str(tmp_path / "anim.gif"))]).item()
    assert got["anim.gif"] == pytest.approx(video, abs=1e-6) and abs(video - first) > 1e-4
    assert got["still.gif"] == pytest.approx(model.score([ImagePrompt(prompt, str(tmp_path / "still.gif"))]).item(),
                                             abs=1e-6)


def test_score_video_names_the_command_for_a_robot_reward_and_needs_a_prompt_for_images(tmp_path, capsys):
    pytest.importorskip("transformers")
    import numpy as np

    from mmreward.cli import main

    np.save(tmp_path / "clip.npy", np.zeros((2, 8, 8, 3), np.uint8))  # never read: the model is refused first
    assert main(["score-video", "--model", "metaworld-64", str(tmp_path / "clip.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mmreward score --model metaworld-64 VIDEO" in err[0]
    from mmreward.vision import synthetic as S
    from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel

    ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=16)).save_pretrained(
        str(tmp_path / "m"))
    assert main(["score-video", "--model", str(tmp_path / "m"), str(tmp_path / "clip.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--prompt is required" in err[0]


def test_a_window_of_a_streaming_split_reads_only_its_rows():
    datasets = pytest.importorskip("datasets")
    pulled = []

    def rows():
        for i in range(100_000):
            pulled.append(i)
            yield {"x": i}

    stream = datasets.IterableDatasetDict({"train": datasets.IterableDataset.from_generator(rows)})
    assert read_records(stream, split="train[2:5]") == [{"x": 2}, {"x": 3}, {"x": 4}]
    assert len(pulled) < 100  # not the whole stream
    for window in ("train[:10%]", "train[-5:]"):
        with pytest.raises(DataError, match="streaming split"):
            read_records(stream, split=window)
