"""Reward-model training with LoRA adapters and gradient checkpointing (RewardTrainConfig.lora_* /
gradient_checkpointing; `mmreward text train --lora-rank ... --gradient-checkpointing`)."""
import copy
import json

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from test_text_train import keyword_pairs, quiet, tiny_rm  # noqa: E402
from transformers import LlamaConfig  # noqa: E402

import mmreward  # noqa: E402
from mmreward.cli import main as mmreward_main  # noqa: E402
from mmreward.core.lora import LoraLinear, has_lora  # noqa: E402
from mmreward.text import RewardModel, evaluate_pairs, train_reward_model  # noqa: E402
from mmreward.text.train import reward_trainer  # noqa: E402


@pytest.mark.learning
def test_lora_with_gradient_checkpointing_learns_and_changes_only_low_rank_updates(tmp_path):
    rm = tiny_rm(pooling="first")
    held_out = keyword_pairs(200, seed=1)
    before = evaluate_pairs(rm, held_out)["accuracy"]
    start = copy.deepcopy(rm.state_dict())
    hist = train_reward_model(rm, keyword_pairs(2000, seed=0), held_out,
                              quiet(tmp_path, max_steps=250, batch_size=16, lr=3e-3, warmup_steps=10, eval_every=125,
                                    lora_rank=4, lora_alpha=8, gradient_checkpointing=True))
    evals = [r["eval_accuracy"] for r in hist if "eval_accuracy" in r]
    print(f"LoRA r=4: held-out accuracy {before:.3f} -> {evals}")
    assert before < 0.7 and evals[-1] >= 0.85, evals
    # the returned model is plain again: adapters folded in, checkpointing off, every weight trainable
    assert not has_lora(rm) and not rm.backbone.is_activation_checkpointing
    assert all(p.requires_grad for p in rm.parameters())
    end = rm.state_dict()
    assert sorted(end) == sorted(start)
    for name, w0 in start.items():
        w1 = end[name]
        delta = (w1 - w0).double()
        if name.startswith("head."):
            assert delta.abs().max() > 0  # the head trains in full
        elif w0.dim() == 2 and "embeddings" not in name:  # a linear layer: changed by a rank <= 4 update
            assert delta.abs().max() > 0, name
            assert torch.linalg.matrix_rank(delta, rtol=1e-6).item() <= 4, name
        else:  # embeddings, norms, biases: frozen
            assert torch.equal(w1, w0), name
    again = mmreward.load(str(tmp_path))  # the run's model/ is a plain folder with the folded weights
    assert not has_lora(again)
    assert evaluate_pairs(again, held_out)["accuracy"] == pytest.approx(evals[-1])


def test_gradient_checkpointing_run_equals_the_plain_run(tmp_path):
    pairs = keyword_pairs(64, seed=0)
    runs = []
    for i, checkpointing in enumerate((False, True)):
        rm = tiny_rm(pooling="first", seed=3)
        train_reward_model(rm, pairs, config=quiet(tmp_path / str(i), max_steps=6, batch_size=8, lr=1e-3,
                                                   gradient_checkpointing=checkpointing))
        runs.append(rm.state_dict())
    for k in runs[0]:
        torch.testing.assert_close(runs[1][k], runs[0][k], rtol=1e-5, atol=1e-6)


