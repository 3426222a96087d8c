"""What docs/text.md and docs/text_recipes.md show works as written."""
import importlib
import inspect


def test_recipes_raft_import_is_the_function_whichever_import_ran_first():
    # `from mmreward.text.recipes import raft, RaftConfig` (the docs' RAFT block) gave the submodule
    # raft.py: the lazy lookup imported it, and the import system then bound the module to the name,
    # so `raft(policy, ...)` raised "TypeError: 'module' object is not callable". The module has a name
    # of its own (reward_ranked), so no import order can shadow the function.
    module = importlib.import_module("mmreward.text.recipes.reward_ranked")  # the module first, then the name
    from mmreward.text.recipes import RaftConfig, raft

    assert inspect.isfunction(raft) and raft is module.raft and RaftConfig is module.RaftConfig
    assert "config" in inspect.signature(raft).parameters
    recipes = importlib.import_module("mmreward.text.recipes")
    assert recipes.raft is module.raft and "raft" in dir(recipes)


def _tiny_rm_folder(folder):
    from text_rm_fixtures import bert_config, word_tokenizer

    from mmreward.text import RewardModel

    RewardModel.from_backbone(bert_config(), tokenizer=word_tokenizer(pair=True)).save_pretrained(str(folder))
    return str(folder)


def test_score_and_eval_commands_take_a_split_of_their_data(tmp_path, capsys):
    # data holding several splits (a saved DatasetDict, a .json object of lists) was refused with "choose
    # one with split=..." by `mmreward text score`, `mmreward score` and `mmreward text eval`, none of
    # which had a --split
    import json

    from mmreward.cli import main

    rm = _tiny_rm_folder(tmp_path / "rm")
    row = {"prompt": "say a", "chosen": "a", "rejected": "b", "subset": "alpacaeval-easy"}
    (tmp_path / "rb.json").write_text(json.dumps({"raw": [row, row, row], "filtered": [row]}))
    data = str(tmp_path / "rb.json")
    for argv in (["text", "score", "--model", rm, "--data", data, "--no-progress", "--json"],
                 ["score", "--model", rm, "--data", data, "--json"]):
        capsys.readouterr()
        assert main(argv) == 2
        assert "holds several lists of rows, ['filtered', 'raw']" in capsys.readouterr().err
        assert main(argv + ["--split", "filtered"]) == 0
        out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert len(out) == 1 and {"score_chosen", "score_rejected"} <= set(out[0]), out
    assert main(["text", "eval", "--model", rm, "--benchmark", "rewardbench", "--data", data, "--split", "raw",
                 "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["num_pairs"] == 3
    # RM-Bench picks its data with --domains; a split there is refused, not ignored
    assert main(["text", "eval", "--model", rm, "--benchmark", "rm-bench", "--data", data, "--split", "raw"]) == 2
    assert "--split applies to --benchmark rewardbench / rewardbench-2 only" in capsys.readouterr().err


def test_implicit_prompt_pair_with_one_side_not_a_conversation_is_refused():
    # docs/text.md: `{"chosen": C, "rejected": C}`, C a whole conversation or a text. A conversation beside
    # a bare reply was accepted: chosen scored after its prompt turn, rejected with no prompt at all
    import pytest

    from mmreward.core.data import DataError
    from mmreward.text import load_preference_pairs

    conv = [{"role": "user", "content": "say a"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(DataError, match=r"^row 1: field 'chosen' is a conversation whose earlier turns are the "
                                        r"prompt, but field 'rejected' is a single reply"):
        load_preference_pairs([{"chosen": conv, "rejected": conv}, {"chosen": conv, "rejected": "b"}])
    with pytest.raises(DataError, match=r"^row 0: field 'rejected' is a conversation"):
        load_preference_pairs([{"chosen": [{"role": "assistant", "content": "b"}], "rejected": conv}])
    # what stays valid: both conversations, both texts, or a prompt with any response form
    pairs = load_preference_pairs([{"chosen": conv, "rejected": conv[:1] + [{"role": "assistant", "content": "b"}]},
                                   {"chosen": "a", "rejected": "b"}, {"prompt": "say a", "chosen": conv, "rejected": "b"}])
    assert [p.prompt for p in pairs] == [None, None, "say a"]


def test_paths_as_path_objects_name_the_file_and_evaluate(tmp_path):
    # evaluate_rmbench / evaluate_rewardbench took a pathlib.Path for a list of rows ("'PosixPath' object
    # is not iterable"); load_preference_pairs(Path) named no file in its errors
    import json
    from pathlib import Path

    import pytest

    from mmreward.core.data import DataError
    from mmreward.text import load_preference_pairs
    from mmreward.text.eval import evaluate_rewardbench, evaluate_rmbench

    bad = tmp_path / "pairs.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n"
                   + json.dumps({"prompt": "a", "chosen": 5, "rejected": "c"}) + "\n")
    with pytest.raises(DataError, match=rf"^{bad}: row 1: field 'chosen' must be a string"):
        load_preference_pairs(Path(bad))
    length = lambda prompts, responses: __import__("torch").tensor([float(len(r)) for r in responses])  # noqa: E731
    rb = tmp_path / "rb.json"
    rows = [{"prompt": "p", "chosen": "long answer", "rejected": "no", "subset": "alpacaeval-easy"}]
    rb.write_text(json.dumps({"raw": rows * 2, "filtered": rows}))
    assert evaluate_rewardbench(length, Path(rb), split="filtered")["num_pairs"] == 1
    with pytest.raises(ValueError, match="split= chooses a split of a data path"):
        evaluate_rewardbench(length, rows, split="raw")
    item = {"prompt": "p", "chosen": ["aaaa", "aaaaa", "aaaaaa"], "rejected": ["a", "aa", "aaa"]}
    (tmp_path / "chat.json").write_text(json.dumps([item]))
    res = evaluate_rmbench(length, Path(tmp_path / "chat.json"))
    assert res["num_items"] == 1 and list(res["domains"]) == ["chat"] and res["overall"]["avg"] == 1.0


def test_a_scorer_returning_no_numbers_is_named():
    # docs/text_recipes.md: a scorer is `(prompts, responses) -> Tensor[N]`; one returning a string failed
    # inside torch.as_tensor ("new(): invalid data type 'str'"), naming neither the scorer nor the contract
    import pytest
    import torch

    from mmreward.text.eval import evaluate_rewardbench

    rows = [{"prompt": "p", "chosen": "a", "rejected": "b", "subset": "alpacaeval-easy"}]
    for bad, name in ((lambda p, r: "0.5", "str"), (lambda p, r: None, "NoneType"), (lambda p, r: [["1", "x"]], "list")):
        with pytest.raises(TypeError, match=rf"^scorer returned {name}, not numbers .*: a scorer returns Tensor\[N\]"):
            evaluate_rewardbench(bad, rows)
    ok = evaluate_rewardbench(lambda p, r: [torch.tensor(float(len(x))) for x in r], rows)  # a list of 0-d tensors
    assert ok["num_pairs"] == 1 and ok["accuracy"] == 0.0


def test_from_backbone_names_a_missing_or_non_model_folder(tmp_path):
    # docs/text.md: `RewardModel.from_backbone(path | hub id | ...)`. A missing local folder reached
    # transformers as a hub id ("Repo id must be in the form 'repo_name' or 'namespace/repo_name'"), a
    # folder without config.json gave "Unrecognized model in ... Should have a `model_type` key"
    import pytest

    from mmreward.core.folders import CheckpointError
    from mmreward.text import RewardModel

    (tmp_path / "tok").mkdir()
    (tmp_path / "rows.jsonl").write_text("{}\n")
    for path, message in ((tmp_path / "missing" / "model", "does not exist"), ("./missing-backbone", "does not exist"),
                          (tmp_path / "tok", "has no config.json: not a transformers model folder"),
                          (tmp_path / "rows.jsonl", "is a file, not a transformers model folder")):
        with pytest.raises(CheckpointError, match=rf"^backbone (folder )?'{path}' {message}"):
            RewardModel.from_backbone(str(path))
