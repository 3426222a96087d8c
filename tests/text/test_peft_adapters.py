"""PEFT LoRA adapter folders of reward models (TRL RewardTrainer + peft_config) load with ``mmreward.load``.

The reference is peft itself: the adapted classifier's ``logits[:, 0]`` (peft's forward, adapters unmerged) on
the token ids mmreward feeds, and peft's ``merge_and_unload`` saved as a plain classifier folder."""
import json
import os
import re
import shutil

import pytest
import torch

from helpers import one_line_error
from mmreward.core.folders import CheckpointError

from text_rm_fixtures import (BOS_TEMPLATE, classifier_logits, count_score_calls, qwen2_config, roberta_config,
                              stop_text_scoring_at, vocab_size, word_tokenizer)

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

ROWS = [{"prompt": "what is two plus three", "response": "five"},
        {"prompt": "what is two plus three", "response": "six a b c d e"},
        {"prompt": "say a", "response": "b"}]


def _randomize_adapter(model, seed=3):
    """peft starts lora_B at zero (no change to the base): give every trainable tensor random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def _adapter_folder(tmp_path, config, tokenizer, lora, *, base_cls="causal", seed=1, name="adapter"):
    """Save a base model, wrap its sequence classifier with ``lora`` (a peft LoraConfig), randomise the adapter
    and the head, save the adapter folder. Returns (adapter folder, base folder, the peft model)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModel

    base = tmp_path / f"base_{name}"
    torch.manual_seed(seed)
    config.initializer_range = 0.3
    cls = {"causal": AutoModelForCausalLM, "encoder": AutoModel}[base_cls]
    cls.from_config(config).save_pretrained(str(base))
    tokenizer.save_pretrained(str(base))
    seq = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1)
    seq.config.pad_token_id = tokenizer.pad_token_id
    model = peft.get_peft_model(seq, lora)
    _randomize_adapter(model)
    folder = tmp_path / name
    model.save_pretrained(str(folder))
    return str(folder), str(base), model.eval()


_peft_scores = classifier_logits  # the peft model's logits[:, 0] on the ids mmreward feeds


def _merged_folder(model, tokenizer, folder):
    merged = model.merge_and_unload()
    merged.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


def _qwen_lora(**kw):
    args = dict(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    args.update(kw)
    return peft.LoraConfig(**args)


def test_qwen2_adapter_scores_as_peft_and_as_its_merge(tmp_path):
    import mmreward

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    folder, base, model = _adapter_folder(
        tmp_path, qwen2_config(), tok,
        _qwen_lora(use_rslora=True, rank_pattern={"v_proj": 2}, alpha_pattern={"down_proj": 3}, bias="lora_only"))
    rm = mmreward.load(folder)
    assert type(rm).__name__ == "RewardModel"
    got = rm.score(ROWS)
    assert torch.allclose(got, _peft_scores(model, rm, ROWS), atol=1e-5), got
    merged = mmreward.load(_merged_folder(model, tok, tmp_path / "merged")).score(ROWS)
    assert torch.allclose(got, merged, atol=1e-5)
    assert got.std() > 0.05  # the inputs score differently: the comparison means something


def test_adapter_with_lora_bias(tmp_path):
    import mmreward

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    folder, _, model = _adapter_folder(tmp_path, qwen2_config(), tok,
                                       _qwen_lora(target_modules=["q_proj", "v_proj"], lora_bias=True))
    rm = mmreward.load(folder)
    assert torch.allclose(rm.score(ROWS), _peft_scores(model, rm, ROWS), atol=1e-5)


def test_adapter_on_embeddings_with_added_tokens(tmp_path):
    import mmreward

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    base = tmp_path / "base"
    torch.manual_seed(0)
    cfg = qwen2_config()
    cfg.initializer_range = 0.3
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(str(base))
    tok.save_pretrained(str(base))
    tok.add_tokens(["seventeen", "eighteen"])  # the run added words: peft saves the resized embedding matrix
    seq = transformers.AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1)
    seq.resize_token_embeddings(len(tok))
    model = peft.get_peft_model(seq, _qwen_lora(target_modules=["embed_tokens", "q_proj"]))
    _randomize_adapter(model)
    folder = tmp_path / "adapter"
    model.save_pretrained(str(folder), save_embedding_layers=True)
    tok.save_pretrained(str(folder))  # TRL saves the tokenizer beside the adapter
    rows = ROWS + [{"prompt": "say seventeen", "response": "eighteen"}]
    rm = mmreward.load(str(folder))
    got = rm.score(rows)
    assert torch.allclose(got, _peft_scores(model.eval(), rm, rows), atol=1e-5)
    assert max(rm.encode(rows[-1:])[0].ids) >= vocab_size()  # the added tokens are read, not [UNK]


