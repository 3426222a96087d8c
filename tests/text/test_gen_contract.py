"""Every generative judge on the one model contract: save_pretrained → mmreward.load gives the same class
(from config.json alone) and identical scores; folders are atomic, safetensors-only, and bad folders or
inputs get one clear error."""
import json
import os
import re

import pytest
import torch

import mmreward
from mmreward.core.folders import CheckpointError
from mmreward.core.inputs import Comparison, TextPair
from mmreward.registry import model_class
from mmreward.text.generative.base import load_causal_lm, save_causal_lm
from mmreward.text.generative.critic_rm import CriticRM, CriticRMConfig
from mmreward.text.generative.genrm import GenRM, GenRMConfig
from mmreward.text.generative.gram import GRAM, GRAMConfig
from mmreward.text.generative.grm import GRMConfig, GRMJudge, meta_rm_batch
from mmreward.text.generative.heads import ScalarHeadLM
from mmreward.text.generative.reward_anything import RewardAnythingConfig, RewardAnythingJudge
from mmreward.text.generative.rm_r1 import RMR1Config, RMR1Judge
from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

WORDS = ("good bad fine poor q0 q1 q2 correct ? Yes No A B [[A]] [[B]] <answer> </answer> judge Score : 1 2 3 4 5 "
         "Question [A] [B] Which response is better Answer or . Critique the response { } \" scores model-1 , \\boxed")


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer([WORDS])


def lm(tok, seed=0):
    return tiny_llama(len(tok), hidden=32, layers=1, heads=2, seed=seed)


def build(kind, tok):
    m = lm(tok)
    if kind == "genrm":
        return GenRM(m, tok, GenRMConfig(question="correct ?", batch_size=3))
    if kind == "gram":
        return GRAM(m, tok, GRAMConfig(instruction="Which response is better ?", batch_size=3))
    if kind == "rm_r1":  # forced verdicts: P(A) read from the logits, a score that depends on every weight
        return RMR1Judge(m, tok, RMR1Config(system_prompt="judge", max_new_tokens=6, forced_verdict=True))
    if kind == "grm":  # a meta-RM sharing the judge's LM
        return GRMJudge(m, tok, GRMConfig(instructions="judge", num_samples=2, k_meta=1, max_new_tokens=6),
                        meta_rm=ScalarHeadLM(m))
    if kind == "grm_own_meta_lm":  # a meta-RM with a backbone of its own
        return GRMJudge(m, tok, GRMConfig(instructions="judge", num_samples=2, k_meta=1, max_new_tokens=6),
                        meta_rm=ScalarHeadLM(lm(tok, seed=5)))
    if kind == "reward_anything":
        return RewardAnythingJudge(m, tok, RewardAnythingConfig(max_new_tokens=8))
    if kind == "critic_rm":
        return CriticRM(ScalarHeadLM(m), tok, CriticRMConfig(request="Critique the response", max_new_tokens=5))
    raise ValueError(kind)


KINDS = ["genrm", "gram", "rm_r1", "grm", "grm_own_meta_lm", "reward_anything", "critic_rm"]


def inputs_for(judge):
    if judge.input_types[0] is Comparison:
        return [Comparison("q0", "good fine", "bad"), Comparison("q1", "poor", "good"), Comparison("q2", "fine", "bad poor")]
    return [TextPair("q0", "good fine"), TextPair("q1", "bad"), TextPair("q2", "fine poor good")]


