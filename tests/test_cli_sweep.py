"""User errors found by a sweep of every `mmreward` subcommand: each is one line on stderr, exit 2, found
before any model loads or any work runs, and nothing is written — above all, never over an input."""
from __future__ import annotations

import json
import os
import warnings

import pytest

from mmreward.cli import main
from mmreward.core.cli_config import check_output_file, check_output_folder, run_cli

from helpers import one_line_error as _one_line

BAD = "/nonexistent/mmreward-model"


@pytest.fixture
def files(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "q", "chosen": "good", "rejected": "bad", "subset": "chat"}) + "\n")
    steps = tmp_path / "steps.jsonl"
    steps.write_text(json.dumps({"prompt": "1+1", "completions": ["1+1=2"], "labels": [True]}) + "\n")
    (tmp_path / "link.jsonl").symlink_to(steps)
    return tmp_path


def test_check_output_file(files):
    steps = str(files / "steps.jsonl")
    check_output_file(None)
    check_output_file(str(files / "new" / "deeper" / "out.jsonl"), inputs=[("--data", steps)])  # created on write
    with pytest.raises(ValueError, match="--out .* is a folder"):
        check_output_file(str(files))
    with pytest.raises(ValueError, match="a-file' is a file, not a folder"):
        check_output_file(str(files / "a-file" / "x" / "out.json"))
    for same in (steps, str(files / "link.jsonl"), str(files / "." / "steps.jsonl")):
        with pytest.raises(ValueError, match="is the --data file .*would replace it"):
            check_output_file(same, inputs=[("--data", steps)])
    with pytest.raises(ValueError, match="--plot .* is the --out file"):  # neither exists yet
        check_output_file(str(files / "r.json"), "--plot", [("input", [steps]), ("--out", str(files / "r.json"))])
    check_output_folder(str(files / "new" / "run"))
    with pytest.raises(ValueError, match="--out .*a-file' is a file, not a folder: name a folder"):
        check_output_folder(str(files / "a-file"))
    with pytest.raises(ValueError, match="--reward-out .*a-file' is a file, not a folder"):
        check_output_folder(str(files / "a-file" / "run"), "--reward-out")


@pytest.mark.parametrize("argv,data,message", [
    # the results were written over the input rows (prm score / text eval / text judge)
    (["prm", "score", "--model", BAD, "--data", "{steps}", "--out", "{steps}"], "steps", "is the --data file"),
    (["prm", "score", "--model", BAD, "--data", "{steps}", "--out", "{tmp}/link.jsonl"], "steps", "is the --data file"),
    (["text", "eval", "--model", BAD, "--benchmark", "rewardbench", "--data", "{rows}", "--out", "{rows}"], "rows",
     "is the --data file"),
    (["text", "judge", "genrm", "--model", BAD, "--data", "{rows}", "--out", "{rows}"], "rows", "is the --data file"),
    # a file where a folder is expected: the error came after the scoring, as a bare errno
    (["prm", "score", "--model", BAD, "--data", "{steps}", "--out", "{tmp}/a-file/s.jsonl"], "steps",
     "a-file' is a file, not a folder"),
    (["prm", "score", "--model", BAD, "--data", "{steps}", "--out", "{tmp}"], "steps", "is a folder"),
    (["text", "eval", "--model", BAD, "--benchmark", "rewardbench", "--data", "{rows}", "--out", "{tmp}/a-file/e.json"],
     "rows", "a-file' is a file, not a folder"),
    (["prm", "search", "--model", BAD, "--out", "{tmp}/a-file/t.jsonl"], None, "a-file' is a file, not a folder"),
    # conflicting flags: one input was silently ignored / an empty export file was written
    (["prm", "score", "--model", BAD, "--data", "{steps}", "--problem", "3 +2", "--step", "3+2=5"], "steps",
     "--data and --problem / --step both name what to score"),
    (["prm", "search", "--model", BAD, "--method", "best-of-n", "--out", "{tmp}/t.jsonl"], None,
     "--method best-of-n runs no MCTS"),
    (["prm", "train", "--data", "{steps}", "--synthetic", "10", "--out", "{tmp}/run"], "steps",
     "both name the training data"),
    (["text", "eval", "--model", BAD, "--benchmark", "rewardbench", "--data", "{rows}", "--domains", "chat"], "rows",
     "--domains applies to --benchmark rm-bench only"),
    (["text", "eval", "--model", BAD, "--benchmark", "rewardbench", "--data", "{rows}", "--merge-safety"], "rows",
     "--merge-safety applies to --benchmark rm-bench only"),
    (["text", "judge", "grm", "--model", BAD, "--data", "{rows}", "--meta-rm", "{tmp}"], "rows",
     "is used only with --k-meta K > 0"),  # the meta-RM was loaded, then never used
    (["text", "judge", "grm", "--model", BAD, "--data", "{rows}", "--k-meta", "1"], "rows", "--k-meta 1 needs --meta-rm"),
    (["text", "judge", "grm", "--model", BAD, "--data", "{rows}", "--k-meta", "3", "--num-samples", "2", "--meta-rm",
      "{tmp}"], "rows", "k_meta (3) keeps more judgements than num_samples (2)"),
    (["text", "judge", "grm", "--model", BAD, "--data", "{rows}", "--k-meta", "1", "--meta-rm", "{tmp}"], "rows",
     "not a meta-RM folder"),
])
def test_outputs_and_conflicts_are_refused_before_the_model_loads(argv, data, message, files, capsys):
    paths = {"steps": str(files / "steps.jsonl"), "rows": str(files / "rows.jsonl"), "tmp": str(files)}
    before = {p: open(p).read() for p in paths.values() if os.path.isfile(p)}
    listing = sorted(os.listdir(files))
    argv = [a.format(**paths) for a in argv]
    assert main(argv) == 2, argv
    err = _one_line(capsys)
    assert message in err and err.startswith("mmreward"), err  # --model BAD is never reached
    assert {p: open(p).read() for p in before} == before and sorted(os.listdir(files)) == listing