def test_gpt2_conv1d_adapter(tmp_path):
    import mmreward

    cfg = transformers.GPT2Config(vocab_size=vocab_size(), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                  pad_token_id=0)
    tok = word_tokenizer(bos=True)
    folder, _, model = _adapter_folder(tmp_path, cfg, tok, peft.LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=16, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True))
    rm = mmreward.load(folder)
    assert torch.allclose(rm.score(ROWS), _peft_scores(model, rm, ROWS), atol=1e-5)


def test_encoder_adapter_with_its_classification_head(tmp_path):
    import mmreward

    tok = word_tokenizer(pair=True, types=False)
    folder, _, model = _adapter_folder(tmp_path, roberta_config(), tok, peft.LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"], bias="all"),
        base_cls="encoder")
    names = set(__import__("safetensors.torch").torch.load_file(os.path.join(folder, "adapter_model.safetensors")))
    assert any("classifier.dense" in n for n in names) and any("classifier.out_proj" in n for n in names)
    rm = mmreward.load(folder)
    assert torch.allclose(rm.score(ROWS), _peft_scores(model, rm, ROWS), atol=1e-5)


def test_keys_without_peft_prefix_and_a_bin_file(tmp_path):
    """transformers' own adapter integration saves keys without ``base_model.model.``; older runs a .bin file."""
    import mmreward
    from safetensors.torch import load_file

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    folder, _, model = _adapter_folder(tmp_path, qwen2_config(), tok, _qwen_lora())
    want = mmreward.load(folder).score(ROWS)
    path = os.path.join(folder, "adapter_model.safetensors")
    state = load_file(path)
    os.remove(path)
    torch.save({k.removeprefix("base_model.model."): v for k, v in state.items()},
               os.path.join(folder, "adapter_model.bin"))
    assert torch.allclose(mmreward.load(folder).score(ROWS), want, atol=1e-6)


def test_moved_base_model_is_named_and_base_model_option_reads_it(tmp_path):
    import mmreward

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    folder, base, _ = _adapter_folder(tmp_path, qwen2_config(), tok, _qwen_lora())
    want = mmreward.load(folder).score(ROWS)
    moved = str(tmp_path / "elsewhere")
    shutil.move(base, moved)
    with pytest.raises(CheckpointError, match=r"base model .*base_model_name_or_path.*base_model="):
        mmreward.load(folder)
    assert torch.allclose(mmreward.load(folder, base_model=moved).score(ROWS), want)


def _edit_config(folder, **changes):
    path = os.path.join(folder, "adapter_config.json")
    with open(path) as f:
        body = json.load(f)
    body.update(changes)
    with open(path, "w") as f:
        json.dump(body, f)


@pytest.mark.parametrize("changes, message", [
    (dict(use_dora=True), r"no DoRA magnitude .*sets use_dora"),
    (dict(use_qalora=True), r"use_qalora .*no plain W \+ s·BA"),
    (dict(task_type="SEQ_2_SEQ_LM"), r"SEQ_2_SEQ_LM.*merge_and_unload"),
    (dict(task_type="CAUSAL_LM"), r"causal language model"),
    # SFTTrainer + LoraConfig() without task_type: the class peft wrapped, recorded in auto_mapping, tells
    (dict(task_type=None, auto_mapping={"base_model_class": "Qwen2ForCausalLM", "parent_library": "x"}),
     r"no task_type, auto_mapping 'Qwen2ForCausalLM': the adapter of a causal language model"),
    (dict(peft_type="IA3"), r"'IA3' adapter; mmreward reads LoRA"),
    (dict(r=8), r"rank 4 but adapter_config.json says 8"),
    (dict(init_lora_weights="pissa_niter_4"), r"changed the base weights"),
    (dict(init_lora_weights="lora_ga"), r"changed the base weights"),
    (dict(init_lora_weights="astra"), r"changed the base weights"),
    (dict(some_future_option={"x": 1}), r"some_future_option.*does not know"),
    (dict(lora_alpha=float("nan")), r"lora_alpha must be a positive number"),
    (dict(base_model_name_or_path=None), r"names no base model"),
    (dict(rank_pattern={"v_proj(": 2}), r"rank_pattern / alpha_pattern key 'v_proj\(' is not a regular expression"),
])
def test_adapters_mmreward_cannot_fold_are_refused(tmp_path, changes, message, capsys):
    import mmreward
    from mmreward.cli import main

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    folder, _, _ = _adapter_folder(tmp_path, qwen2_config(), tok, _qwen_lora())
    _edit_config(folder, **changes)
    with pytest.raises(CheckpointError, match=message):
        mmreward.load(folder)
    if not {"r", "base_model_name_or_path", "use_dora"} & set(changes):  # info reads the config alone
        capsys.readouterr()
        assert main(["info", folder]) == 2
        assert re.search(message, one_line_error(capsys))