def texts(judge):
    """The raw generations of the latest call, where the judge generates."""
    return [[r.text for r in row] for row in getattr(judge, "last_results", [])]


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_roundtrip_gives_identical_scores(kind, tok, tmp_path):
    judge = build(kind, tok)
    inputs = inputs_for(judge)
    before, generated = judge.score(inputs, batch_size=2), texts(judge)
    assert before.shape == (3,) and before.dtype == torch.float32 and torch.isfinite(before).all()
    folder = tmp_path / kind
    judge.save_pretrained(folder)

    body = json.loads((folder / "config.json").read_text())
    assert model_class(body["model_type"]) is type(judge)  # the class follows from config.json alone
    files = {os.path.relpath(os.path.join(r, f), folder) for r, _, fs in os.walk(folder) for f in fs}
    assert {"config.json", "manifest.json", "lm/model.safetensors", "lm/tokenizer.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]  # safetensors only

    loaded = mmreward.load(folder)
    assert type(loaded) is type(judge) and loaded.config == judge.config and not loaded.training
    after = loaded.score(inputs, batch_size=2)
    assert torch.equal(before, after), (before, after)
    assert texts(loaded) == generated  # the same LM and tokenizer: the same greedy generations
    if kind == "rm_r1":
        assert loaded.last_forced.all() and len(set(after.tolist())) == 3  # real logit reads, not a constant ½
    if kind.startswith("grm"):  # the meta-RM comes back too, sharing the judge's LM only if it did
        assert (loaded.meta_rm.backbone is loaded.model) == (kind == "grm")
        batch = meta_rm_batch(tok, [[{"role": "user", "content": "q0"}]] * 2, ["good", "bad poor"])
        with torch.no_grad():
            meta_before = judge.meta_rm(batch["input_ids"], batch["attention_mask"])
            assert torch.equal(loaded.meta_rm(batch["input_ids"], batch["attention_mask"]), meta_before)


def test_load_options_and_wrong_class(tok, tmp_path):
    judge = build("genrm", tok)
    judge.save_pretrained(tmp_path / "g")
    half = GenRM.from_pretrained(tmp_path / "g", dtype="bf16")
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert half.score([TextPair("q0", "good")]).dtype == torch.float32
    with pytest.raises(CheckpointError, match="holds a 'genrm' model, not 'gram'"):
        GRAM.from_pretrained(tmp_path / "g")
    with pytest.raises(CheckpointError, match="does not exist"):
        mmreward.load(tmp_path / "missing")


def test_save_with_given_weights(tok, tmp_path):
    """``save_pretrained(state_dict=...)`` (e.g. EMA weights) saves those, in the judge's own key names."""
    crm = build("critic_rm", tok)
    state = {k: v.clone() for k, v in crm.state_dict().items()}
    state["model.head.bias"].fill_(5.0)
    state["model.backbone.lm_head.weight"].zero_()
    crm.save_pretrained(tmp_path / "c", state_dict=state)
    loaded = mmreward.load(tmp_path / "c")
    assert loaded.model.head.bias.item() == 5.0 and not loaded.causal_lm.lm_head.weight.any()
    assert crm.model.head.bias.item() != 5.0  # the live judge is untouched


def test_gguf_loaded_models_save_as_plain_models(tok, tmp_path):
    """transformers refuses to save any model loaded from GGUF; one whose weights were de-quantized at
    load time is saved as the plain model it is, one with weights still packed stays refused."""
    from types import SimpleNamespace

    judge = build("genrm", tok)
    gguf = SimpleNamespace(quant_method="gguf")
    judge.model.hf_quantizer = SimpleNamespace(quantization_config=gguf, packed_modules={})
    judge.model.config.quantization_config = gguf
    judge.save_pretrained(tmp_path / "g")
    assert "quantization_config" not in json.loads((tmp_path / "g" / "lm" / "config.json").read_text())
    assert judge.model.hf_quantizer.quantization_config is gguf  # the live model is as it was
    assert torch.equal(mmreward.load(tmp_path / "g").score(inputs_for(judge)), judge.score(inputs_for(judge)))
    judge.model.hf_quantizer.packed_modules = {"model.layers.0.mlp.up_proj": object()}
    with pytest.raises(ValueError, match="not serializable"):
        judge.save_pretrained(tmp_path / "packed")
    assert not (tmp_path / "packed").exists()


def test_broken_folders_are_clear_errors(tok, tmp_path):
    crm = build("critic_rm", tok)
    crm.save_pretrained(tmp_path / "c")
    os.remove(tmp_path / "c" / "lm" / "model.safetensors")
    with pytest.raises(CheckpointError, match="lm/model.safetensors is missing"):
        mmreward.load(tmp_path / "c")
    crm.save_pretrained(tmp_path / "c")  # a fresh save replaces the broken folder
    with open(tmp_path / "c" / "head.safetensors", "ab") as f:
        f.write(b"x")
    with pytest.raises(CheckpointError, match="head.safetensors has"):
        mmreward.load(tmp_path / "c")
    # a tokenizer without a chat template cannot render a judge's prompt: refused when loading
    bare = word_tokenizer([WORDS])
    bare.chat_template = None
    save_causal_lm(lm(bare), bare, str(tmp_path / "bare"))
    with pytest.raises(CheckpointError, match="no chat template"):
        load_causal_lm(str(tmp_path / "bare"))


def test_a_failed_save_leaves_the_old_folder(tok, tmp_path, monkeypatch):
    old = build("genrm", tok)
    old.save_pretrained(tmp_path / "g")
    want = mmreward.load(tmp_path / "g").score(inputs_for(old))
    new = GenRM(lm(tok, seed=9), tok, GenRMConfig(question="correct ?"))

    def dies(*a, **k):
        raise KeyboardInterrupt  # killed after the LM is written, before the tokenizer

    monkeypatch.setattr(type(tok), "save_pretrained", dies)
    with pytest.raises(KeyboardInterrupt):
        new.save_pretrained(tmp_path / "g")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["g"]  # no half-written sibling left behind
    assert torch.equal(mmreward.load(tmp_path / "g").score(inputs_for(old)), want)


def test_score_inputs_are_checked(tok):
    gram = build("gram", tok)
    with pytest.raises(TypeError, match="input 0 is a TextPair; this model scores Comparison"):
        gram.score([TextPair("q0", "good")])
    with pytest.raises(TypeError, match="input 1: field 'prompt' must be a string"):
        gram.score([Comparison("q0", "good", "bad"), Comparison([{"role": "user", "content": "q0"}], "good", "bad")])
    with pytest.raises(ValueError, match="batch_size"):
        gram.score([Comparison("q0", "good", "bad")], batch_size=-1)
    # JSON rows (what the server and the CLI send) work as well
    p = gram.score([{"prompt": "q0", "chosen": "good", "rejected": "bad"}])
    assert p.shape == (1,) and 0 < float(p) < 1
    genrm = build("genrm", tok)
    turns = [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "good"}]
    # a conversation as the response: scored the same as the prompt / response split
    assert torch.allclose(genrm.score([TextPair(None, turns)]), genrm.score([TextPair("q0", "good")]))