def test_an_interrupted_lora_run_resumes_to_the_same_weights(tmp_path):
    pairs = keyword_pairs(96, seed=0)
    opts = dict(max_steps=8, batch_size=8, lr=2e-3, save_every=3, lora_rank=2, lora_dropout=0.1)
    straight = tiny_rm(seed=5)
    train_reward_model(straight, pairs, config=quiet(tmp_path / "a", **opts))

    first = tiny_rm(seed=5)
    trainer = reward_trainer(first, pairs, config=quiet(tmp_path / "b", **opts))
    trainer.fit(stop_at=4)  # pre-empted after step 4: the snapshot of step 3 survives, adapters are in it
    assert has_lora(first)
    second = tiny_rm(seed=5)
    trainer = reward_trainer(second, pairs, config=quiet(tmp_path / "b", **opts))
    assert trainer.start() is True and trainer.step == 4
    trainer.fit()
    trainer.backbone_setup.finish()
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(second.state_dict()[k], v, rtol=0, atol=0)

    # resumed with another rank: refused, and the model is left exactly as it was (no adapters, flags)
    third = tiny_rm(seed=5)
    third.backbone.embeddings.word_embeddings.weight.requires_grad_(False)
    state = copy.deepcopy(third.state_dict())
    with pytest.raises(ValueError, match="lora"):
        reward_trainer(third, pairs, config=quiet(tmp_path / "b", **{**opts, "lora_rank": 3, "max_steps": 12}))
    assert not has_lora(third) and not third.backbone.is_activation_checkpointing
    assert not third.backbone.embeddings.word_embeddings.weight.requires_grad
    assert [n for n, p in third.named_parameters() if not p.requires_grad] == ["backbone.embeddings.word_embeddings.weight"]
    assert all(torch.equal(v, state[k]) for k, v in third.state_dict().items())


def test_adapters_on_named_layers_of_a_decoder_bf16(tmp_path):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
    from test_text_train import word_tokenizer

    rm = RewardModel.from_backbone(cfg, tokenizer=word_tokenizer()).to(torch.bfloat16)
    trainer = reward_trainer(rm, keyword_pairs(32, seed=0), config=quiet(
        tmp_path, max_steps=3, batch_size=8, lr=1e-3, lora_rank=2, lora_targets="q_proj,v_proj",
        gradient_checkpointing=True))
    wrapped = sorted(n for n, m in rm.named_modules() if isinstance(m, LoraLinear))
    assert wrapped == [f"backbone.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    assert all(m.lora_A.dtype == torch.float32 for m in rm.modules() if isinstance(m, LoraLinear))
    hist = trainer.fit()
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in hist)
    loaded = mmreward.load(str(tmp_path))
    assert loaded.head.weight.dtype == torch.bfloat16 and not has_lora(loaded)


