"""An RM researcher's RewardBench 2 runs with data as it comes: the hub release read by pandas (numpy arrays in
the list columns), conversation prompts, the extra columns (``models``, ``num_incorrect``, ``total_completions``),
``--limit`` cutting a Ties pair apart, ``--json`` output, and data of another benchmark given to each evaluator.
Fast: scorer callables only."""
import json
import warnings

import numpy as np
import pytest
import torch

from mmreward.text.eval.rewardbench import evaluate_rewardbench
from mmreward.text.eval.rewardbench2 import evaluate_rewardbench2
from mmreward.text.eval.rmbench import evaluate_rmbench


def hub_rows():
    """Rows in the hub release's layout (every column it has), five best-of-4 subsets and two Ties pairs."""
    rows = []
    for i, subset in enumerate(["Factuality", "Precise IF", "Math", "Safety", "Focus"]):
        rows.append({"id": str(i), "prompt": f"q{i}", "chosen": [f"good answer {i}"],
                     "rejected": [f"bad {i}", f"bad answer number {i}", f"b{i}"], "num_correct": 1,
                     "num_incorrect": 3, "total_completions": 4, "models": ["m1", "m2", "m3", "m4"], "subset": subset})
    for n in range(2):
        rows.append({"id": f"ref:{n}", "prompt": f"t{n}", "chosen": [f"right {n}"], "rejected": [f"w {n}", f"wr {n}"],
                     "num_correct": 1, "num_incorrect": 2, "total_completions": 3, "models": ["a", "b", "c"],
                     "subset": "Ties"})
        rows.append({"id": f"tied:{n}", "prompt": f"t{n}", "chosen": [f"right {n}", f"also right {n}"],
                     "rejected": [f"w {n}"], "num_correct": 2, "num_incorrect": 1, "total_completions": 3,
                     "models": ["a", "b", "c"], "subset": "Ties"})
    return rows


def keyword_scorer(prompts, responses):
    # a correct answer scores its length + 10, a wrong one its length: margins, spreads and shared maxima vary
    return torch.tensor([len(r) + (10.0 if r.startswith(("good", "right", "also")) else 0.0) for r in responses])


def test_pandas_dataframe_of_the_hub_parquet_is_scored_as_the_file(tmp_path):
    """pd.read_parquet / Dataset.to_pandas() give numpy arrays in the list columns: they were refused as
    "`chosen` must be a non-empty list of completions, got ndarray"."""
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(hub_rows()), str(path))
    df = pd.read_parquet(path)
    assert isinstance(df["chosen"][0], np.ndarray)
    from_file = evaluate_rewardbench2(keyword_scorer, str(tmp_path), split="test")
    from_df = evaluate_rewardbench2(keyword_scorer, df)
    assert from_df["subsets"] == from_file["subsets"] and from_df["scores"] == from_file["scores"]
    assert from_df["subsets"]["Ties"] == from_file["ties"]["score"]
    # a list of records from the DataFrame too
    assert evaluate_rewardbench2(keyword_scorer, df.to_dict("records"))["overall"] == from_file["overall"]


def test_rmbench_items_from_a_dataframe():
    pd = pytest.importorskip("pandas")
    items = [{"id": i, "prompt": f"p{i}", "domain": "chat",
              "chosen": np.array([f"c{i}", f"cc{i}", f"ccc{i}"], dtype=object),
              "rejected": np.array([f"r{i}", f"rr{i}", f"rrrr{i}"], dtype=object)} for i in range(3)]
    got = evaluate_rmbench(keyword_scorer, pd.DataFrame(items))
    want = evaluate_rmbench(keyword_scorer, [dict(it, chosen=list(it["chosen"]), rejected=list(it["rejected"]))
                                             for it in items])
    assert got["overall"] == want["overall"] and got["num_items"] == 3


