"""A TRL user's runs scored by mmreward: ``trl.RewardTrainer(..., peft_config=LoraConfig(...))`` run for real (2
steps, tiny models built from configs, offline, ``report_to="none"``), its output folders loaded with
``mmreward.load`` and compared with the trained model itself: its ``logits[:, 0]`` (a PRM's softmax(·)[1] at each
step's last token) on the token ids mmreward feeds, which are checked to be those TRL trained on.

The runs use ``bf16=False``: with TRL's default ``bf16=True`` accelerate wraps the trained model's forward in a
bfloat16 autocast, so its own outputs would differ from any float32 forward of the same saved weights. trl 1.x has
no ``PRMTrainer``; the PRM run is its training step written out (``tokenize_row`` rows, token cross-entropy)."""
import json
import os
import shutil

import pytest
import torch
from helpers import one_line_error
from text_rm_fixtures import (
    BOS_TEMPLATE,
    WORDS,
    classifier_logits,
    llama_config,
    roberta_config,
    vocab_size,
    word_tokenizer,
)

from mmreward.core.folders import CheckpointError

trl = pytest.importorskip("trl", minversion="1.0")  # RewardTrainer(model=<path>), RewardConfig(chat_template_path=)
peft = pytest.importorskip("peft", minversion="0.17")  # trainable_token_indices, DoRA on Conv1D
datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

CONV = [{"prompt": [{"role": "user", "content": "what is two plus three"}],
         "chosen": [{"role": "assistant", "content": "five"}],
         "rejected": [{"role": "assistant", "content": "six a b"}]}] * 4
ROWS = [{"prompt": "what is two plus three", "response": "five"},
        {"prompt": "say a", "response": "b c d e"},
        {"prompt": "what is the answer", "response": "seven"}]


def _train(root, name, config, tok, lora, *, data=CONV, base_dtype=None, encoder=False, steps=2, **args):
    """Save a base model, run TRL's RewardTrainer on it with ``lora`` and save the final adapter as TRL's
    docs do (``trainer.save_model``). Returns (final folder, run folder, base folder, trainer)."""
    from transformers import AutoModel, AutoModelForCausalLM

    folder = root / name
    base = folder / "base"
    torch.manual_seed(0)
    config.initializer_range = 0.3
    model = (AutoModel if encoder else AutoModelForCausalLM).from_config(config)
    if base_dtype is not None:
        model = model.to(base_dtype)
    model.save_pretrained(str(base))
    tok.save_pretrained(str(base))
    config = trl.RewardConfig(output_dir=str(folder / "run"), max_steps=steps, per_device_train_batch_size=2,
                              learning_rate=0.05, report_to="none", use_cpu=True, bf16=False, seed=0,
                              save_strategy="steps", save_steps=1, logging_strategy="no", disable_tqdm=True, **args)
    trainer = trl.RewardTrainer(model=str(base), args=config, train_dataset=datasets.Dataset.from_list(data),
                                processing_class=tok, peft_config=lora)
    trainer.train()
    trainer.save_model(str(folder / "final"))
    trainer.model.eval()
    return str(folder / "final"), str(folder / "run"), str(base), trainer


_model_scores = classifier_logits  # the trained model's logits[:, 0] on the ids mmreward feeds


def _config(folder):
    with open(os.path.join(folder, "adapter_config.json")) as f:
        return json.load(f)


def _edit_config(folder, **changes):
    body = _config(folder)
    body.update(changes)
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(body, f)


@pytest.fixture(scope="module")
def docs_run(tmp_path_factory):
    """TRL's RewardTrainer docs: LoraConfig(modules_to_save=["score"]) with no task_type, here on all-linear
    layers, a conversational dataset, center_rewards_coefficient (a loss term: no tensor of its own)."""
    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", modules_to_save=["score"])
    return _train(tmp_path_factory.mktemp("trl"), "docs", llama_config(), tok, lora, center_rewards_coefficient=0.1)


