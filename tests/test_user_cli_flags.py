"""A demanding CLI user's flag values: negative numbers in every spelling float() reads, empty output paths,
synthetic-data flags given with a data file, and command output that stays JSON. Each user error is one
line on stderr, exit 2, found before any work, and nothing is written."""
from __future__ import annotations

import json
import math
import os
import warnings

import pytest

from mmreward.cli import main
from mmreward.core.cli_config import CLIParser

from helpers import one_line_error as _one_line

BAD = "/nonexistent/mmreward-model"


def test_negative_numbers_in_scientific_or_inf_spelling_are_values(monkeypatch, capsys):
    """`serve --missing-reward -1e3` / `--refine-clip -1e-3` failed as "expected one argument": argparse reads a
    word starting with '-' as an option unless it looks like -1 or -0.5."""
    parser = CLIParser(prog="p")
    parser.add_argument("--x", type=float)
    parser.add_argument("--flag", action="store_true")
    for text, value in (("-1e3", -1000.0), ("-1E-3", -0.001), ("-.5", -0.5), ("-2.", -2.0), ("-7", -7.0)):
        assert parser.parse_args(["--x", text]).x == value, text
    assert parser.parse_args(["--x", "-inf"]).x == -math.inf and math.isnan(parser.parse_args(["--x", "-NaN"]).x)
    with pytest.raises(SystemExit):  # an unknown option is still one
        parser.parse_args(["--x", "1", "-e3"])
    assert "unrecognized arguments: -e3" in _one_line(capsys)

    import mmreward.serve.app as app

    seen = {}
    monkeypatch.setattr(app, "serve", lambda model, config: seen.setdefault("config", config))
    assert main(["serve", "--model", BAD, "--missing-reward", "-1e3", "--refine-clip", "-1e-3"]) == 0
    assert seen["config"].missing_reward == -1000.0 and seen["config"].refine_clip == -0.001
    assert main(["serve", "--model", BAD, "--missing-reward", "-inf"]) == 2  # now the value's own check names it
    assert "missing_reward must be a finite number" in _one_line(capsys)


@pytest.fixture
def inputs(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "q", "chosen": "good", "rejected": "bad", "subset": "chat"}) + "\n")
    steps = tmp_path / "steps.jsonl"
    steps.write_text(json.dumps({"prompt": "1+1", "completions": ["1+1=2"], "labels": [True]}) + "\n")
    (tmp_path / "frames").mkdir()
    return tmp_path


@pytest.mark.parametrize("argv,flag", [
    (["vision", "colour-data", "--n", "2", "--out", ""], "--out"),  # wrote rows.jsonl + images/ into the cwd
    (["text", "eval", "--model", BAD, "--benchmark", "rewardbench", "--data", "{rows}", "--out", ""], "--out"),
    (["prm", "score", "--model", BAD, "--data", "{steps}", "--out", ""], "--out"),
    (["prm", "eval", "--model", BAD, "--data", "{steps}", "--out", " "], "--out"),
    (["prm", "search", "--model", BAD, "--out", ""], "--out"),
    (["text", "judge", "genrm", "--model", BAD, "--data", "{rows}", "--out", ""], "--out"),
    (["score", "--model", BAD, "--data", "{rows}", "--out", ""], "--out"),
    (["vision", "eval", "--model", BAD, "--data", "{rows}", "--out", ""], "--out"),
    (["score-video", "{tmp}/frames", "--model", BAD, "--prompt", "x", "--plot", ""], "--plot"),
    (["text", "merge", BAD, BAD + "2", "--out", ""], "--out"),
    (["text", "train", "--model", BAD, "--data", "{rows}", "--out", ""], "--out"),
    (["vision", "train", "--out", ""], "--out"),
])
def test_an_empty_output_path_is_refused(argv, flag, inputs, monkeypatch, capsys):
    """`--out "$OUT"` with OUT unset: the results were silently not written (read as "no output"), or written
    into the working folder (`vision colour-data`, which also deletes numbered images it finds there)."""
    monkeypatch.chdir(inputs)
    before = sorted(os.listdir(inputs))
    argv = [a.format(rows=inputs / "rows.jsonl", steps=inputs / "steps.jsonl", tmp=inputs) for a in argv]
    assert main(argv) == 2, argv
    err = _one_line(capsys)
    assert f"argument {flag}: an empty path names nothing to write" in err, err
    assert sorted(os.listdir(inputs)) == before