@pytest.mark.parametrize("kw,match", [
    (dict(lora_alpha=32.0), "lora_alpha set but lora_rank is 0"),
    (dict(lora_targets="q_proj"), "lora_targets set but lora_rank is 0"),
    (dict(lora_rank=-1), "lora_rank must be an integer >= 0"),
    (dict(lora_rank=4, lora_dropout=1.5), r"dropout must be in \[0, 1\)"),
    (dict(gradient_checkpointing="yes"), "gradient_checkpointing must be True or False"),
])
def test_config_errors(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        quiet(tmp_path, **kw)


def test_a_target_that_matches_nothing_is_refused_before_the_model_changes(tmp_path):
    rm = tiny_rm()
    state = copy.deepcopy(rm.state_dict())
    with pytest.raises(ValueError, match=r"\['q_proj'\] match no linear layer of BertModel; its linear layers are "
                                         r"named \['dense', 'key', 'query', 'value'\]"):
        reward_trainer(rm, keyword_pairs(16, seed=0), config=quiet(tmp_path, max_steps=2, lora_rank=2,
                                                                   lora_targets="q_proj"))
    assert not has_lora(rm) and all(p.requires_grad for p in rm.parameters())
    assert all(torch.equal(v, state[k]) for k, v in rm.state_dict().items())
    assert not (tmp_path / "model").exists()


def test_cli_lora_and_checkpointing(tmp_path, capsys):
    from test_text_cli import QUIET, bert_json, save_tokenizer, write_pairs

    save_tokenizer(tmp_path / "tok")
    write_pairs(tmp_path / "train.jsonl", 64, 0)
    common = ["text", "train", "--data", str(tmp_path / "train.jsonl"), "--backbone-config",
              bert_json(tmp_path / "bert.json"), "--tokenizer", str(tmp_path / "tok"), "--batch-size", "8", *QUIET]
    assert mmreward_main([*common, "--out", str(tmp_path / "run"), "--max-steps", "4", "--lora-rank", "2",
                          "--lora-targets", "query,value", "--gradient-checkpointing"]) == 0
    config = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert config["lora_rank"] == 2 and config["gradient_checkpointing"] is True
    assert not has_lora(mmreward.load(str(tmp_path / "run")))
    capsys.readouterr()
    for extra, match in ((["--lora-alpha", "8"], "lora_alpha set but lora_rank is 0"),
                         (["--lora-rank", "2", "--lora-targets", "q_proj"], "match no linear layer of BertModel")):
        assert mmreward_main([*common, "--out", str(tmp_path / "bad"), "--max-steps", "2", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and match in err and "Traceback" not in err, err


@pytest.mark.learning
def test_prm_trained_with_lora_learns(tmp_path):
    from mmreward.text.prm.data import read_step_examples
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, make_dataset, tiny_llama
    from mmreward.text.prm.train import PRMTrainConfig, evaluate_prm, train_prm

    tok = char_tokenizer("step", max_value=5)
    prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=64, layers=2, seed=0), tok, head="lm", max_length=64)
    train = read_step_examples(make_dataset(2000, seed=1, max_value=5))
    held_out = read_step_examples(make_dataset(300, seed=2, max_value=5))
    before = evaluate_prm(prm, held_out)["processbench_f1"]
    cfg = PRMTrainConfig(output_dir=str(tmp_path), max_steps=120, batch_size=32, lr=3e-3, warmup_steps=10,
                         progress=False, tensorboard=False, plot=False, log_every=0, lora_rank=8, lora_alpha=16,
                         gradient_checkpointing=True)
    train_prm(prm, train, cfg)
    after = evaluate_prm(prm, held_out)["processbench_f1"]
    print(f"PRM LoRA r=8: ProcessBench F1 {before:.3f} -> {after:.3f}")
    assert before < 0.5 and after >= 0.8
    assert not has_lora(prm) and all(p.requires_grad for p in prm.parameters())
    loaded = mmreward.load(str(tmp_path))
    assert evaluate_prm(loaded, held_out)["processbench_f1"] == pytest.approx(after)
    with pytest.raises(ValueError, match="lora_rank and trainable_layers both choose"):
        PRMTrainConfig(output_dir=str(tmp_path), lora_rank=2, trainable_layers=1)


def test_checkpointing_leaves_the_backbones_use_cache_as_it_was(tmp_path):
    """Checkpointing turns the KV cache off for training; a refused and a finished run put the model's own setting
    back (the saved backbone config held use_cache: false)."""
    from test_text_train import word_tokenizer

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0, use_cache=True)
    rm = RewardModel.from_backbone(cfg, tokenizer=word_tokenizer())
    pairs = keyword_pairs(16, seed=0)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        reward_trainer(rm, pairs, config=quiet(tmp_path / "a", max_steps=2, batch_size=64, gradient_checkpointing=True))
    assert rm.backbone.config.use_cache is True and not rm.backbone.is_activation_checkpointing
    train_reward_model(rm, pairs, config=quiet(tmp_path / "b", max_steps=2, batch_size=8, gradient_checkpointing=True))
    assert rm.backbone.config.use_cache is True
    assert json.loads((tmp_path / "b" / "model" / "config.json").read_text())["config"]["backbone"]["use_cache"] is True


def test_an_optimizer_given_with_lora_is_refused_by_train_prm(tmp_path):
    from mmreward.text.prm.data import read_step_examples
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, make_dataset, tiny_llama
    from mmreward.text.prm.train import PRMTrainConfig, train_prm

    tok = char_tokenizer("step", max_value=5)
    prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=1, seed=0), tok, head="lm", max_length=64)
    cfg = PRMTrainConfig(output_dir=str(tmp_path), max_steps=2, batch_size=4, lora_rank=2, progress=False,
                         tensorboard=False, plot=False, log_every=0)
    with pytest.raises(ValueError, match="cannot hold the LoRA adapters"):
        train_prm(prm, read_step_examples(make_dataset(8, seed=1, max_value=5)), cfg,
                  optimizer=torch.optim.AdamW(prm.parameters()))
    assert not has_lora(prm)