def test_adapter_of_another_base_or_without_head_is_refused(tmp_path):
    import mmreward

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    folder, _, _ = _adapter_folder(tmp_path, qwen2_config(), tok, _qwen_lora())
    other = tmp_path / "wider"
    wider = qwen2_config()
    wider.hidden_size = 48
    transformers.AutoModelForCausalLM.from_config(wider).save_pretrained(str(other))
    tok.save_pretrained(str(other))
    with pytest.raises(CheckpointError, match=r"another base model"):
        mmreward.load(folder, base_model=str(other))
    # an adapter saved without its head (modules_to_save emptied) over a causal LM: no trained head anywhere
    from safetensors.torch import load_file, save_file

    path = os.path.join(folder, "adapter_model.safetensors")
    save_file({k: v for k, v in load_file(path).items() if not k.endswith("score.weight")}, path)
    with pytest.raises(CheckpointError, match=r"reward head score.weight is neither in the adapter"):
        mmreward.load(folder)


def test_folder_with_model_and_adapter_is_refused(tmp_path):
    import mmreward

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    folder, base, _ = _adapter_folder(tmp_path, qwen2_config(), tok, _qwen_lora())
    shutil.copy(os.path.join(base, "config.json"), folder)
    with pytest.raises(CheckpointError, match=r"both a model .*and a PEFT adapter"):
        mmreward.load(folder)


