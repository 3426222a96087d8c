"""`mmreward text judge | train-*` take `--split` (and `--eval-split`, `--solutions-split`) as
`mmreward text train | score` do: a source holding several splits (a .json object of lists, a saved
DatasetDict) is read from the chosen one, and refused, naming its splits, without a choice."""
import json

import pytest

from mmreward.cli import main as mmreward_main
from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

QUIET = ["--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0"]
PAIR = {"prompt": "q", "chosen": "good", "rejected": "bad"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("split_gen")
    tok = word_tokenizer(["good bad q Yes No A B [[A]] [[B]] correct?"])
    tiny_llama(len(tok), hidden=16, layers=1, heads=2, seed=0).save_pretrained(d / "lm")
    tok.save_pretrained(d / "lm")
    # no list under data / rows / examples / train: the split must be chosen
    (d / "pairs.json").write_text(json.dumps({"dev": [PAIR], "test": [PAIR, {**PAIR, "prompt": "q q"}]}))
    verify = [{"prompt": "q", "response": "good", "correct": True}, {"prompt": "q", "response": "bad", "correct": False}]
    (d / "verify.json").write_text(json.dumps({"dev": verify[:1], "test": verify}))
    return d


def _fails(argv, capsys, *expected):
    capsys.readouterr()
    assert mmreward_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err


def test_judge_reads_the_chosen_split_and_refuses_without_one(files, capsys):
    base = ["text", "judge", "genrm", "--model", str(files / "lm"), "--data", str(files / "pairs.json"), "--no-swap"]
    for split, n in (("test", 2), ("dev", 1)):
        capsys.readouterr()
        assert mmreward_main([*base, "--split", split]) == 0
        assert json.loads(capsys.readouterr().out)["n"] == n
    _fails(base, capsys, "['dev', 'test']", "--split")
    _fails([*base, "--split", "nope"], capsys, "no split 'nope'")


def test_train_commands_read_the_chosen_splits(files, tmp_path, capsys):
    pairs = str(files / "pairs.json")
    base = ["text", "train-gram", "--model", str(files / "lm"), "--stage", "2", "--max-steps", "1",
            "--batch-size", "2", *QUIET]
    assert mmreward_main([*base, "--data", pairs, "--split", "test", "--eval-data", pairs, "--eval-split", "dev",
                          "--out", str(tmp_path / "gram")]) == 0
    assert (tmp_path / "gram" / "model").is_dir()
    _fails([*base, "--data", pairs, "--out", str(tmp_path / "g2")], capsys, "['dev', 'test']", "--split")
    _fails([*base, "--data", pairs, "--split", "test", "--eval-data", pairs, "--out", str(tmp_path / "g3")],
           capsys, "['dev', 'test']")
    # a split of a source that is not given would be silently ignored
    _fails([*base, "--data", pairs, "--split", "test", "--eval-split", "dev", "--out", str(tmp_path / "g4")],
           capsys, "--eval-split dev", "--eval-data")
    verify = str(files / "verify.json")
    genrm = ["text", "train-genrm", "--model", str(files / "lm"), "--question", "correct?", "--max-steps", "1",
             "--batch-size", "2", *QUIET]
    assert mmreward_main([*genrm, "--data", verify, "--split", "test", "--solutions", verify,
                          "--solutions-split", "dev", "--out", str(tmp_path / "genrm")]) == 0
    _fails([*genrm, "--data", verify, "--split", "test", "--solutions-split", "dev", "--out", str(tmp_path / "g5")],
           capsys, "--solutions-split dev", "--solutions")
    for command in ("train-critic-rm", "train-meta-rm"):
        _fails(["text", command, "--model", str(files / "lm"), "--data", pairs, "--out", str(tmp_path / command)],
               capsys, "['dev', 'test']", "--split")


def test_judge_methods_take_the_hyphen_spelling_of_the_train_commands(files, tmp_path):
    """`train-critic-rm` / `train-meta-rm` are spelled with hyphens: `judge critic-rm`, `rm-r1` and
    `reward-anything` are the methods critic_rm, rm_r1, reward_anything."""
    out = tmp_path / "r.json"
    assert mmreward_main(["text", "judge", "rm-r1", "--model", str(files / "lm"), "--data", str(files / "pairs.json"),
                          "--split", "dev", "--max-new-tokens", "2", "--no-swap", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["method"] == "rm_r1"


def test_model_paths_a_run_folder_and_missing_folders(files, tmp_path, capsys):
    """A train-* run folder stands for its model/ (as in every other command; it failed as a causal LM
    without config.json); a local path that is not there was read as a malformed hub id ("Repo id must use
    alphanumeric chars ...") and a file as a folder: now one line naming --model."""
    run = tmp_path / "run"
    assert mmreward_main(["text", "train-gram", "--model", str(files / "lm"), "--data", str(files / "pairs.json"),
                          "--split", "test", "--max-steps", "1", "--batch-size", "2", "--out", str(run), *QUIET]) == 0
    capsys.readouterr()
    judge = ["text", "judge", "gram", "--data", str(files / "pairs.json"), "--split", "dev", "--no-swap"]
    assert mmreward_main([*judge, "--model", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 1
    _fails([*judge, "--model", str(tmp_path / "missing")], capsys, f"--model {tmp_path / 'missing'}: no such model folder")
    _fails([*judge, "--model", "./missing"], capsys, "--model ./missing: no such model folder")
    _fails([*judge, "--model", str(files / "pairs.json")], capsys, "is a file, not a model folder")
    _fails(["text", "train-critic-rm", "--model", "./missing", "--data", str(files / "pairs.json"), "--split", "dev",
            "--out", str(tmp_path / "c")], capsys, "--model ./missing: no such model folder")


def test_judge_takes_dtype(files, tmp_path, capsys):
    """`text judge --dtype bf16` (a 7B judge on one GPU) casts the language model; a bad name is one line."""
    base = ["text", "judge", "genrm", "--model", str(files / "lm"), "--data", str(files / "pairs.json"),
            "--split", "test", "--no-swap", "--out", str(tmp_path / "j.json")]
    assert mmreward_main([*base, "--dtype", "bf16"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2
    assert len(json.loads((tmp_path / "j.json").read_text())["p_chosen_first"]) == 2
    _fails([*base, "--dtype", "int4"], capsys, "int4")