def test_synthetic_data_flags_with_a_data_file_are_refused(inputs, capsys):
    """Each of these flags shapes generated data; given with a --data file it was silently ignored."""
    run = str(inputs / "run")
    quiet = ["--no-progress", "--no-tensorboard", "--no-plot"]
    cases = [
        (["vision", "train-vlm-rm", "--data", "{rows}", "--n-train", "5", "--out", run],
         "--n-train 5 is the number of synthetic rows"),
        (["vision", "train-visual-prm", "--data", "{steps}", "--n-train", "5", "--out", run],
         "--n-train 5 is the number of synthetic rows"),
        (["prm", "train", "--data", "{steps}", "--num-steps", "7", "--out", run],
         "--num-steps 7 shapes the --synthetic chains, which this run does not use"),
        (["prm", "train", "--data", "{steps}", "--model", BAD, "--max-value", "3", "--out", run],
         "--max-value 3 bounds the --synthetic chains"),
    ]
    for argv, message in cases:
        argv = [a.format(rows=inputs / "rows.jsonl", steps=inputs / "steps.jsonl") for a in argv] + quiet
        assert main(argv) == 2, argv
        err = _one_line(capsys)
        assert message in err, (argv, err)
    assert not os.path.exists(run)


def test_vision_train_names_the_synthetic_options_a_data_file_leaves_unused(inputs, monkeypatch):
    """`vision train --data sets.jsonl --n-train 5 --set-size 3` trained on the file and ignored both, silently:
    now a one-line warning names them (the run goes on: one option list often serves both kinds of run)."""
    import mmreward.vision.train as vtrain

    monkeypatch.setattr(vtrain, "train_image_reward", lambda cfg, tcfg: (None, []))
    rows = str(inputs / "rows.jsonl")
    for argv, message in ((["--data", rows, "--n-train", "5", "--set-size", "3"],
                           f"--n-train 5, --set-size 3 set up synthetic data, but --data {rows} is a file of ranked "
                           "sets, used as it is: they are ignored"),
                          (["--eval-data", rows, "--n-eval", "5"], "--n-eval 5 sets up synthetic data, but --eval-data"),
                          (["--eval-data", rows, "--n-train", "5"], None)):  # synthetic training sets: used
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert main(["vision", "train", *argv, "--out", str(inputs / "run")]) == 0
        warned = [str(w.message) for w in seen if "synthetic data" in str(w.message)]
        if message is None:
            assert warned == [], warned
        else:
            assert len(warned) == 1 and message in warned[0], warned


def test_flags_that_shape_synthetic_data_still_work_where_they_are_used(inputs, monkeypatch):
    """The same flags with synthetic data (or the tiny backbone, whose tokenizer --max-value sizes) are used."""
    import mmreward.text.prm.cli as prm_cli

    reached = []

    def stop(*a, **k):
        reached.append(True)
        raise ValueError("stop")

    monkeypatch.setattr(prm_cli, "_build_model", stop)
    for extra in (["--synthetic", "4", "--num-steps", "3"], ["--data", str(inputs / "steps.jsonl"), "--max-value", "5"]):
        args = prm_cli._parser().parse_args(["train", *extra, "--out", str(inputs / "run")])
        with pytest.raises(ValueError, match="stop"):
            prm_cli._train(args)
    assert len(reached) == 2
    import mmreward.vision.cli as vcli

    captured = {}
    import mmreward.vision.train as vtrain

    monkeypatch.setattr(vtrain, "train_image_reward", lambda cfg, tcfg: captured.setdefault("cfg", cfg) and (None, []))
    assert vcli.train_main(["--n-train", "5", "--set-size", "3", "--out", str(inputs / "run")]) == 0
    assert captured["cfg"].n_train == 5 and captured["cfg"].set_size == 3