def test_cli_info_and_score_read_an_adapter_folder(tmp_path, capsys):
    from mmreward.cli import main

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    folder, base, _ = _adapter_folder(tmp_path, qwen2_config(), tok, _qwen_lora())
    assert main(["info", folder]) == 0
    out = capsys.readouterr().out
    assert "peft-lora-adapter" in out and "LoRA SEQ_CLS, r 4, α 8 (scale α/r)" in out and f"{base!r}: a local folder" in out
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["score", "--model", folder, "--data", str(data), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    import mmreward

    want = mmreward.load(folder).score(ROWS)
    assert torch.allclose(torch.tensor([x["score"] for x in lines]), want, atol=1e-5)
    shutil.move(base, str(tmp_path / "moved"))  # the base model moved: one line naming it and what to do
    capsys.readouterr()
    assert main(["score", "--model", folder, "--data", str(data)]) == 2
    line = one_line_error(capsys)
    assert "base_model_name_or_path in adapter_config.json" in line and base in line


def _prm_adapter(tmp_path, lora, seed=3):
    """A TOKEN_CLS adapter of a Qwen2 causal LM (saved as the base), as a PRMTrainer run leaves it: (folder, the
    adapted peft model, the base folder)."""
    from test_prm_contract import _qwen2_config, _qwen_tokenizer, _randomise

    tok = _qwen_tokenizer()
    base = tmp_path / "base"
    causal = transformers.Qwen2ForCausalLM(_qwen2_config(tok, pad_token_id=tok.pad_token_id))
    _randomise(causal, 5)
    causal.save_pretrained(str(base))
    tok.save_pretrained(str(base))
    tc = transformers.AutoModelForTokenClassification.from_pretrained(str(base), num_labels=2)
    model = peft.get_peft_model(tc, lora)
    _randomize_adapter(model, seed=seed)
    folder = tmp_path / "prm-adapter"
    model.save_pretrained(str(folder))
    return str(folder), model.eval(), str(base)


def test_token_classification_prm_adapter_scores_as_trl_prm_trainer_reads_it(tmp_path):
    """TRL PRMTrainer + peft_config: a TOKEN_CLS adapter of a causal LM; each step's score is the adapted token
    classifier's softmax(·)[1] at the last token of step + separator, on PRMTrainer.tokenize_row's ids."""
    import mmreward
    from mmreward.text.prm.model import ProcessRewardModel
    from test_prm_contract import SOLUTIONS
    from test_published_prms_more import official_scores

    folder, model, base = _prm_adapter(tmp_path, peft.LoraConfig(task_type="TOKEN_CLS", r=4, lora_alpha=8,
                                                                 target_modules=["q_proj", "v_proj", "up_proj"]), 7)
    prm = mmreward.load(str(folder))
    assert isinstance(prm, ProcessRewardModel)
    for sep in ("\n", "\n\n"):
        prm = mmreward.load(str(folder), step_separator=sep) if sep != "\n" else prm
        ours = prm.score_parts(SOLUTIONS, batch_size=2)
        ref = official_scores(model, str(base), SOLUTIONS, sep)
        for a, b in zip(ours, ref):
            assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-5
    assert float(torch.cat(ours).std()) > 0.01
    rm_folder, _, _ = _adapter_folder(tmp_path, qwen2_config(), word_tokenizer(bos=True), _qwen_lora())
    with pytest.raises(ValueError, match=r"step_separator= is an option of token-classification PRM adapters"):
        mmreward.load(rm_folder, step_separator="\n")


def test_trainer_output_folder_with_checkpoints_names_them(tmp_path):
    """TRL's output_dir of a run that saved only checkpoints: which folder to load, not "no config.json"."""
    import mmreward
    from mmreward.registry import LoadError

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    run = tmp_path / "trl-run"
    run.mkdir()
    for step in (500, 1000, 50):
        folder, _, _ = _adapter_folder(tmp_path, qwen2_config(), tok, _qwen_lora(), name=f"ad{step}")
        shutil.move(folder, str(run / f"checkpoint-{step}"))
    (run / "runs").mkdir()  # TensorBoard logs beside them
    with pytest.raises(LoadError, match=r"checkpoints checkpoint-50, checkpoint-500, checkpoint-1000 but no model of "
                                        r"its own: .*newest, .*checkpoint-1000$"):
        mmreward.load(str(run))
    assert mmreward.load(str(run / "checkpoint-1000")).score(ROWS).shape == (3,)


def test_prm_score_takes_the_step_separator_of_a_token_prm_adapter(tmp_path, capsys):
    """`prm score --step-separator` was refused for an adapter folder ("is a peft-lora-adapter PRM")."""
    from mmreward.cli import main
    from test_prm_contract import SOLUTIONS

    _prm_adapter(tmp_path, peft.LoraConfig(task_type="TOKEN_CLS", r=2, target_modules=["q_proj"]))
    data = tmp_path / "steps.jsonl"
    data.write_text("".join(json.dumps({"problem": s.problem, "steps": list(s.steps)}) + "\n" for s in SOLUTIONS))
    capsys.readouterr()
    assert main(["prm", "score", "--model", str(tmp_path / "prm-adapter"), "--data", str(data),
                 "--step-separator", "\n\n", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip()


def test_a_judge_lm_trained_as_a_causal_lm_adapter_is_folded_for_the_judges(tmp_path, capsys):
    """SFTTrainer + peft_config leaves a CAUSAL_LM adapter: `text judge --model ADAPTER` judges with the base + the
    folded adapter (peft's own forward as the reference); mmreward.load says where such an adapter goes."""
    import mmreward
    from mmreward.text.generative.cli import load_model, main
    from mmreward.text.generative.tiny import tiny_llama
    from mmreward.text.generative.tiny import word_tokenizer as judge_tokenizer

    tok = judge_tokenizer(["good bad q Yes No A B [[A]] [[B]] Score : 5"])
    base = tmp_path / "lm"
    tiny_llama(len(tok), hidden=32, layers=1, heads=2).save_pretrained(str(base))
    tok.save_pretrained(str(base))
    lm = transformers.AutoModelForCausalLM.from_pretrained(str(base))
    model = peft.get_peft_model(lm, peft.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8,
                                                    target_modules=["q_proj", "v_proj", "up_proj"]))
    _randomize_adapter(model)
    folder = tmp_path / "judge-adapter"
    model.save_pretrained(str(folder))
    folded, got_tok = load_model("genrm", str(folder), None, "cpu")
    ids = torch.tensor([got_tok("q good Yes")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(folded(input_ids=ids).logits, model.eval()(input_ids=ids).logits,
                                   atol=1e-5, rtol=0)
    rows = tmp_path / "pairs.jsonl"
    rows.write_text(json.dumps({"prompt": "q", "chosen": "good", "rejected": "bad"}) + "\n")
    assert main(["gram", "--model", str(folder), "--data", str(rows), "--batch-size", "2"]) == 0
    assert '"accuracy"' in capsys.readouterr().out
    with pytest.raises(CheckpointError, match=r"task_type 'CAUSAL_LM'.*mmreward text judge METHOD --model"):
        mmreward.load(str(folder))


def test_resume_refuses_rows_scored_over_another_base_model(tmp_path, capsys, monkeypatch):
    """--resume compared the adapter folder's files only: a base model changed in place between a stopped run and
    its resume mixed the scores of two models into one output."""
    from mmreward import score_cli
    from mmreward.cli import main

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    folder, base, _ = _adapter_folder(tmp_path, qwen2_config(), tok, _qwen_lora())
    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 2)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 2))
    out, partial = tmp_path / "scores.jsonl", tmp_path / "scores.jsonl.partial"
    cmd = ["score", "--model", folder, "--data", str(data), "--out", str(out), "--resume", "--no-progress",
           "--batch-size", "1"]  # chunks of 2 rows
    from mmreward.text import RewardModel

    real = stop_text_scoring_at(monkeypatch, count_score_calls(monkeypatch), 1)  # a Ctrl-C in the second chunk
    assert main(cmd) == 130 and partial.exists() and not out.exists()
    monkeypatch.setattr(RewardModel, "_score", real)
    weights = os.path.join(base, "model.safetensors")
    original = open(weights, "rb").read()
    open(weights, "wb").write(original[:-1] + bytes([original[-1] ^ 1]))  # the base retrained in place
    capsys.readouterr()
    assert main(cmd) == 2
    assert "the base model of the LoRA adapter changed" in capsys.readouterr().err and partial.exists()
    open(weights, "wb").write(original)  # the same base again: the run continues
    assert main(cmd) == 0 and out.exists() and not partial.exists()


def test_resume_identity_leaves_out_a_trainer_folders_checkpoints_and_optimizer_states(tmp_path):
    """The identity hashed every file below the model folder: a TRL output folder's checkpoint-N/ (optimizer states,
    gigabytes for a large model) was read whole before any row was scored."""
    from mmreward import score_cli

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    folder, _, _ = _adapter_folder(tmp_path, qwen2_config(), tok, _qwen_lora())
    before = score_cli._model_identity(folder)["files"]
    os.makedirs(os.path.join(folder, "checkpoint-500"))
    for name in ("checkpoint-500/optimizer.pt", "checkpoint-500/adapter_model.safetensors", "optimizer.pt",
                 "training_args.bin", "trainer_state.json", "rng_state_0.pth"):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"x" * 64)
    assert score_cli._model_identity(folder)["files"] == before


