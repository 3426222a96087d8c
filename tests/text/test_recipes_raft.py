"""RAFT: a tiny causal LM learns to emit the rewarded token (reward with a known optimum)."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from mmreward.text.recipes.reward_ranked import RaftConfig, raft, select_samples

WORDS = ["a", "b", "c", "d", "e", "f", "g", "h"]


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[EOS]"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]",
                                                unk_token="[UNK]")


def tiny_policy(vocab_size: int, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                   pad_token_id=0, eos_token_id=2, bos_token_id=None)
    return transformers.LlamaForCausalLM(cfg)


def fraction_of_a(prompts, responses):
    """Known optimum 1.0: every response word is "a"."""
    out = []
    for r in responses:
        w = r.split()
        out.append(sum(x == "a" for x in w) / 6.0)  # max_new_tokens = 6: stopping early scores less
    return torch.tensor(out)


@pytest.mark.learning
def test_raft_mean_reward_rises(tmp_path):
    tok = tiny_tokenizer()
    policy = tiny_policy(len(tok))
    rng = torch.Generator().manual_seed(0)
    prompts = [" ".join(WORDS[i] for i in torch.randint(1, len(WORDS), (3,), generator=rng).tolist()) for _ in range(12)]
    cfg = RaftConfig(output_dir=str(tmp_path / "raft"), iterations=3, samples_per_prompt=8, max_new_tokens=6,
                     sft_steps=16, sft_batch_size=6, lr=1e-2, tensorboard=False, seed=0)
    hist = raft(policy, tok, prompts, fraction_of_a, cfg)
    rewards = [h["mean_reward"] for h in hist]
    assert len(hist) == 4 and os.path.exists(tmp_path / "raft" / "raft.csv")
    assert rewards[0] < 0.25, rewards  # a random policy emits "a" rarely
    assert rewards[-1] > rewards[0] + 0.25, rewards  # seeds 0-2: +0.55, +0.61, +0.31
    assert all(h["selected_reward"] >= h["mean_reward"] for h in hist[:-1])
    assert not any(n.startswith("checkpoint-") for n in os.listdir(tmp_path / "raft" / "iter_0"))


def test_select_samples_modes():
    r = torch.tensor([0.1, 0.9, 0.3, 0.5, 0.2, 0.0])  # 2 prompts x K=3
    assert select_samples(r, 2, RaftConfig(samples_per_prompt=3)) == [1, 3]
    assert select_samples(r, 2, RaftConfig(samples_per_prompt=3, selection="top_fraction", top_fraction=0.5)) == [1, 2, 3]


def test_raft_config_and_input_errors(tmp_path):
    with pytest.raises(ValueError, match="selection"):
        RaftConfig(selection="best")
    with pytest.raises(ValueError, match="samples_per_prompt"):
        RaftConfig(samples_per_prompt=0)
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="prompts"):
        raft(tiny_policy(len(tok)), tok, [], fraction_of_a, RaftConfig(output_dir=str(tmp_path)))
    with pytest.raises(TypeError, match="generate"):
        raft(torch.nn.Linear(2, 2), tok, ["a"], fraction_of_a, RaftConfig(output_dir=str(tmp_path)))


def test_raft_into_a_folder_holding_a_run_is_refused_and_loses_nothing(tmp_path):
    """A second RAFT run into the same output_dir used to delete the first run's raft.csv at once, sample,
    then fail at the first fine-tuning with a message about --resume (which RAFT does not have)."""
    tok = tiny_tokenizer()
    out = tmp_path / "raft"
    cfg = RaftConfig(output_dir=str(out), iterations=1, samples_per_prompt=2, max_new_tokens=3, sft_steps=1,
                     sft_batch_size=2, tensorboard=False)
    raft(tiny_policy(len(tok)), tok, ["a b", "c d"], fraction_of_a, cfg)
    log = (out / "raft.csv").read_text()
    policy = tiny_policy(len(tok))
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    with pytest.raises(ValueError, match=r"holds a RAFT run \(iter_0, raft\.csv\): use another output_dir, or "
                                         r"RaftConfig\(overwrite=True\)"):
        raft(policy, tok, ["a b", "c d"], fraction_of_a, cfg)
    assert (out / "raft.csv").read_text() == log and (out / "iter_0" / "metrics.csv").exists()
    assert all(torch.equal(v, policy.state_dict()[k]) for k, v in before.items())
    import dataclasses

    hist = raft(policy, tok, ["a b", "c d"], fraction_of_a, dataclasses.replace(cfg, overwrite=True, iterations=2))
    assert len(hist) == 3 and (out / "raft.csv").read_text().count("\n") == 4  # the new run's rows only
    with pytest.raises(ValueError, match="output_dir must be a non-empty path"):
        RaftConfig(output_dir="")