def test_colour_data_negative_seed_names_the_flag(tmp_path, capsys):
    """`vision colour-data --seed -1` answered numpy's "expected non-negative integer", naming no flag."""
    assert main(["vision", "colour-data", "--n", "2", "--seed", "-1", "--out", str(tmp_path / "c")]) == 2
    assert "--seed must be an integer >= 0, got -1" in _one_line(capsys)
    assert os.listdir(tmp_path) == []


def test_judge_and_vision_train_output_stays_json_with_a_nan(inputs, monkeypatch, capsys):
    """`text judge` printed (and wrote with --out) NaN for an overflowing judge's probability, and `vision train`
    its summary line with a NaN held-out metric: not JSON (jq and JavaScript refuse it)."""
    import mmreward.text.generative.cli as gcli

    nan = float("nan")
    monkeypatch.setattr(gcli, "load_model", lambda *a, **k: (None, None))
    monkeypatch.setattr(gcli, "run", lambda *a, **k: {"accuracy": nan, "n": 1, "p_chosen_first": [nan]})
    out = inputs / "judge.json"
    assert main(["text", "judge", "genrm", "--model", BAD, "--data", str(inputs / "rows.jsonl"), "--out", str(out)]) == 0

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the output"))

    assert strict(capsys.readouterr().out) == {"accuracy": None, "n": 1}
    assert strict(out.read_text()) == {"method": "genrm", "accuracy": None, "n": 1, "p_chosen_first": [None]}

    import mmreward.vision.train as vtrain

    history = [{"step": 2, "loss": 0.5, "eval_pairwise_accuracy": nan}]
    monkeypatch.setattr(vtrain, "train_image_reward", lambda cfg, tcfg: (None, history))
    assert main(["vision", "train", "--out", str(inputs / "run")]) == 0
    summary = capsys.readouterr().out.splitlines()[0]
    assert strict(summary) == {"step": 2, "loss": 0.5, "eval_pairwise_accuracy": None}


def test_merge_refuses_an_init_bound_with_the_init_check_off(tmp_path, capsys):
    """`text merge A B --no-check-init --max-init-distance 0.5` averaged the members without any check: the
    bound was silently ignored."""
    argv = ["text", "merge", BAD, BAD + "2", "--out", str(tmp_path / "m"), "--no-check-init", "--max-init-distance", "0.5"]
    assert main(argv) == 2
    assert "--max-init-distance 0.5 bounds the init check, which --no-check-init turns off" in _one_line(capsys)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("method,flag,value", [("genrm", "--lam", "5"), ("genrm", "--num-rationales", "8"),
                                               ("genrm", "--temperature", "0.3"), ("gram", "--label-smoothing", "0.2"),
                                               ("critic_rm", "--lam-end", "0.5")])
def test_judge_offers_no_flag_it_would_ignore(method, flag, value, inputs, capsys):
    """`text judge genrm --lam 5` (a training loss weight) or `--num-rationales 8` (GenRM-CoT; the judge scores
    the direct verifier) ran and ignored the value; `--help` listed them as judge options."""
    from mmreward.text.generative.cli import main as judge_main

    with pytest.raises(SystemExit):
        judge_main([method, "--help"])
    assert flag not in capsys.readouterr().out
    assert main(["text", "judge", method, "--model", BAD, "--data", str(inputs / "rows.jsonl"), flag, value]) == 2
    assert f"unrecognized arguments: {flag} {value}" in _one_line(capsys)


def test_info_device_without_load_is_refused(capsys):
    """`mmreward info FOLDER --device cuda:7` loads nothing (no --load): the device was silently ignored."""
    assert main(["info", BAD, "--device", "cuda:7"]) == 2
    assert "--device cuda:7 is where --load puts the model: add --load" in _one_line(capsys)
    assert main(["info", BAD, "--load", "--device", "cpu"]) == 2  # with --load: the folder is what is wrong
    assert "nonexistent" in _one_line(capsys)