def test_lora_config_without_task_type_scores_as_the_trained_model(docs_run):
    import mmreward
    from mmreward.registry import LoadError

    final, run, _, trainer = docs_run
    assert _config(final)["task_type"] is None  # peft records the wrapped class in auto_mapping only
    rm = mmreward.load(final)
    assert type(rm).__name__ == "RewardModel"
    got = rm.score(ROWS)
    assert torch.allclose(got, _model_scores(trainer.model, rm, ROWS), atol=1e-5), got
    assert got.std() > 0.05
    # mmreward feeds the conversation as TRL tokenized it for training
    conv = {"prompt": CONV[0]["prompt"], "response": CONV[0]["chosen"][0]["content"]}
    assert rm.encode([conv])[0].ids == trainer.train_dataset[0]["chosen_ids"]
    # the run's output_dir: checkpoint-N folders (optimizer.pt, trainer_state.json beside the adapter)
    last = os.path.join(run, "checkpoint-2")
    assert os.path.isfile(os.path.join(last, "optimizer.pt"))
    assert torch.allclose(mmreward.load(last).score(ROWS), got, atol=1e-6)
    with pytest.raises(LoadError, match=r"checkpoints checkpoint-1, checkpoint-2 .*checkpoint-2$"):
        mmreward.load(run)


def test_adapter_without_its_head_says_which_modules_to_save(tmp_path, capsys):
    """LoraConfig(target_modules=[...]) with neither task_type nor modules_to_save: the reward head TRL trained is
    not in the adapter (and was random in the base): refused, naming the option that saves it."""
    import mmreward
    from mmreward.cli import main

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    final, _, _, _ = _train(tmp_path, "nohead", llama_config(), tok,
                            peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), steps=1)
    with pytest.raises(CheckpointError, match=r"no trained head .*modules_to_save=\['score'\]"):
        mmreward.load(final)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    capsys.readouterr()
    assert main(["score", "--model", final, "--data", str(rows)]) == 2
    assert "task_type='SEQ_CLS'" in one_line_error(capsys)


def test_bf16_hub_base_trained_in_float32_scores_as_the_run(tmp_path, monkeypatch, capsys):
    """TRL loads a base in float32 unless model_init_kwargs says otherwise; hub bases are saved in bfloat16. The
    adapter names the base by its hub id, found in the HF cache (offline)."""
    import huggingface_hub

    import mmreward
    from mmreward.cli import main

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    final, _, base, trainer = _train(tmp_path, "bf16", llama_config(), tok, peft.LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules="all-linear"), base_dtype=torch.bfloat16)
    assert next(trainer.model.parameters()).dtype == torch.float32
    # the base as TRL saw it when given "tiny-org/tiny-llama": a snapshot of the HF cache
    cache = tmp_path / "hf" / "hub"
    repo = cache / "models--tiny-org--tiny-llama"
    shutil.move(base, str(repo / "snapshots" / ("0" * 40)))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    _edit_config(final, base_model_name_or_path="tiny-org/tiny-llama")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    rm = mmreward.load(final)
    assert rm.head.weight.dtype == torch.float32
    assert torch.allclose(rm.score(ROWS), _model_scores(trainer.model, rm, ROWS), atol=1e-5)
    assert mmreward.load(final, dtype="bf16").head.weight.dtype == torch.bfloat16  # asked for: as asked
    capsys.readouterr()
    assert main(["info", final]) == 0
    out = capsys.readouterr().out
    assert "'tiny-org/tiny-llama': a hub id, in the local HF cache" in out
    assert "targets ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']" in out


def test_chat_template_cloned_by_trl_trains_new_token_rows(tmp_path):
    """RewardConfig(chat_template_path=<tokenizer>) clones its template and special tokens: TRL resizes the
    embeddings and makes the new rows trainable tokens (trainable_token_indices), which mmreward puts in."""
    import mmreward

    source = word_tokenizer(bos=True, words=WORDS + ["<|turn|>"])
    source.chat_template = "{{ bos_token }}{% for m in messages %}<|turn|> {{ m['role'] }} {{ m['content'] }} </s> {% endfor %}"
    source.add_special_tokens({"additional_special_tokens": ["<|turn|>"]})
    source.save_pretrained(str(tmp_path / "template-source"))
    tok = word_tokenizer(bos=True)  # the base's: no chat template, no <|turn|>
    final, _, _, trainer = _train(tmp_path, "clone", llama_config(), tok, peft.LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        chat_template_path=str(tmp_path / "template-source"))
    assert "embed_tokens" in (_config(final)["trainable_token_indices"] or {})
    rm = mmreward.load(final)
    conv = {"prompt": CONV[0]["prompt"], "response": CONV[0]["chosen"][0]["content"]}
    ids = rm.encode([conv])[0].ids
    assert ids == trainer.train_dataset[0]["chosen_ids"] and max(ids) >= vocab_size()  # <|turn|>: a new row
    rows = ROWS + [conv]
    assert torch.allclose(rm.score(rows), _model_scores(trainer.model, rm, rows), atol=1e-5)


