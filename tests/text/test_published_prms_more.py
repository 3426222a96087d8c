"""More published PRM layouts read by ``mmreward.load``: token-classification PRMs as TRL's ``PRMTrainer``
trains and saves them (any ``*ForTokenClassification`` with 2 labels, under any folder name), scored as
TRL tokenizes them; and causal LMs named like a PRM that no layout reads (implicit / generative PRMs, a
renamed Math-Shepherd or RLHFlow checkpoint), refused with the reason instead of a generic error.

The token classifiers are tiny random models written by transformers' own ``save_pretrained`` (the
official key layout: ``model.*`` + ``score.*`` for Qwen2, ``transformer.*`` + ``classifier.*`` for
GPT-2); the reference is ``trl.PRMTrainer.tokenize_row`` (trl 0.16, re-derived below) + the model's own
forward, softmax(logits)[..., 1] where the labels are set.
"""
import json
import os
from itertools import chain

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mmreward  # noqa: E402
from mmreward.core.folders import CheckpointError  # noqa: E402
from mmreward.registry import detect  # noqa: E402
from mmreward.text.prm import published  # noqa: E402
from mmreward.text.prm.model import ProcessRewardModel  # noqa: E402
from test_prm_contract import SOLUTIONS, _qwen2_config, _qwen_tokenizer, _randomise, write_math_shepherd  # noqa: E402

TOL = 1e-5


def official_trl_rows(tok, problem, steps, step_separator="\n"):
    """trl/trainer/prm_trainer.py ``PRMTrainer.tokenize_row`` (no truncation, every label set): the
    prompt and each step tokenized without special tokens, the separator's ids after every step, BOS
    first when the tokenizer has one; the label sits on the last token of each step + separator."""
    prompt_ids = tok(problem, add_special_tokens=False)["input_ids"]
    completions_ids = [tok(c, add_special_tokens=False)["input_ids"] for c in steps]
    separator_ids = tok.encode(step_separator, add_special_tokens=False)
    completions_ids = [c + separator_ids for c in completions_ids]
    labels = [[-100] * (len(c) - 1) + [1] for c in completions_ids]
    completion_ids, labels = list(chain(*completions_ids)), list(chain(*labels))
    if tok.bos_token_id is not None:
        prompt_ids = [tok.bos_token_id] + prompt_ids
    return prompt_ids + completion_ids, [-100] * len(prompt_ids) + labels


def official_scores(model, folder, solutions, step_separator="\n"):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)  # as the trained run's folder is read
    out = []
    with torch.no_grad():
        for sol in solutions:
            ids, labels = official_trl_rows(tok, sol.problem, sol.steps, step_separator)
            probs = model(input_ids=torch.tensor([ids])).logits.softmax(-1)[0, :, 1]
            out.append(probs[torch.tensor(labels) != -100])
    return out


def write_qwen_token_prm(folder, num_labels=2):
    from transformers import Qwen2ForTokenClassification

    tok = _qwen_tokenizer()
    model = Qwen2ForTokenClassification(_qwen2_config(tok, num_labels=num_labels, pad_token_id=tok.pad_token_id))
    _randomise(model, 5)
    model.eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok


def write_gpt2_token_prm(folder):
    """The TRL docs' example backbone: GPT-2 (``transformer.*``, ``classifier.*``, a BOS token)."""
    from transformers import GPT2Config, GPT2ForTokenClassification

    tok = _qwen_tokenizer(bos="<|endoftext|>")
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128, num_labels=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = GPT2ForTokenClassification(cfg)
    _randomise(model, 6)
    model.eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok


@pytest.fixture(scope="module")
def qwen_token_prm(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tc") / "my-run-checkpoint-500")  # no PRM in the name: detected by its config
    model, tok = write_qwen_token_prm(folder)
    return folder, model, tok


def _assert_parity(ours, ref, min_std=0.01):
    for sol, a, b in zip(SOLUTIONS, ours, ref):
        assert a.shape == (len(sol.steps),) == b.shape
        assert float((a - b).abs().max()) <= TOL
    allsteps = torch.cat(ours)
    assert float(allsteps.std()) > min_std and 0.02 < float(allsteps.min()) and float(allsteps.max()) < 0.98


def test_trl_token_classification_prm_scores_equal_trl_tokenization_and_forward(qwen_token_prm):
    folder, model, tok = qwen_token_prm
    assert detect(folder)[0] == "token-classification-prm"
    prm = mmreward.load(folder)
    assert isinstance(prm, ProcessRewardModel) and prm.config.head == "value" and prm.config.step_tag == "\n"
    _assert_parity(prm.score_parts(SOLUTIONS, batch_size=3), official_scores(model, folder, SOLUTIONS))
    # the run's own separator, which the folder does not record, is a keyword of mmreward.load
    sep = mmreward.load(folder, step_separator="\n\n")
    _assert_parity(sep.score_parts(SOLUTIONS, batch_size=2), official_scores(model, folder, SOLUTIONS, "\n\n"))
    with pytest.raises(ValueError, match="step_separator"):
        mmreward.load(folder, step_separator="")


def test_gpt2_token_classifier_with_bos_and_its_own_prefix(tmp_path):
    folder = str(tmp_path / "gpt2-prm")
    model, tok = write_gpt2_token_prm(folder)
    assert tok.bos_token_id is not None  # TRL puts BOS first: so must we
    assert detect(folder)[0] == "token-classification-prm"
    prm = mmreward.load(folder)
    _assert_parity(prm.score_parts(SOLUTIONS, batch_size=4), official_scores(model, folder, SOLUTIONS), min_std=0.003)


def test_token_prm_saves_and_reloads_with_identical_scores(qwen_token_prm, tmp_path):
    folder, _, _ = qwen_token_prm
    prm = mmreward.load(folder)
    out = str(tmp_path / "ours")
    prm.save_pretrained(out)
    again = mmreward.load(out)
    for a, b in zip(prm.score_parts(SOLUTIONS), again.score_parts(SOLUTIONS)):
        torch.testing.assert_close(a, b)


def test_token_classifiers_that_are_not_two_label_prms_are_refused(tmp_path):
    folder = str(tmp_path / "three")
    write_qwen_token_prm(folder, num_labels=3)
    with pytest.raises(CheckpointError, match="Qwen2ForTokenClassification has 3 labels"):
        mmreward.load(folder)
    # a head tensor missing from the weights is named
    from safetensors.torch import load_file, save_file

    two = str(tmp_path / "two")
    write_qwen_token_prm(two)
    path = os.path.join(two, "model.safetensors")
    state = load_file(path)
    del state["score.bias"]
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing token classifier head.*\['score.bias'\]"):
        mmreward.load(two)


@pytest.mark.parametrize("name", ["EurusPRM-Stage2", "GenPRM-7B", "ThinkPRM-1.5B", "mistral-7b-prm"])
def test_causal_lms_named_like_a_prm_are_refused_with_the_reason(tmp_path, name):
    from transformers import Qwen2ForCausalLM

    tok = _qwen_tokenizer()
    folder = str(tmp_path / name)
    Qwen2ForCausalLM(_qwen2_config(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    assert detect(folder)[0] == "prm-named-causal-lm-refused"
    with pytest.raises(CheckpointError, match="named like a process reward model.*load_math_shepherd.*reference model"):
        mmreward.load(folder)


def test_named_published_prms_still_load_ahead_of_the_refusal(tmp_path):
    folder = write_math_shepherd(str(tmp_path / "math-shepherd-mistral-7b-prm"))
    cfg = json.load(open(os.path.join(folder, "config.json")))
    assert published.is_unread_prm(folder, cfg)  # its name says PRM, but the Math-Shepherd layout comes first
    assert detect(folder)[0] == "math-shepherd"


def test_encoder_token_classifier_with_cls_but_no_bos_is_refused(tmp_path):
    """TRL adds no special token for a BERT-like tokenizer; mmreward's step format would start with CLS,
    so every score would differ: refused, naming why."""
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "3", "+", "4", "=", "7", "."]))
    tok = BertTokenizerFast(vocab_file=str(vocab))
    folder = str(tmp_path / "bert-prm")
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                     num_labels=2)
    BertForTokenClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    assert detect(folder)[0] == "token-classification-prm"
    with pytest.raises(CheckpointError, match="CLS token but no BOS"):
        mmreward.load(folder)