def _bert_json(path, **change):
    config = {"model_type": "bert", "vocab_size": 40, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 64, **change}
    path.write_text(json.dumps(config))
    return str(path)


def test_backbone_config_files_with_wrong_types_or_keys(inputs, capsys):
    """`text train --backbone-config C.json`: a wrong type ("hidden_size": "32", null, 32.5) was an *unexpected*
    error (exit 1: huggingface_hub's validation error is no ValueError), a size torch cannot build (-32) too;
    an unknown model_type printed every model type transformers knows (thousands of characters); a misspelt
    key ("hiden_size") left the field at its default, silently."""
    run = inputs / "run"
    common = ["--tokenizer", BAD, "--data", str(inputs / "rows.jsonl"), "--out", str(run), "--max-steps", "1"]
    cases = [({"hidden_size": "32"}, "Field 'hidden_size' expected int, got str"),
             ({"hidden_size": None}, "Field 'hidden_size' expected int, got NoneType"),
             ({"model_type": "bret"}, "model_type 'bret' is not a transformers model type (did you mean 'bert'")]
    for change, message in cases:
        config = _bert_json(inputs / "c.json", **change)
        assert main(["text", "train", "--backbone-config", config, *common]) == 2, change
        err = _one_line(capsys)
        assert f"{config}: " in err and message in err and "unexpected" not in err and len(err) < 400, err
    assert not run.exists()


def test_backbone_config_keys_no_model_reads_are_named(inputs):
    from mmreward.text.cli import _config_from_json

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        config = _config_from_json(_bert_json(inputs / "c.json", hiden_size=16))
    assert config.hidden_size == 32 and len(seen) == 1
    assert "'hiden_size' (did you mean 'hidden_size'?) is not a field of BertConfig" in str(seen[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean config: no warning
        assert _config_from_json(_bert_json(inputs / "c.json")).num_hidden_layers == 1


def test_a_backbone_torch_cannot_build_is_a_user_error(inputs, capsys):
    """"hidden_size": -32 failed in torch as "Trying to create tensor with negative dimension" (exit 1)."""
    tok = inputs / "tok"
    from helpers import word_tokenizer

    word_tokenizer(["q", "good", "bad"], model_max_length=32).save_pretrained(str(tok))
    config = _bert_json(inputs / "c.json", hidden_size=-32)
    argv = ["text", "train", "--backbone-config", config, "--tokenizer", str(tok), "--data", str(inputs / "rows.jsonl"),
            "--out", str(inputs / "run"), "--max-steps", "1", "--batch-size", "1", "--no-progress", "--no-tensorboard"]
    assert main(argv) == 2
    err = _one_line(capsys)
    assert f"--backbone-config {config}: cannot build a bert backbone from it: " in err and "negative" in err, err
    (inputs / "emptytok").mkdir()  # a --tokenizer problem is named as such, not blamed on the config
    argv[argv.index("--tokenizer") + 1] = str(inputs / "emptytok")
    argv[argv.index("--backbone-config") + 1] = _bert_json(inputs / "ok.json")
    assert main(argv) == 2
    err = _one_line(capsys)
    assert "emptytok has no tokenizer files" in err and "--backbone-config" not in err, err


@pytest.mark.parametrize("argv", [
    ["score", "--model", BAD, "--data", "{rows}", "--device", "meta"],
    ["prm", "score", "--model", BAD, "--problem", "1+1", "--step", "1+1=2", "--device=META"],
    ["text", "train", "--model", BAD, "--data", "{rows}", "--out", "{tmp}/run", "--device", "meta"],
    ["serve", "--model", BAD, "--device", "meta:0"],
])
def test_the_meta_device_is_refused_where_numbers_are_needed(argv, inputs, capsys):
    """`--device meta` (which `mmreward ops` and `info --load` take) failed as an unexpected error, exit 1:
    "Tensor.item() cannot be called on meta tensors", after `text train` had made its run folder; `serve`
    started and failed every request."""
    before = sorted(os.listdir(inputs))
    argv = [a.format(rows=inputs / "rows.jsonl", tmp=inputs) for a in argv]
    assert main(argv) == 2
    err = _one_line(capsys)
    assert "the meta device holds tensor shapes but no numbers" in err and "unexpected" not in err, err
    assert sorted(os.listdir(inputs)) == before
    from mmreward.cli import _meta_device

    assert _meta_device(["info", "x", "--load", "--device", "cpu"]) is None and _meta_device(["--device"]) is None


def test_prm_score_prints_the_models_own_numbers(tmp_path, capsys):
    """`prm score` rounded every score to 6 places: a product of 18 step probabilities (--aggregation prod,
    about 1e-6) lost a fifth of its value and smaller ones printed 0.0, so the CLI and `model.score` disagreed
    and best-of-N candidates tied."""
    import dataclasses

    import mmreward
    from mmreward.core.inputs import StepSolution
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("step", max_value=5)
    ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=16, layers=1, heads=2, seed=0), tok,
                                     max_length=64).save_pretrained(str(tmp_path / "prm"))
    steps = ["1+1=2"] * 18
    assert main(["prm", "score", "--model", str(tmp_path / "prm"), "--problem", "1+1", "--aggregation", "prod",
                 *[a for s in steps for a in ("--step", s)]]) == 0
    row = json.loads(capsys.readouterr().out)
    model = mmreward.load(str(tmp_path / "prm"))
    model.config = dataclasses.replace(model.config, aggregation="prod")
    expected = model.score([StepSolution("1+1", steps)]).item()
    parts = model.score_parts([StepSolution("1+1", steps)])[0].tolist()
    assert expected < 1e-3 and row["score"] == pytest.approx(expected, rel=1e-5, abs=0)
    assert row["step_scores"] == pytest.approx(parts, rel=1e-5, abs=0)