@pytest.mark.parametrize("base", ["gpt2-no-pad", "roberta", "llama-rslora", "llama-dora", "llama-token-rows"])
def test_trl_runs_on_other_bases(tmp_path, base):
    import mmreward

    plain = [{"prompt": "what is two plus three", "chosen": " five", "rejected": " six a b"}] * 4
    if base == "gpt2-no-pad":  # TRL sets pad = eos; DoRA on Conv1D layers; plain-text rows (TRL appends the EOS)
        tok = word_tokenizer(bos=True)
        tok.pad_token = None
        config = transformers.GPT2Config(vocab_size=vocab_size(), n_embd=32, n_layer=2, n_head=4, n_positions=64)
        lora, kw = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=16, target_modules="all-linear",
                                   use_dora=True, use_rslora=True), {}
        data = plain
    elif base == "roberta":  # classifier.dense + classifier.out_proj saved in full, bias="all"; tokenized rows
        tok = word_tokenizer(pair=True, types=False)
        config, kw = roberta_config(), {"encoder": True}
        lora = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"], bias="all")
        data = [{"chosen_ids": [2, 9, 10, 14, 15, 16, 3, 17, 3], "rejected_ids": [2, 9, 10, 14, 15, 16, 3, 18, 3]}] * 4
    else:  # TRL's ModelConfig(use_dora=True) / --use_dora
        tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
        config, kw, data = llama_config(), {}, CONV
        lora = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                               use_rslora=True, rank_pattern={"v_proj": 2}, alpha_pattern={"down_proj": 3},
                               use_dora=base == "llama-dora",
                               # rows of existing tokens trained in full (a list: the input embedding's)
                               trainable_token_indices=[14, 15, 17] if base == "llama-token-rows" else None)
    final, _, _, trainer = _train(tmp_path, base, config, tok, lora, data=data, **kw)
    rm = mmreward.load(final)
    got = rm.score(ROWS)
    assert torch.allclose(got, _model_scores(trainer.model, rm, ROWS), atol=1e-5), base
    assert got.std() > 0.01


def test_pad_token_added_by_the_user_before_the_run(tmp_path):
    """The Llama recipe: the tokenizer has no pad token, the user adds "<pad>" (a new id past the base's
    vocabulary), resizes the classifier and hands the model object to RewardTrainer; peft saves the grown matrix."""
    import mmreward

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    tok.pad_token = None
    config = llama_config()
    config.pad_token_id, config.initializer_range = None, 0.3
    torch.manual_seed(0)
    base = str(tmp_path / "base")
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(base)
    tok.save_pretrained(base)
    tok.add_special_tokens({"pad_token": "<pad>"})
    model = transformers.AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    args = trl.RewardConfig(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=2,
                            learning_rate=0.05, report_to="none", use_cpu=True, bf16=False, seed=0, save_strategy="no",
                            logging_strategy="no", disable_tqdm=True)
    trainer = trl.RewardTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(CONV),
                                processing_class=tok, peft_config=peft.LoraConfig(
                                    task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules="all-linear"))
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    assert tok.pad_token_id >= vocab_size()
    rm = mmreward.load(str(tmp_path / "final"))
    assert torch.allclose(rm.score(ROWS), _model_scores(trainer.model.eval(), rm, ROWS), atol=1e-5)


def test_deberta_pooler_left_out_of_the_adapter_is_named(tmp_path):
    """DeBERTa's classifier has a pooler the base lacks: the run made it at random and, outside modules_to_save,
    peft never saved it. Refused naming the module; with modules_to_save=[..., "pooler"] the run loads."""
    from text_rm_fixtures import deberta_v2_config

    import mmreward

    tok = word_tokenizer(pair=True, types=False)
    data = [{"chosen_ids": [2, 9, 10, 14, 15, 16, 3, 17, 3], "rejected_ids": [2, 9, 10, 14, 15, 16, 3, 18, 3]}] * 4
    lora = {"task_type": "SEQ_CLS", "r": 4, "lora_alpha": 8, "target_modules": ["query_proj", "value_proj"]}
    final, _, _, _ = _train(tmp_path, "deberta", deberta_v2_config(), tok, peft.LoraConfig(**lora), data=data,
                            encoder=True, steps=1)
    with pytest.raises(CheckpointError, match=r"pooler \(pooler.dense.bias, pooler.dense.weight\) .* initialised them "
                                              r"at random.* modules_to_save listing \['pooler'\]"):
        mmreward.load(final)
    final, _, _, trainer = _train(tmp_path, "deberta-pooler", deberta_v2_config(), tok, peft.LoraConfig(
        **lora, modules_to_save=["classifier", "pooler"]), data=data, encoder=True)
    rm = mmreward.load(final)
    assert torch.allclose(rm.score(ROWS), _model_scores(trainer.model, rm, ROWS), atol=1e-5)