@pytest.mark.parametrize("config, field, value, message", [
    (GenRMConfig, "num_rationales", 0, "GenRMConfig.num_rationales must be an integer >= 1, got 0"),
    (GenRMConfig, "lam", float("nan"), "GenRMConfig.lam must be a finite number >= 0, got nan"),
    (CriticRMConfig, "lam_start", 1.5, r"CriticRMConfig.lam_start must be a number in \[0, 1\], got 1.5"),
    (CriticRMConfig, "num_critiques", -1, "CriticRMConfig.num_critiques must be an integer >= 1"),
    (GRAMConfig, "label_smoothing", -0.1, r"GRAMConfig.label_smoothing must be a number in \[0, 1\]"),
    (GRMConfig, "k_meta", -1, "GRMConfig.k_meta must be an integer >= 0, got -1"),
    (GRMConfig, "temperature", -1.0, "GRMConfig.temperature must be a finite number >= 0"),
    (RewardAnythingConfig, "max_new_tokens", 0, "RewardAnythingConfig.max_new_tokens must be an integer >= 1"),
    (RMR1Config, "batch_size", True, "RMR1Config.batch_size must be an integer >= 1, got True"),
    (RMR1Config, "tail_chars", 2.5, "RMR1Config.tail_chars must be an integer >= 0, got 2.5"),
])
def test_judge_configs_refuse_out_of_range_values(config, field, value, message):
    with pytest.raises(ValueError, match=message):
        config(**{field: value})
    config()  # the defaults are valid


def test_gram_score_is_order_averaged(tok):
    gram = build("gram", tok)
    ab = gram.judge(["q0"], ["good"], ["bad"])
    ba = gram.judge(["q0"], ["bad"], ["good"])
    assert torch.allclose(gram.score([Comparison("q0", "good", "bad")]), 0.5 * (ab + 1 - ba), atol=1e-6)


