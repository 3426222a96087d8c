"""A researcher evaluating reward models with ``mmreward text eval`` / ``mmreward.text.eval``: reruns,
domain subsets, wrong benchmark files and Python / CLI parity (fast, scorer callables and a tiny RM)."""
import json
import warnings

import pytest
import torch
from mmreward.text.eval.rewardbench import evaluate_rewardbench, load_rewardbench
from mmreward.text.eval.rmbench import evaluate_rmbench, load_rmbench


def length_scorer(prompts, responses):
    return torch.tensor([float(len(r)) for r in responses])


def item(i, domain):
    c = [f"c{i}", f"chosen {i} detailed answer", f"## chosen {i}\n- **detailed** answer"]
    r = [f"r{i}x", f"rejected {i} detailed answer!", f"## rejected {i}\n- **detailed** answer!!"]
    return {"id": i, "prompt": f"q{i}", "chosen": c, "rejected": r}


@pytest.fixture()
def bench(tmp_path):
    folder = tmp_path / "rm-bench"
    folder.mkdir()
    for n, d in enumerate(("chat", "code", "safety-refuse", "safety-response")):
        (folder / f"{d}.json").write_text(json.dumps([item(10 * n + i, d) for i in range(3)]))
    return folder


def test_eval_result_saved_into_the_data_folder_does_not_break_the_rerun(bench):
    """``--out`` inside the RM-Bench folder: the rerun used to fail on the result file ("holds lists under
    ['overall_domains', ...]: choose one with split=..."), a split rm-bench refuses."""
    from mmreward.text.eval.cli import EvalConfig, run_eval

    out = bench / "result.jsonl"  # (a .jsonl name too: the result is one JSON object)
    first = run_eval(EvalConfig(data=str(bench), progress=False), scorer=length_scorer)
    out.write_text(json.dumps({"config": {"benchmark": "rm-bench"}, **first}))
    with pytest.warns(UserWarning, match="result.jsonl: an evaluation result"):
        again = run_eval(EvalConfig(data=str(bench), progress=False), scorer=length_scorer)
    assert again == first
    with pytest.warns(UserWarning, match="skipping"):
        assert len(load_rmbench(str(bench))) == 12
    # a broken or foreign .json there is still an error naming it
    (bench / "notes.json").write_text("{bad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="notes.json"):
            load_rmbench(str(bench))


def test_cli_rerun_into_out_in_the_data_folder_matches_python_and_the_table(bench, tmp_path, capsys):
    pytest.importorskip("transformers")
    from text_rm_fixtures import bert_config, word_tokenizer

    import mmreward
    from mmreward.cli import main as mmreward_main
    from mmreward.text import RewardModel

    torch.manual_seed(0)
    RewardModel.from_backbone(bert_config(), tokenizer=word_tokenizer(pair=True)).save_pretrained(str(tmp_path / "rm"))
    args = ["text", "eval", "--model", str(tmp_path / "rm"), "--data", str(bench), "--domains", "chat,safety",
            "--no-progress", "--out", str(bench / "r.json")]
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert mmreward_main(args) == 0
        table = capsys.readouterr().out
        in_table = json.loads((bench / "r.json").read_text())
        assert mmreward_main(args + ["--json"]) == 0  # r.json is now in the data folder
        first = json.loads(capsys.readouterr().out)
        py = evaluate_rmbench(mmreward.load(str(tmp_path / "rm")), str(bench), domains="chat,safety")
    saved = json.loads((bench / "r.json").read_text())
    # --out naming one of the data files: refused before the run (it replaced the chat items with the result)
    before = (bench / "chat.json").read_text()
    assert mmreward_main(args[:-1] + [str(bench / "chat.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is an RM-Bench data file of the --data folder" in err
    assert (bench / "chat.json").read_text() == before
    assert {k: v for k, v in py.items() if not k.startswith("scores_")} == first
    assert saved["scores_chosen"] == py["scores_chosen"] and saved["overall"] == py["overall"]
    assert {k: v for k, v in in_table.items() if k != "config"} == {k: v for k, v in saved.items() if k != "config"}
    assert first["num_items"] == 9 and first["overall_domains"] == ["chat", "safety"]
    for name, v in list(first["domains"].items()) + [("overall", first["overall"])]:
        line = next(x for x in table.splitlines() if x.split()[:1] == [name])
        assert line.split()[-4:] == [f"{v[k]:.1%}" for k in ("easy", "normal", "hard", "avg")]


def test_domains_safety_selects_the_pooled_safety_domain(bench):
    """``--domains safety``: the name the table / ``overall_domains`` use for the pooled safety files
    used to be refused ("domains ['safety'] not in ...")."""
    res = evaluate_rmbench(length_scorer, str(bench), domains="safety", merge_safety=True)
    assert list(res["domains"]) == ["safety"] and res["domains"]["safety"]["n"] == 6
    assert res["overall_domains"] == ["safety"]
    res = evaluate_rmbench(length_scorer, str(bench), domains=["chat", "safety"])
    assert list(res["domains"]) == ["chat", "safety-refuse", "safety-response"] and res["num_items"] == 9
    assert res["overall_domains"] == ["chat", "safety"]
    with pytest.raises(ValueError, match=r"domains \['math'\] not in"):
        evaluate_rmbench(length_scorer, str(bench), domains="safety,math")


def test_wrong_benchmark_file_names_the_right_benchmark(bench, tmp_path):
    rb = tmp_path / "rb.jsonl"
    rb.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "subset": "hep-go"}) + "\n")
    with pytest.raises(ValueError, match="RM-Bench items.*use --benchmark rm-bench"):
        load_rewardbench(str(bench / "chat.json"))
    with pytest.raises(ValueError, match="RewardBench-style pair row.*--benchmark rewardbench"):
        load_rmbench(str(rb))
    assert evaluate_rewardbench(length_scorer, str(rb))["num_pairs"] == 1


def test_rmbench_items_with_tuples_of_styles():
    items = [item(i, "chat") for i in range(3)]
    as_tuples = [{**it, "chosen": tuple(it["chosen"]), "rejected": tuple(it["rejected"])} for it in items]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = evaluate_rmbench(length_scorer, as_tuples)
    assert got == evaluate_rmbench(length_scorer, items)


def test_processbench_with_tensor_labels_and_no_subsets():
    """Labels / predictions as an integer tensor used to be refused ("labels[0] must be a step index ..., got
    tensor(1)"); subsets=None was "object of type 'NoneType' has no len()"; a `prm score` row's list of step
    scores gets a hint on how to make it a tensor."""
    from mmreward.text.prm.eval import processbench_f1, processbench_report

    scores = [torch.tensor([0.9, 0.2]), torch.tensor([0.8, float("nan")]), torch.tensor([0.1]), torch.tensor([0.7, 0.6])]
    labels, subsets = [1, -1, 0, -1], ["gsm8k", "gsm8k", "math", "math"]
    want = processbench_report(scores, labels, subsets, 0.5)
    assert want["average_f1"] == 1.0
    assert processbench_report(scores, torch.tensor(labels), subsets, 0.5) == want
    assert processbench_f1(torch.tensor([1, -1]), torch.tensor([1, 0]))["acc_error"] == 0.5
    one = processbench_report(scores, labels)  # no subsets: one group
    assert list(one["subsets"]) == ["all"] and one["subsets"]["all"]["n_error"] == 2
    with pytest.raises(ValueError, match="labels must hold step indices"):
        processbench_report(scores, torch.tensor([1.0, -1.0, 0.0, -1.0]), subsets)
    with pytest.raises(ValueError, match=r"sample 0: step scores must be a 1-D tensor.*prm score"):
        processbench_report([[0.9, None]], [-1], ["a"])
    with pytest.raises(TypeError, match="subsets must be a list"):
        processbench_report(scores, labels, 3)