def test_prm_adapter_without_task_type_over_a_bf16_base(tmp_path):
    """A token-classification PRM trained as TRL's PRMTrainer trains it (its rows, its loss), the adapter made by
    LoraConfig(modules_to_save=["score"]) without task_type, over a bfloat16 base loaded in float32."""
    from mmreward.text.prm.model import ProcessRewardModel
    from test_prm_contract import SOLUTIONS, _qwen2_config, _qwen_tokenizer, _randomise
    from test_published_prms_more import official_scores, official_trl_rows

    import mmreward

    tok = _qwen_tokenizer()
    base = str(tmp_path / "base")
    causal = transformers.Qwen2ForCausalLM(_qwen2_config(tok, pad_token_id=tok.pad_token_id))
    _randomise(causal, 5)
    causal.to(torch.bfloat16).save_pretrained(base)
    tok.save_pretrained(base)
    classifier = transformers.AutoModelForTokenClassification.from_pretrained(base, num_labels=2, dtype=torch.float32)
    model = peft.get_peft_model(classifier, peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                            modules_to_save=["score"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    torch.manual_seed(0)
    for sol in SOLUTIONS[:2]:
        ids, labels = official_trl_rows(tok, sol.problem, sol.steps)
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([[min(x, 0) if x != -100 else x
                                                                          for x in labels]])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = str(tmp_path / "prm-run")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    assert _config(folder)["task_type"] is None
    prm = mmreward.load(folder)
    assert isinstance(prm, ProcessRewardModel)
    ours = prm.score_parts(SOLUTIONS, batch_size=2)
    for a, b in zip(ours, official_scores(model.eval(), base, SOLUTIONS)):
        assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-5


def test_a_run_on_plain_text_rows_scores_prompt_response_and_eos_as_trl_trained(tmp_path):
    """TRL renders rows that are no conversations as prompt + chosen + eos (its tokenizer has no chat template, so
    no run of it saw anything else); mmreward read such a folder with its own "joined" layout (a blank line between,
    no eos): a score at another token than the run trained. TRL's README tag tells the folder apart."""
    import mmreward

    tok = word_tokenizer(bos=True)  # no chat template
    plain = [{"prompt": "what is two plus three ", "chosen": "five", "rejected": "six a b"}] * 4
    lora = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    final, _, _, trainer = _train(tmp_path, "plain", llama_config(), tok, lora, data=plain)
    rm = mmreward.load(final)
    assert rm.config.input_format == "concat_eos"
    rows = [{"prompt": "what is two plus three ", "response": "five"}, {"prompt": "say a ", "response": "b c d e"}]
    trl_ids = [tok(r["prompt"] + r["response"] + tok.eos_token)["input_ids"] for r in rows]  # RewardTrainer's rows
    assert [e.ids for e in rm.encode(rows)] == trl_ids
    torch.testing.assert_close(rm.score(rows), _model_scores(trainer.model, rm, rows), atol=1e-5, rtol=0)
    # the same weights without TRL's tag (a folder from elsewhere) keep the blank-line layout
    readme = os.path.join(final, "README.md")
    with open(readme) as f:
        text = f.read()
    with open(readme, "w") as f:
        f.write(text.replace("reward-trainer", "something-else"))
    assert mmreward.load(final).config.input_format == "joined"


def test_a_full_fine_tune_on_plain_text_reads_its_layout_from_the_run_card(tmp_path):
    """A run without peft: trainer.save_model() writes the model and TRL's card into output_dir; its checkpoint-N
    folders get no card of their own and are read by their run's."""
    import mmreward

    tok = word_tokenizer(bos=True)
    plain = [{"prompt": "what is two plus three ", "chosen": "five", "rejected": "six a b"}] * 4
    _, run, _, trainer = _train(tmp_path, "full", llama_config(), tok, None, data=plain)
    trainer.save_model()  # into output_dir, beside the card
    rows = [{"prompt": "what is two plus three ", "response": "five"}]
    for folder in (run, os.path.join(run, "checkpoint-2")):
        rm = mmreward.load(folder)
        assert rm.config.input_format == "concat_eos", folder
    torch.testing.assert_close(mmreward.load(run).score(rows), _model_scores(trainer.model, rm, rows),
                               atol=1e-5, rtol=0)