def test_id2label_naming_the_right_step_label_is_followed(tmp_path, qwen_token_prm):
    """A token classifier saved with id2label {0: "correct", 1: "incorrect"} was read with label 1 as the right
    step: every score upside down. Named labels are followed; names that say nothing are refused."""
    src, model, _ = qwen_token_prm
    import shutil

    flipped = str(tmp_path / "flipped")
    shutil.copytree(src, flipped)
    cfg_path = os.path.join(flipped, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["id2label"], cfg["label2id"] = {"0": "correct", "1": "incorrect"}, {"correct": 0, "incorrect": 1}
    json.dump(cfg, open(cfg_path, "w"))
    if os.path.exists(os.path.join(flipped, "manifest.json")):
        os.remove(os.path.join(flipped, "manifest.json"))
    ref = official_scores(model, src, SOLUTIONS)  # P(label 1); here label 0 is the right step
    got = mmreward.load(flipped).score_parts(SOLUTIONS)
    for a, b in zip(got, ref):
        assert float((a - (1 - b)).abs().max()) <= TOL
    cfg["id2label"] = {"0": "cat", "1": "dog"}
    json.dump(cfg, open(cfg_path, "w"))
    with pytest.raises(CheckpointError, match="does not say which label is a right step"):
        mmreward.load(flipped)


def test_prm_score_cli_takes_a_token_prms_step_separator(qwen_token_prm, tmp_path, capsys):
    """`mmreward prm score` had no way to give a TRL classifier its run's separator (the folder does not record
    it); `--step-separator '\\n\\n'` is that blank line, and a PRM that records its own format refuses it."""
    from mmreward.cli import main

    folder, model, _ = qwen_token_prm
    rows = tmp_path / "sols.jsonl"
    rows.write_text("".join(json.dumps({"problem": s.problem, "steps": s.steps}) + "\n" for s in SOLUTIONS))
    assert main(["prm", "score", "--model", folder, "--data", str(rows), "--step-separator", "\\n\\n"]) == 0
    got = [json.loads(line)["step_scores"] for line in capsys.readouterr().out.splitlines() if '"step_scores"' in line]
    want = official_scores(model, folder, SOLUTIONS, "\n\n")
    assert len(got) == len(SOLUTIONS)
    for g, w in zip(got, want):
        assert g == pytest.approx(w.tolist(), abs=2e-6)
    default = official_scores(model, folder, SOLUTIONS)
    assert any(float((a - b).abs().max()) > 1e-3 for a, b in zip(want, default))  # the separator matters
    shepherd = str(tmp_path / "math-shepherd-prm")
    write_math_shepherd(shepherd)
    capsys.readouterr()  # (the writer's progress bars)
    assert main(["prm", "score", "--model", shepherd, "--data", str(rows), "--step-separator", "\\n"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--step-separator applies to token-classification PRMs" in err[0]


def test_a_separator_typed_with_escapes_is_the_characters_they_name():
    from mmreward.core.cli_config import unescape_separator
    from mmreward.serve.cli import build_parser

    assert unescape_separator("\\n\\n") == "\n\n" and unescape_separator("\n\n") == "\n\n"
    assert unescape_separator("Step\\t|é") == "Step\t|é" and unescape_separator("a\\\\n") == "a\\n"
    assert unescape_separator("x\\q") == "x\\q"  # not an escape: kept as typed
    args = build_parser().parse_args(["--model", "m", "--step-separator", "\\n\\n"])
    assert unescape_separator(args.step_separator) == "\n\n"