def test_a_vision_backbone_that_is_another_mmreward_model_is_named(tmp_path, capsys):
    """`vision train --backbone RM` (a text reward model folder) failed with transformers' "does not recognize
    this architecture ... pip install --upgrade transformers"; `train-vlm-rm --backbone RM` printed a
    transformers log line and then "Unrecognized processing class"."""
    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / "config.json").write_text(json.dumps({"model_type": "text_reward_model"}))
    quiet = ["--max-steps", "1", "--no-progress", "--no-tensorboard", "--no-plot"]
    for argv, wanted in ((["vision", "train", "--backbone", str(rm), "--out", str(tmp_path / "a")], "an image_reward folder"),
                         (["vision", "train-vlm-rm", "--data", "synthetic", "--n-train", "2", "--backbone", str(rm),
                           "--out", str(tmp_path / "b")], "a transformers VLM folder")):
        assert main(argv + quiet) == 2, argv
        err = _one_line(capsys)
        assert f"--backbone {rm} holds an mmreward 'text_reward_model' model" in err and wanted in err, err
    assert sorted(os.listdir(tmp_path)) == ["rm"]


def test_a_prm_backbone_that_is_an_mmreward_model_is_named(tmp_path, capsys):
    """`prm train --backbone RM` (a text reward model folder) failed with transformers' "Couldn't instantiate
    the backend tokenizer"; a saved PRM as --backbone is continued with --model."""
    steps = tmp_path / "steps.jsonl"
    steps.write_text(json.dumps({"prompt": "1+1", "completions": ["1+1=2"], "labels": [True]}) + "\n")
    for model_type, hint in (("text_reward_model", "give a transformers model folder"),
                             ("process_reward_model", "continue training it with --model")):
        folder = tmp_path / model_type
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        assert main(["prm", "train", "--backbone", str(folder), "--data", str(steps), "--out", str(tmp_path / "r")]) == 2
        err = _one_line(capsys)
        assert f"holds an mmreward {model_type!r} model, not a transformers backbone: {hint}" in err, err
    assert not (tmp_path / "r").exists()