def test_scalar_judges_plug_into_the_text_evaluators(tok):
    """A judge scoring TextPair inputs is a scorer for mmreward.text.eval (RewardBench / RM-Bench)."""
    from mmreward.text.eval.rewardbench import score_responses

    genrm = build("genrm", tok)
    prompts, responses = ["q0", "q1", "q0"], ["good", "bad", "good"]
    want = genrm.score([TextPair(p, r) for p, r in zip(prompts, responses)])
    assert torch.allclose(score_responses(genrm, prompts, responses, batch_size=2), want)


# ------------------------------------------------------------------------------ judge / judge_lists inputs
JUDGE_NAMES = {"rm_r1": "RMR1Judge.judge", "gram": "GRAM.judge", "grm": "GRMJudge.judge",
               "reward_anything": "RewardAnythingJudge.judge"}


@pytest.mark.parametrize("kind", list(JUDGE_NAMES))
def test_pairwise_judge_refuses_strings_missing_items_and_unequal_lists(kind, tok):
    judge, who = build(kind, tok), JUDGE_NAMES[kind]
    # three equally long strings were judged one character per row
    with pytest.raises(TypeError, match=rf"{who}: prompts must be a list of strings, got 'ab'"):
        judge.judge("ab", "cd", "ef")
    with pytest.raises(TypeError, match=rf"{who}: first must be a list of strings, got \{{"):
        judge.judge(["q0"], {"a": 1}, ["bad"])
    # a None or NaN was written into the prompt as "None" / "nan" and judged
    with pytest.raises(TypeError, match=rf"{who}: first\[1\] must be a string .* got None"):
        judge.judge(["q0", "q1"], ["good", None], ["bad", "poor"])
    with pytest.raises(TypeError, match=rf"{who}: second\[0\] must be a string .* got nan"):
        judge.judge(["q0"], ["good"], [float("nan")])
    with pytest.raises(ValueError, match=rf"{who}: prompts / first / second must be non-empty and equally long, "
                                         "got 2, 1, 1"):
        judge.judge(["q0", "q1"], ["good"], ["bad"])
    with pytest.raises(ValueError, match="non-empty"):
        judge.judge([], [], [])


@pytest.mark.parametrize("kind, who", [("grm", "GRMJudge"), ("reward_anything", "RewardAnythingJudge")])
def test_listwise_judge_refuses_malformed_response_lists(kind, who, tok):
    judge = build(kind, tok)
    with pytest.raises(TypeError, match=rf"{who}: responses must be a list of response lists"):
        judge.judge_lists(["q0"], "good")
    with pytest.raises(TypeError, match=rf"{who}: responses\[1\] must be a non-empty list of strings, got 'bad'"):
        judge.judge_lists(["q0", "q1"], [["good"], "bad"])
    with pytest.raises(TypeError, match=rf"{who}: responses\[0\] must be a non-empty list of strings, got \[\]"):
        judge.judge_lists(["q0"], [[]])
    with pytest.raises(TypeError, match=rf"{who}: responses\[0\]\[1\] must be a string .* got None"):
        judge.judge_lists(["q0"], [["good", None]])
    with pytest.raises(ValueError, match=rf"{who}: prompts / responses must be equally long, got 2, 1"):
        judge.judge_lists(["q0", "q1"], [["good"]])
    with pytest.raises(TypeError, match=rf"{who}: prompts\[0\] must be a string"):
        judge.judge_lists([None], [["good"]])