def test_conversation_prompts_reach_the_scorer():
    """A prompt given as a conversation (earlier turns) is what the text scorers take (TextPair): it was refused
    as "`prompt` must be a string, got list"."""
    seen = []

    def scorer(prompts, responses):
        seen.extend(prompts)
        return keyword_scorer(prompts, responses)

    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
             {"role": "user", "content": "q0"}]
    rows = [dict(hub_rows()[0], prompt=turns)]
    got = evaluate_rewardbench2(scorer, rows)
    assert got["subsets"] == {"Factuality": 1.0} and seen and all(p == turns for p in seen)
    with pytest.raises(ValueError, match=r"row 0: `prompt` must be a string or a non-empty list of .*messages"):
        evaluate_rewardbench2(scorer, [dict(hub_rows()[0], prompt=[{"text": "q"}])])


def test_total_completions_that_disagree_with_the_lists_are_named():
    """A row whose lists lost a completion (a broken export) was scored as best-of-3 without a word; the official
    code regroups scores by total_completions."""
    rows = hub_rows()
    rows[2] = dict(rows[2], rejected=rows[2]["rejected"][:2])
    with pytest.raises(ValueError, match=r"row 2: `total_completions` is 4 but the row has 3 chosen \+ rejected"):
        evaluate_rewardbench2(keyword_scorer, rows)


def test_limit_cutting_a_ties_pair_is_said(tmp_path):
    """--limit 8 keeps ref:1 without tied:1: its accuracy counts, its margins cannot; the run says so."""
    from mmreward.text.eval.cli import EvalConfig, run_eval

    path = tmp_path / "rb2.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in hub_rows()))
    config = EvalConfig(benchmark="rewardbench-2", data=str(path), limit=8, progress=False)
    with pytest.warns(UserWarning, match=r"1 'Ties' row\(s\) lack their 'ref:' / 'tied:' partner \(first: ref:1"):
        got = run_eval(config, scorer=keyword_scorer)
    assert got["ties"]["unpaired"] == ["ref:1"] and got["ties"]["prompts_with_both"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the whole file: every pair whole, no warning
        full = run_eval(EvalConfig(benchmark="rewardbench-2", data=str(path), progress=False), scorer=keyword_scorer)
    assert full["ties"]["unpaired"] == [] and full["ties"]["prompts_with_both"] == 2


def test_json_output_leaves_the_per_row_scores_to_out(tmp_path, monkeypatch, capsys):
    """--json printed every row's completion scores (thousands of lists on the real data); --out keeps them."""
    import mmreward.text.eval.cli as cli

    monkeypatch.setattr(cli, "load_scorer", lambda config: keyword_scorer)
    path = tmp_path / "rb2.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in hub_rows()))
    out = tmp_path / "res.json"
    assert cli.main(["--model", "m", "--benchmark", "rewardbench-2", "--data", str(path), "--json", "--no-progress",
                     "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "scores" not in printed and printed["subsets"]["Ties"] == printed["ties"]["score"]
    saved = json.loads(out.read_text())
    assert len(saved["scores"]) == len(hub_rows()) and saved["overall"] == printed["overall"]


def test_other_benchmarks_rows_are_named():
    rb2 = hub_rows()[:1]
    with pytest.raises(ValueError, match=r"row 0: `chosen` must be a string, got list: .*evaluate_rewardbench2"):
        evaluate_rewardbench(keyword_scorer, rb2)
    rm_bench = [{"id": 0, "prompt": "p", "chosen": ["a", "b", "c"], "rejected": ["d", "e", "f"], "domain": "chat"}]
    with pytest.raises(ValueError, match=r"row 0: no `subset`.*RM-Bench items.*--benchmark rm-bench"):
        evaluate_rewardbench2(keyword_scorer, rm_bench)


def test_a_subset_that_is_not_rewardbench2s_is_said():
    """A merged export with "math" next to "Math" averaged seven subsets into overall without a word."""
    from mmreward.text.eval.rewardbench2 import format_rewardbench2

    rows = hub_rows() + [dict(hub_rows()[2], id="99", subset="math")]
    with pytest.warns(UserWarning, match=r"subset\(s\) \['math'\] are not RewardBench 2's"):
        got = evaluate_rewardbench2(keyword_scorer, rows)
    assert got["unknown_subsets"] == ["math"] and len(got["subsets"]) == 7
    assert any("not RewardBench 2 subsets" in line for line in format_rewardbench2(got))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "unknown_subsets" not in evaluate_rewardbench2(keyword_scorer, hub_rows())