def test_robotics_outputs_over_inputs_and_files_as_folders(tmp_path, capsys):
    """`robotics score --out EP.npz` replaced the scored episode with its rewards; `--plot` = `--out`
    lost the rewards to the plot; a file as a run's --out failed only after the data was read (with
    the training's warnings printed before it), and --resume --overwrite silently deleted the run."""
    ep = tmp_path / "ep.npz"
    ep.write_bytes(b"episode")
    (tmp_path / "a-file").write_text("x")
    cases = [
        (["score", "--model", BAD, str(ep), "--out", str(ep)], "--out", "is the input file"),
        (["score", "--model", BAD, str(ep), "--plot", str(ep)], "--plot", "is the input file"),
        (["score", "--model", BAD, str(ep), "--out", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.json")],
         "--plot", "is the --out file"),
        (["train-codec", "--data", BAD, "--out", str(tmp_path / "a-file")], "--out", "is a file, not a folder"),
        (["train-progress", "--data", BAD, "--out", str(tmp_path / "a-file" / "run")], "--out", "is a file, not a"),
        (["train-video", "--data", BAD, "--codec", BAD, "--out", str(tmp_path / "v"), "--reward-out",
          str(tmp_path / "a-file")], "--reward-out", "is a file, not a folder"),
        (["collect", "--tasks", "door-open-v3", "--out", str(tmp_path / "a-file")], "--out", "is a file, not a"),
        (["train-rl", "--out", str(tmp_path / "a-file")], "--out", "is a file, not a folder"),
        (["train-codec", "--data", BAD, "--out", str(tmp_path / "run"), "--resume", "--overwrite"], "--overwrite",
         "not allowed with argument --resume"),
        (["eval-rl", "--run", BAD, "--json", str(tmp_path / "a-file" / "e.json")], "--json", "is a file, not a folder"),
        (["score", "--model", BAD, str(ep), "--tasks", "door-open-v3"], "--tasks", "no input is one"),  # ignored
        (["score", "--model", BAD, str(ep), "--policies", "expert"], "--policies", "every input would be scored"),
    ]
    for argv, flag, message in cases:
        assert main(["robotics", *argv]) == 2, argv
        err = _one_line(capsys)
        assert flag in err and message in err, (argv, err)
    assert ep.read_bytes() == b"episode" and sorted(os.listdir(tmp_path)) == ["a-file", "ep.npz"]


def test_warnings_are_one_line_while_a_command_runs(monkeypatch):
    """A warning printed two lines (the warning, then the source line that raised it: a traceback-like
    excerpt of code) before a command's one-line error or result."""
    seen = {}

    def command(argv):
        seen["text"] = warnings.formatwarning("batch_size 32 is more than\n the 12 frames", UserWarning,
                                              "/x/robotics/cli.py", 240, "model = train_vqgan(...)")
        return 0

    original = warnings.formatwarning
    monkeypatch.delenv("MMREWARD_DEBUG", raising=False)
    assert run_cli("mmreward robotics train-codec", command, []) == 0
    assert seen["text"] == "mmreward robotics train-codec: warning: batch_size 32 is more than the 12 frames\n"
    assert warnings.formatwarning is original  # restored: Python code outside the CLI keeps the usual form
    def failing(argv):
        raise ValueError("bad input")

    assert run_cli("p", failing, []) == 2 and warnings.formatwarning is original  # restored after an error too
    monkeypatch.setenv("MMREWARD_DEBUG", "1")  # the full form (file, line, source) for debugging
    assert run_cli("p", command, []) == 0 and "cli.py:240" in seen["text"]


def test_env_command_errors_name_the_command(capsys):
    assert main(["env", "--bogus"]) == 2
    err = _one_line(capsys)
    assert err.startswith("mmreward env: error: unrecognized arguments: --bogus"), err


def test_text_training_and_judge_inputs_are_checked_before_the_model_loads(tmp_path, capsys):
    """Each of these loaded the model first (transformers' progress bars on stderr), then failed: an empty
    --data as "train_genrm: no rows", an empty --eval-data not at all (no evaluation, silently), a CUDA
    request as an *unexpected* error (exit 1) from .to(), a file as --out after loading; an --out equal
    to --model wrote the run into the model's folder."""
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "model").mkdir()
    verify = tmp_path / "verify.jsonl"
    verify.write_text(json.dumps({"prompt": "q", "response": "a", "correct": True}) + "\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    empty, out = str(tmp_path / "empty.jsonl"), str(tmp_path / "run")
    cases = [
        (["train-genrm", "--model", BAD, "--data", empty, "--out", out], f"--data {empty}: no rows"),
        (["train-genrm", "--model", BAD, "--data", str(verify), "--eval-data", empty, "--out", out],
         f"--eval-data {empty}: no rows"),
        (["train-genrm", "--model", BAD, "--data", str(pairs), "--out", out],
         f"--data {pairs}: row 0: needs 'prompt', 'response' and 'correct'"),
        (["train-genrm", "--model", BAD, "--data", str(verify), "--out", out, "--device", "cuda:7"], "cuda:7"),
        (["train-genrm", "--model", BAD, "--data", str(verify), "--out", str(tmp_path / "a-file")],
         "a-file' is a file, not a folder"),
        (["train-genrm", "--model", str(tmp_path / "model"), "--data", str(verify), "--out", str(tmp_path / "model")],
         "is the --model folder"),
        (["train-gram", "--model", BAD, "--data", str(pairs), "--out", str(tmp_path / "a-file" / "r")],
         "a-file' is a file, not a folder"),
        (["train-critic-rm", "--model", BAD, "--data", empty, "--out", out], f"--data {empty}: no rows"),
        (["train-meta-rm", "--model", BAD, "--data", str(pairs), "--eval-data", empty, "--out", out],
         f"--eval-data {empty}: no rows"),
        (["train-meta-rm", "--model", BAD, "--data", str(pairs), "--out", out, "--device", "cuda:7"], "cuda:7"),
        (["judge", "genrm", "--model", BAD, "--data", str(pairs), "--device", "cuda:7"], "cuda:7"),
    ]
    for argv, message in cases:
        assert main(["text", *argv]) == 2, argv
        err = _one_line(capsys)
        assert message in err and "unexpected" not in err, (argv, err)
    assert sorted(os.listdir(tmp_path)) == ["a-file", "empty.jsonl", "model", "pairs.jsonl", "verify.jsonl"]
    assert os.listdir(tmp_path / "model") == []


def test_a_command_refused_part_way_leaves_no_new_empty_folder(tmp_path, monkeypatch, capsys):
    """`robotics collect --camera nope` (or --max-steps 0 / --action-repeat 0) made the --out folder, then
    failed once the simulator started: an empty episode folder was left behind."""
    import mmreward.robotics.cli as rcli

    def collect_fails_after_mkdir(args):
        os.makedirs(os.path.join(args.out, "sub"))
        raise ValueError("unknown camera 'nope'")

    monkeypatch.setattr(rcli, "_collect", collect_fails_after_mkdir)
    out = tmp_path / "new" / "episodes"
    assert main(["robotics", "collect", "--tasks", "door-open-v3", "--out", str(out)]) == 2
    assert "unknown camera 'nope'" in _one_line(capsys) and os.listdir(tmp_path) == []
    (tmp_path / "kept").mkdir()  # a folder that was there before stays, empty or not
    assert main(["robotics", "collect", "--tasks", "door-open-v3", "--out", str(tmp_path / "kept")]) == 2
    assert os.listdir(tmp_path) == ["kept"] and os.listdir(tmp_path / "kept") == ["sub"]


def test_removing_new_folders_on_error_keeps_what_was_written(tmp_path):
    from mmreward.core.cli_config import removing_new_folders_on_error

    a, b = tmp_path / "x" / "a", tmp_path / "x" / "b"
    with pytest.raises(KeyError):
        with removing_new_folders_on_error(str(a), str(b), None):
            a.mkdir(parents=True)
            b.mkdir()
            (b / "written.txt").write_text("kept")
            raise KeyError("late")
    assert not a.exists() and (b / "written.txt").read_text() == "kept"
    with removing_new_folders_on_error(str(tmp_path / "ok")):  # success: nothing removed
        (tmp_path / "ok").mkdir()
    assert (tmp_path / "ok").is_dir()


def test_merge_refuses_a_member_named_twice(tmp_path, capsys):
    """`text merge A A` averaged a model with itself: silently a copy of it (or `A A B` a hidden 2:1:1)."""
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    for members in ([str(run), str(run) + "/"], [str(run), str(run / "model")], [str(run / "model"), str(run)]):
        assert main(["text", "merge", *members, "--out", str(tmp_path / "merged")]) == 2, members
        assert "is named twice" in _one_line(capsys)
    assert sorted(os.listdir(tmp_path)) == ["run"]
    (tmp_path / "a-file").write_text("x")  # refused before the members are loaded and averaged
    assert main(["text", "merge", BAD, BAD + "2", "--out", str(tmp_path / "a-file" / "m")]) == 2
    assert "a-file' is a file, not a folder" in _one_line(capsys)


def test_a_bad_number_list_names_what_was_expected(capsys):
    """`--betas a,b` answered "invalid _numbers value" (the name of a private parsing function)."""
    from mmreward.core.cli_config import CLIParser, add_config_options
    from mmreward.robotics.codec.vqgan import VQGANTrainConfig

    parser = CLIParser(prog="p")
    add_config_options(parser, VQGANTrainConfig)
    with pytest.raises(SystemExit):
        parser.parse_args(["--betas", "a,b"])
    err = _one_line(capsys)
    assert "argument --betas: expected comma-separated numbers, got 'a,b'" in err and "_numbers" not in err, err
    assert parser.parse_args(["--betas", "0.5, 0.9"]).betas == (0.5, 0.9)


def test_command_line_text_that_is_not_utf8_is_named(capsys):
    """`prm score --step $'5\\xfe'`: Python keeps the byte as a lone surrogate, and the tokenizer answered
    "TextEncodeInput must be Union[TextInputSequence, ...]"."""
    from mmreward.core.cli_config import utf8_text

    assert utf8_text("ünïcødé 😀", "--problem") == "ünïcødé 😀" and utf8_text(None, "--x") is None
    assert main(["prm", "score", "--model", BAD, "--problem", "3 +2", "--step", "3+2=5", "--step", "5\udcfe"]) == 2
    err = _one_line(capsys)
    assert "--step 2 is not UTF-8 text (byte b'\\xfe' at character 2)" in err, err


def test_an_output_in_a_read_only_folder_is_refused_before_the_work(tmp_path, monkeypatch, capsys):
    """A read-only --out folder failed with PermissionError only when the results were written (as root
    every folder is writable, so os.access stands in for the read-only folder here)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == str(ro) else real_access(p, mode))
    with pytest.raises(ValueError, match="the folder .*ro' is not writable"):
        check_output_file(str(ro / "x.json"))
    with pytest.raises(ValueError, match="the folder .*ro' is not writable"):
        check_output_folder(str(ro / "new" / "run"))
    check_output_file(str(tmp_path / "x.json"))
    assert main(["prm", "score", "--model", BAD, "--problem", "3", "--step", "3", "--out", str(ro / "s.jsonl")]) == 2
    assert "is not writable (permission denied)" in _one_line(capsys)


def test_vision_outputs_over_their_data_or_a_file_are_refused_first(files, capsys):
    """``vision vl-rewardbench --out`` equal to ``--data`` would replace the benchmark with its results;
    ``vision colour-data --out`` naming a file failed with a bare NotADirectoryError."""
    pytest.importorskip("PIL")
    data = files / "rows.jsonl"
    assert main(["vision", "vl-rewardbench", "--model", str(files / "nope"), "--data", str(data), "--out", str(data)]) == 2
    assert "is the --data file" in _one_line(capsys)
    assert main(["vision", "colour-data", "--out", str(files / "a-file"), "--n", "2"]) == 2
    assert "is a file, not a folder" in _one_line(capsys)


def test_generative_configs_refuse_verdicts_and_counts_that_mean_nothing():
    from mmreward.text.generative.genrm import GenRMConfig
    from mmreward.text.generative.grm import GRMConfig

    with pytest.raises(ValueError, match="yes and no must be different words"):
        GenRMConfig(yes="Yes", no="Yes")
    with pytest.raises(ValueError, match="GenRMConfig.yes must be a non-empty verdict word"):
        GenRMConfig(yes=" ")
    with pytest.raises(ValueError, match=r"k_meta \(3\) keeps more judgements than num_samples \(2\)"):
        GRMConfig(num_samples=2, k_meta=3)