@pytest.mark.parametrize("kind", ["gram", "critic_rm"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_explicit_batch_size_is_checked_not_replaced_by_the_default(kind, bad, tok):
    judge = build(kind, tok)
    if kind == "gram":  # 0 used the config's default; -1 failed inside torch.cat
        call = lambda bs: judge.judge(["q0", "q1"], ["good", "poor"], ["bad", "fine"], batch_size=bs)  # noqa: E731
    else:
        call = lambda bs: judge.reward(["q0", "q1"], ["good", "poor"], ["judge", "judge"], batch_size=bs)  # noqa: E731
    assert call(1).shape == (2,)
    with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1, got {bad!r}"):
        call(bad)


@pytest.mark.parametrize("config, count", [(GRMConfig, "num_samples"), (RMR1Config, "num_samples"),
                                           (CriticRMConfig, "num_critiques")])
def test_temperature_zero_is_refused_naming_the_judges_own_field(config, count):
    # refused later, on building the judge, as "JudgeConfig.temperature" (a class the caller never made);
    # that runner config refuses 0 even for a single greedy sample, so the judge's config refuses it too
    for n in (2, 1):
        with pytest.raises(ValueError, match=rf"{config.__name__}\.temperature must be > 0 \(the {count} "
                                             r"judgements are sampled at it.*got 0\.0"):
            config(**{count: n, "temperature": 0.0})
    assert config(**{count: 2, "temperature": 0.3}).temperature == 0.3


# ------------------------------------------------------------------------------ resuming judge training
def _train_once(kind, tok, folder, **changed):
    """One optimizer step of ``kind``'s trainer into ``folder``, with ``changed`` judge settings."""
    from mmreward.core.trainer import TrainConfig

    cfg = TrainConfig(output_dir=str(folder), batch_size=2, max_steps=1, progress=False, log_every=0,
                      tensorboard=False, plot=False)
    m = lm(tok)
    if kind == "genrm":
        from mmreward.text.generative.genrm import train_genrm

        g = GenRM(m, tok, GenRMConfig(question=changed.get("question", "correct ?")))
        rows = [{"prompt": "q0", "response": "good", "correct": True},
                {"prompt": "q1", "response": "bad", "correct": False}]
        return train_genrm(g, rows, cfg)
    if kind == "gram":
        from mmreward.text.generative.gram import train_gram

        g = GRAM(m, tok, GRAMConfig(instruction="Which response is better ?"))
        rows = [{"prompt": "q0", "chosen": "good", "rejected": "bad"},
                {"prompt": "q1", "chosen": "fine", "rejected": "poor"}]
        return train_gram(g, rows, cfg, stage=changed.get("stage", 1))
    from mmreward.text.generative.critic_rm import train_critic_rm

    crm = CriticRM(ScalarHeadLM(m), tok, CriticRMConfig(request="Critique the response",
                                                         lam_end=changed.get("lam_end", 0.1)))
    rows = [{"prompt": p, "chosen": "good", "rejected": "bad", "critique_chosen": "good", "critique_rejected": "bad"}
            for p in ("q0", "q1")]
    return train_critic_rm(crm, rows, cfg)


@pytest.mark.parametrize("kind, changed, message", [
    ("genrm", {"question": "Yes or No ?"}, "judge.question: saved 'correct ?', now 'Yes or No ?'"),
    ("gram", {"stage": 2}, "judge.stage: saved 1, now 2"),  # a stage-1 snapshot went on as stage 2
    ("critic_rm", {"lam_end": 0.5}, "judge.lam_end: saved 0.1, now 0.5"),
])
def test_resuming_judge_training_with_other_settings_is_refused(kind, changed, message, tok, tmp_path):
    assert len(_train_once(kind, tok, tmp_path)) == 1
    assert len(_train_once(kind, tok, tmp_path)) == 1  # the same settings: the finished run, nothing to do
    with pytest.raises(ValueError, match="written by a run with other settings .*" + re.escape(message)):
        _train_once(kind, tok, tmp_path, **changed)


@pytest.mark.parametrize("kind", ["grm", "grm_own_meta_lm"])
def test_info_without_load_names_a_grm_folder_missing_its_meta_rm(kind, tok, tmp_path, capsys):
    """``mmreward info`` (no manifest, no --load) checks the meta-RM's head and own backbone as loading reads them."""
    import shutil

    from mmreward.cli import main

    folder = tmp_path / kind
    build(kind, tok).save_pretrained(folder)
    os.remove(folder / "manifest.json")
    assert main(["info", str(folder)]) == 0
    capsys.readouterr()
    if kind == "grm_own_meta_lm":
        shutil.rmtree(folder / "meta_rm")
        assert main(["info", str(folder)]) == 2
        assert "meta_rm/config.json" in capsys.readouterr().err
    os.remove(folder / "meta_rm_head.safetensors")
    assert main(["info", str(folder)]) == 2
    assert "meta_rm_head.safetensors" in capsys.readouterr().err