def test_a_token_prm_adapter_takes_the_run_options_of_published_prm_folders(tmp_path):
    """mmreward.load(published PRM folder, aggregation="mean") works; the same options of a TOKEN_CLS adapter folder
    were refused ("unexpected keyword")."""
    import mmreward
    from test_prm_contract import SOLUTIONS

    _prm_adapter(tmp_path, peft.LoraConfig(task_type="TOKEN_CLS", r=2, target_modules=["q_proj"]))
    folder = str(tmp_path / "prm-adapter")
    steps = mmreward.load(folder).score_parts(SOLUTIONS)
    prm = mmreward.load(folder, aggregation="mean", truncate=True)
    assert (prm.config.aggregation, prm.config.truncate) == ("mean", True)
    want = torch.stack([s.mean() for s in steps])
    assert torch.allclose(prm.score(SOLUTIONS), want, atol=1e-6)
    with pytest.raises(ValueError, match="aggregation"):
        mmreward.load(folder, aggregation="median")
    rm_folder, _, _ = _adapter_folder(tmp_path, qwen2_config(), word_tokenizer(bos=True), _qwen_lora())
    with pytest.raises(ValueError, match=r"aggregation= is an option of token-classification PRM adapters"):
        mmreward.load(rm_folder, aggregation="mean")
