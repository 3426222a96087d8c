"""`python -m mmreward.text.generative.cli`: method flags map onto the config, same path as `run(...)`."""
import json

import pytest

from mmreward.text.generative.cli import load_rows, main
from mmreward.text.generative.heads import ScalarHeadLM
from mmreward.text.generative.tiny import tiny_llama, word_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    tok = word_tokenizer(["good bad q Yes No A B [[A]] [[B]] Score : 5"])
    model = tiny_llama(len(tok), hidden=32, layers=1, heads=2)
    model.save_pretrained(str(d / "lm"))
    tok.save_pretrained(str(d / "lm"))
    crm = ScalarHeadLM(model)
    crm.save_pretrained(str(d / "crm"))
    tok.save_pretrained(str(d / "crm" / "backbone"))
    rows = [{"prompt": "q", "chosen": "good", "rejected": "bad"},
            {"prompt": "q", "chosen": ["good", "x", "y"], "rejected": ["bad", "x", "y"]}]  # RM-Bench item
    (d / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return d


@pytest.mark.parametrize("method", ["genrm", "gram", "rm_r1", "grm", "reward_anything", "critic_rm"])
def test_cli_runs_every_method(saved, method, capsys):
    out = saved / f"{method}.json"
    model = saved / ("crm" if method == "critic_rm" else "lm")
    extra = ["--max-new-tokens", "3"] if method not in ("genrm", "gram") else ["--batch-size", "2"]
    assert main([method, "--model", str(model), "--data", str(saved / "pairs.jsonl"), "--out", str(out)] + extra) == 0
    res = json.loads(out.read_text())
    assert res["method"] == method and res["n"] == 2 and 0 <= res["accuracy"] <= 1 and 0 <= res["consistency"] <= 1
    assert len(res["p_chosen_first"]) == 2 and len(res["p_chosen_second"]) == 2
    if method in ("rm_r1", "grm", "reward_anything"):
        assert res["parse"]["n"] == 4  # 2 rows × 2 orders
    assert '"accuracy"' in capsys.readouterr().out


def test_cli_bad_input(saved, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "a"}))
    assert main(["genrm", "--model", str(saved / "lm"), "--data", str(bad)]) == 2
    assert "row 0 needs" in capsys.readouterr().err
    assert main(["genrm", "--model", str(saved / "lm"), "--data", str(tmp_path / "missing.json")]) == 2
    with pytest.raises(SystemExit):
        main(["nope", "--model", "x", "--data", "y"])
    assert len(load_rows(str(saved / "pairs.jsonl"), limit=1)) == 1


def test_cli_errors_are_one_line_and_name_the_folder(saved, tmp_path, capsys, monkeypatch):
    """Another mmreward model's folder was read as a causal LM: transformers' many-line "Unrecognized
    configuration class ... pip install --upgrade transformers". Now one line naming the folder, for
    judge and train-* alike; MMREWARD_DEBUG=1 re-raises; --limit -1 and an --out folder are refused."""
    import torch

    from mmreward.cli import main as mmreward_main
    from mmreward.text.reward_model import RewardModel

    rm_folder = tmp_path / "rm"
    torch.manual_seed(0)
    RewardModel.from_backbone(tiny_llama(8, hidden=16, layers=1, heads=2).config,
                              tokenizer=word_tokenizer(["good bad q"])).save_pretrained(str(rm_folder))
    verify = tmp_path / "verify.jsonl"
    verify.write_text(json.dumps({"prompt": "q", "response": "good", "correct": True}) + "\n")
    pairs = str(saved / "pairs.jsonl")
    named = f"--model {rm_folder} holds an mmreward 'text_reward_model' model: give a causal LM"
    cases = [
        (["judge", "genrm", "--model", str(rm_folder), "--data", pairs], named),
        (["judge", "critic_rm", "--model", str(rm_folder), "--data", pairs], named),
        (["train-genrm", "--model", str(rm_folder), "--data", str(verify), "--out", str(tmp_path / "g")], named),
        (["train-gram", "--model", str(rm_folder), "--data", pairs, "--out", str(tmp_path / "gr")], named),
        (["judge", "genrm", "--model", str(saved / "lm"), "--data", pairs, "--limit", "-1"],
         "--limit must be >= 0 (0: all rows), got -1"),
        (["judge", "genrm", "--model", str(saved / "lm"), "--data", pairs, "--out", str(tmp_path)],
         f"--out {tmp_path} is a folder"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert mmreward_main(["text", *argv]) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1 and message in err, (argv, err)
    monkeypatch.setenv("MMREWARD_DEBUG", "1")
    with pytest.raises(ValueError, match="holds an mmreward 'text_reward_model' model"):
        main(["genrm", "--model", str(rm_folder), "--data", pairs])
