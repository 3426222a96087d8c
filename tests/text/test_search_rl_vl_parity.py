"""The Python API and the CLI share one path for `mmreward prm search` (compare_search),
`mmreward robotics eval-rl` (evaluate_run) and `mmreward vision vl-rewardbench`
(evaluate_vl_rewardbench): equal numbers, and bad input gives one error of the same meaning (an exception
naming the argument / item from Python, one line and exit 2 from the CLI). Also: a missing image of a
Python-built ranked set names the set in evaluate_image_reward."""
import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmreward.cli import main as mmreward_main  # noqa: E402


def cli_error(capsys, argv, message):
    capsys.readouterr()
    assert mmreward_main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert message in err, (message, err)
    return err


@pytest.fixture(scope="module")
def prm_folder(tmp_path_factory):
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("step", max_value=5)
    folder = str(tmp_path_factory.mktemp("prm") / "model")
    ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=16, layers=1, heads=2), tok, head="lm",
                                     max_length=64).save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- prm search / compare_search
SEARCH = ["--synthetic", "3", "--num-steps", "3", "--max-value", "5", "--budget-steps", "6", "--seed", "1"]


def test_prm_search_same_numbers_through_python_and_cli(prm_folder, capsys):
    import mmreward
    from mmreward.text.prm.search import MCTSConfig, compare_search

    py = compare_search(mmreward.load(prm_folder), n_problems=3, num_steps=3, max_value=5, seed=1,
                        config=MCTSConfig(budget_steps=6))
    capsys.readouterr()
    assert mmreward_main(["prm", "search", "--model", prm_folder, *SEARCH]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli.keys() == py.keys()
    for k, v in py.items():
        assert cli[k] == pytest.approx(v), k


def test_prm_search_aggregation_reaches_best_of_n(prm_folder, capsys, monkeypatch):
    """`prm search --aggregation` is compare_search's `reduce` (the CLI always used min before)."""
    from mmreward.text.prm import search

    seen = []
    real = search.compare_search
    monkeypatch.setattr(search, "compare_search", lambda *a, **k: seen.append(k["reduce"]) or real(*a, **k))
    for reduce in (None, "last", "prod"):
        flag = [] if reduce is None else ["--aggregation", reduce]
        assert mmreward_main(["prm", "search", "--model", prm_folder, *SEARCH, "--method", "best-of-n", *flag]) == 0
    assert seen == ["min", "last", "prod"]
    cli_error(capsys, ["prm", "search", "--model", prm_folder, *SEARCH, "--aggregation", "max"], "--aggregation")


def test_prm_search_bad_input_same_meaning(prm_folder, tmp_path, capsys):
    import mmreward
    from mmreward.text.prm.search import compare_search

    prm = mmreward.load(prm_folder)
    out = tmp_path / "x.jsonl"
    # before: Python wrote an empty export file (the CLI refused it)
    with pytest.raises(ValueError, match="best-of-n.*runs no MCTS"):
        compare_search(prm, n_problems=2, method="best-of-n", export=str(out))
    assert not out.exists()
    cli_error(capsys, ["prm", "search", "--model", prm_folder, *SEARCH, "--method", "best-of-n", "--out", str(out)],
              "runs no MCTS")
    assert not out.exists()
    # before: AttributeError 'dict' object has no attribute 'budget_steps'
    with pytest.raises(TypeError, match="config must be an MCTSConfig"):
        compare_search(prm, n_problems=2, config={"budget_steps": 8})
    # before: True was taken as one problem
    with pytest.raises(ValueError, match="n_problems must be an integer >= 1, got True"):
        compare_search(prm, n_problems=True)
    # before: the MCTS half ran first, then best_of_n_search refused the reduce
    with pytest.raises(ValueError, match="reduce must be one of"):
        compare_search(lambda p, s: 1 / 0, n_problems=2, reduce="max")
    for argv, message in ((["--synthetic", "0"], "n_problems must be an integer >= 1, got 0"),
                          (["--budget-steps", "-1"], "budget_steps must be >= 1, got -1")):
        with pytest.raises(ValueError, match=message):
            compare_search(prm, **({"n_problems": 0} if "0" in argv else {"config": _cfg(budget_steps=-1)}))
        cli_error(capsys, ["prm", "search", "--model", prm_folder, *argv], message)


def _cfg(**kw):
    from mmreward.text.prm.search import MCTSConfig

    return MCTSConfig(**kw)


# --------------------------------------------------------------------------- eval-rl / evaluate_run
def test_eval_rl_bad_run_folders_same_meaning(tmp_path, capsys):
    from mmreward.core.device import DeviceError
    from mmreward.robotics.rl import evaluate_run

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not a train-rl run folder"):
        evaluate_run(str(empty))
    cli_error(capsys, ["robotics", "eval-rl", "--run", str(empty)], "not a train-rl run folder")
    other = tmp_path / "codec"
    other.mkdir()
    (other / "train_config.json").write_text(json.dumps({"config_class": "CodecTrainConfig", "config": {}}))
    with pytest.raises(ValueError, match="does not hold a train-rl run's settings"):
        evaluate_run(str(other))
    cli_error(capsys, ["robotics", "eval-rl", "--run", str(other)], "does not hold a train-rl run's settings")
    with pytest.raises(ValueError, match="episodes must be >= 1, got 0"):
        evaluate_run(str(other), episodes=0)
    cli_error(capsys, ["robotics", "eval-rl", "--run", str(other), "--episodes", "0"], "episodes must be >= 1, got 0")
    # before: os.path.join's "expected str, bytes or os.PathLike object"; a bad device failed in torch after
    # the environment was built
    with pytest.raises(TypeError, match="run must be a train-rl run folder"):
        evaluate_run(None)
    with pytest.raises(DeviceError, match="unknown device 'gpu0'"):
        evaluate_run(str(empty), device="gpu0")


# --------------------------------------------------------------------------- vl-rewardbench
def test_vl_rewardbench_items_and_batch_size_checked(tmp_path, capsys, prm_folder):
    import mmreward
    from mmreward.core.inputs import Conversation
    from mmreward.core.model import RewardScorer
    from mmreward.vision.published.vl_rewardbench import VLRewardBenchItem, evaluate_vl_rewardbench

    class LengthJudge(RewardScorer):
        model_type = "length_judge"
        input_types = (Conversation,)

        def _score(self, items, batch_size):
            return torch.tensor([float(len(c.messages[-1]["content"])) for c in items])

    items = [VLRewardBenchItem(f"RLAIF-V-{i}", "q", ("a long answer", "short"), i % 2, "x.png", "rlaif-v")
             for i in range(4)]
    ref = evaluate_vl_rewardbench(LengthJudge(), items)
    assert ref["summary"]["hallucination"] == 50.0
    # before: a generator was used up by the conversations: ZeroDivisionError in the summary
    assert evaluate_vl_rewardbench(LengthJudge(), (i for i in items)) == ref
    # before: AttributeError 'dict' object has no attribute 'conversations'
    with pytest.raises(TypeError, match=r"items\[1\] is a dict"):
        evaluate_vl_rewardbench(LengthJudge(), [items[0], {"id": "x"}])
    # before: IndexError (preferred 2) / KeyError (unknown dataset)
    with pytest.raises(ValueError, match=r"items\[0\].*preferred 2"):
        evaluate_vl_rewardbench(LengthJudge(), [VLRewardBenchItem("a", "q", ("x", "y"), 2, "x.png", "povid")])
    with pytest.raises(ValueError, match=r"items\[0\].*dataset 'coco'"):
        evaluate_vl_rewardbench(LengthJudge(), [VLRewardBenchItem("a", "q", ("x", "y"), 0, "x.png", "coco")])
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        evaluate_vl_rewardbench(LengthJudge(), items, batch_size=0)
    data = tmp_path / "data.jsonl"
    data.write_text("")
    cli_error(capsys, ["vision", "vl-rewardbench", "--model", prm_folder, "--data", str(data), "--batch-size", "0"],
              "batch_size must be an integer >= 1, got 0")
    # a model folder of the wrong kind: the same TypeError through both
    row = {"id": "RLAIF-V-1", "query": "q", "response": ["a", "b"], "human_ranking": [0, 1], "image_path": "i.png"}
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "i.png")
    data.write_text(json.dumps(row) + "\n")
    with pytest.raises(TypeError, match="does not score Conversation inputs"):
        evaluate_vl_rewardbench(mmreward.load(prm_folder), items)
    cli_error(capsys, ["vision", "vl-rewardbench", "--model", prm_folder, "--data", str(data)],
              "does not score Conversation inputs")


# --------------------------------------------------------------------------- evaluate_image_reward
def test_missing_image_of_a_python_built_set_names_the_set(tmp_path):
    from mmreward.vision import synthetic as S
    from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel
    from mmreward.vision.images import ImageLoadError
    from mmreward.vision.train import RankedExample, evaluate_image_reward

    torch.manual_seed(0)
    model = ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=8))
    sets = S.ranked_sets(3, seed=0)
    good = [RankedExample(s.prompt, s.images, s.ranks) for s in sets]
    bad = good[:2] + [RankedExample(sets[2].prompt, [str(tmp_path / "gone.png")] + list(sets[2].images[1:]),
                                    sets[2].ranks)]
    with pytest.raises(ImageLoadError, match=r"ranked set 2: image 0: .*gone\.png"):
        evaluate_image_reward(model, bad, batch_size=2)