def test_prm_score_refuses_a_second_problem(capsys):
    """`prm score --problem A --step a1 --problem B --step b1` scored problem B with the steps [a1, b1]: the
    last --problem won silently and took the first one's steps."""
    argv = ["prm", "score", "--model", BAD, "--problem", "1+1", "--step", "1+1=2", "--problem", "2+2", "--step", "2+2=4"]
    assert main(argv) == 2
    assert "--problem is given 2 times: one command scores one problem" in _one_line(capsys)
    assert main(["prm", "score", "--model", BAD, "--problem", "1+1", "--step", "1+1=2"]) == 2  # one: on to the model
    assert "nonexistent" in _one_line(capsys)


@pytest.mark.parametrize("argv,message", [
    (["text", "score", "--model", BAD, "--data", "{rows}", "--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["text", "score", "--model", BAD, "--data", "{rows}", "--max-length", "1"],
     "max_length must be an integer >= 2 or None, got 1"),
    (["text", "eval", "--model", BAD, "--benchmark", "rewardbench", "--data", "{rows}", "--max-length", "1"],
     "max_length must be 0 (the model's own) or >= 2 tokens, got 1"),
    (["prm", "score", "--model", BAD, "--data", "{steps}", "--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["prm", "eval", "--model", BAD, "--data", "{steps}", "--batch-size", "-2"], "--batch-size must be an integer >= 1"),
])
def test_scoring_sizes_are_checked_before_the_model_loads(argv, message, inputs, capsys):
    """These were refused by the model's own check, after the rows were read and the model had loaded
    (minutes for a 7B model); with a model folder that does not exist the folder was reported instead."""
    argv = [a.format(rows=inputs / "rows.jsonl", steps=inputs / "steps.jsonl") for a in argv]
    assert main(argv) == 2
    err = _one_line(capsys)
    assert message in err and "nonexistent" not in err, err


def test_pairwise_accuracy_leaves_out_pairs_with_a_nan_score(inputs, monkeypatch, capsys):
    """A model overflowing in fp16 scores NaN: `text score` / `mmreward score` counted such a pair as wrongly
    ordered (NaN > x is false), so the printed pairwise accuracy was silently too low."""
    import torch

    import mmreward
    from mmreward.core.inputs import TextPair

    class Stub:
        input_types = (TextPair,)

        @classmethod
        def has_parts(cls):
            return False

        def score(self, items, batch_size=None, **kw):
            return torch.tensor([2.0, 1.0, float("nan"), 1.0, 3.0, 4.0])[:len(items)]

    rows = inputs / "three.jsonl"
    rows.write_text("".join(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n" for _ in range(3)))
    monkeypatch.setattr(mmreward, "load", lambda *a, **k: Stub())
    want = "pairwise accuracy: 0.5000 over 2 pairs (1 pair with a non-finite score left out)"
    assert main(["text", "score", "--model", BAD, "--data", str(rows), "--no-progress"]) == 0
    assert want in capsys.readouterr().out
    assert main(["score", "--model", BAD, "--data", str(rows)]) == 0
    assert want in capsys.readouterr().out


def test_serve_ray_refuses_settings_of_the_single_process_server(monkeypatch, capsys):
    """`serve --ray --log-level info` (or --bucket-batches / --shutdown-timeout-s): uvicorn's and the local
    batcher's settings, which Ray Serve never reads, were silently ignored."""
    pytest.importorskip("ray")
    import mmreward.serve.ray as sray

    started = []
    monkeypatch.setattr(sray, "serve_ray", lambda *a: started.append(a))
    for extra in (["--log-level", "info"], ["--bucket-batches", "8", "--shutdown-timeout-s", "5"]):
        assert main(["serve", "--model", BAD, "--ray", *extra]) == 2
        err = _one_line(capsys)
        assert f"{extra[0]}" in err and "under --ray, Ray Serve batches and serves HTTP itself" in err, err
    assert main(["serve", "--model", BAD, "--ray", "--max-batch", "8"]) == 0 and len(started) == 1  # Ray reads it
