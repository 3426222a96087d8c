import os

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from helpers import word_tokenizer as _word_tokenizer  # noqa: E402
from transformers import BertConfig, LlamaConfig, LlamaForSequenceClassification  # noqa: E402

from mmreward.core.checkpoint import CheckpointError  # noqa: E402
from mmreward.text import RewardModel  # noqa: E402
from mmreward.text.data import encode, pad_batch  # noqa: E402

WORDS = "user assistant what is the answer to two plus three five six seven a b c d".split()


def word_tokenizer(chat_template=None):
    return _word_tokenizer(WORDS, model_max_length=64, chat_template=chat_template)


def llama_config(**kw):
    return LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, **kw)


def bert_config():
    return BertConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=64)


CONFIGS = {"llama": llama_config, "bert": bert_config}
PROMPTS = ["what is two plus three", "a", "b c", "what is the answer"]
RESPONSES = ["five", "b c a b d d c", "six", "seven seven"]


def make(kind, tokenizer=None):
    torch.manual_seed(0)
    return RewardModel.from_backbone(CONFIGS[kind](), tokenizer=tokenizer or word_tokenizer()).eval()


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_left_and_right_padding_give_the_same_reward(kind):
    rm = make(kind)
    ids, _ = encode(rm.tokenizer, list(zip(PROMPTS, RESPONSES)))
    assert len({len(i) for i in ids}) > 1  # really padded
    with torch.no_grad():
        right = rm(*pad_batch(ids, 0, "right"))
        left = rm(*pad_batch(ids, 0, "left"))
        alone = torch.cat([rm(*pad_batch([i], 0)) for i in ids])
    assert right.shape == (4,) and right.dtype == torch.float32
    torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)
    assert right.std() > 0  # the inputs are told apart


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_score_buckets_by_length_and_restores_order(kind):
    rm = make(kind)
    batched = rm.score(PROMPTS, RESPONSES, batch_size=3)
    single = torch.cat([rm.score([p], [r]) for p, r in zip(PROMPTS, RESPONSES)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    bf16 = rm.score(PROMPTS, RESPONSES, dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32 and torch.allclose(bf16, batched, atol=0.1)
    idx, scores = rm.best_of_n("what is two plus three", ["five", "six", "b c a", "d"])
    assert idx == int(scores.argmax()) and scores.shape == (4,)
    torch.testing.assert_close(scores[1], rm.score(["what is two plus three"], ["six"])[0], atol=1e-5, rtol=1e-5)


def test_save_and_load_roundtrip_without_pickles(tmp_path):
    rm = make("llama")
    before = rm.score(PROMPTS, RESPONSES)
    rm.save_pretrained(str(tmp_path))
    files = set(os.listdir(tmp_path))
    assert {"config.json", "model.safetensors", "mmreward_reward_model.json", "tokenizer.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl", ".pth")) for f in files)
    loaded = RewardModel.from_pretrained(str(tmp_path))
    torch.testing.assert_close(loaded.score(PROMPTS, RESPONSES), before)
    # a truncated weights file is reported, not loaded
    with open(tmp_path / "model.safetensors", "r+b") as f:
        f.truncate(100)
    with pytest.raises(CheckpointError, match="truncated"):
        RewardModel.from_pretrained(str(tmp_path))
    with pytest.raises(CheckpointError, match="does not exist"):
        RewardModel.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="could not be fetched from the hub"):  # HF_HUB_OFFLINE=1 in conftest
        RewardModel.from_pretrained("no-such-org/no-such-reward-model")


def test_loads_sequence_classification_checkpoints(tmp_path):
    torch.manual_seed(1)
    seq = LlamaForSequenceClassification(llama_config(num_labels=1)).eval()
    tok = word_tokenizer()
    seq.save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    rm = RewardModel.from_pretrained(str(tmp_path))
    ids, _ = encode(tok, list(zip(PROMPTS, RESPONSES)))
    input_ids, mask = pad_batch(ids, 0, "right")
    with torch.no_grad():
        expected = seq(input_ids=input_ids, attention_mask=mask).logits[:, 0]
    torch.testing.assert_close(rm.score(PROMPTS, RESPONSES), expected, atol=1e-5, rtol=1e-5)
    # and it round-trips through our own format
    rm.save_pretrained(str(tmp_path / "ours"))
    torch.testing.assert_close(RewardModel.from_pretrained(str(tmp_path / "ours")).score(PROMPTS, RESPONSES), expected,
                               atol=1e-5, rtol=1e-5)
    two = LlamaForSequenceClassification(llama_config(num_labels=2))
    two.save_pretrained(str(tmp_path / "two"))
    with pytest.raises(CheckpointError, match="2 labels"):
        RewardModel.from_pretrained(str(tmp_path / "two"), tokenizer=tok)


def test_chat_template_and_conversations():
    template = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} [SEP] {% endfor %}"
    rm = make("bert", word_tokenizer(template))
    msgs_p = [[{"role": "user", "content": p}] for p in PROMPTS]
    msgs_r = [[{"role": "assistant", "content": r}] for r in RESPONSES]
    s_str = rm.score(PROMPTS, RESPONSES)
    torch.testing.assert_close(rm.score(msgs_p, msgs_r), s_str)  # strings become user / assistant turns
    convs = [p + r for p, r in zip(msgs_p, msgs_r)]
    torch.testing.assert_close(rm.score(convs), s_str)  # implicit-prompt conversations
    ids, _ = encode(rm.tokenizer, [(PROMPTS[0], RESPONSES[0])])
    assert rm.tokenizer.convert_ids_to_tokens(ids[0])[:2] == ["user", "what"]  # rendered by the template
    plain = make("bert")  # no template: "prompt\n\nresponse" with [CLS] ... [SEP]
    ids, _ = encode(plain.tokenizer, [(PROMPTS[0], RESPONSES[0])])
    assert plain.tokenizer.convert_ids_to_tokens(ids[0]) == ["[CLS]", "what", "is", "two", "plus", "three", "five", "[SEP]"]


def test_truncation_warns_and_keeps_the_end():
    rm = make("bert")
    with pytest.warns(UserWarning, match=r"truncated 1 of 2 inputs to max_length=5 tokens \(3 tokens cut"):
        s = rm.score(["a", "what is two plus three"], ["b", "five"], max_length=5)
    ids, cut = encode(rm.tokenizer, [("what is two plus three", "five")], 5)
    assert cut == [3] and rm.tokenizer.convert_ids_to_tokens(ids[0]) == ["two", "plus", "three", "five", "[SEP]"]
    assert s.shape == (2,) and torch.isfinite(s).all()


def test_bad_inputs_are_clear_errors():
    rm = make("bert")
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        rm.score(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="no inputs"):
        rm.score([], [])
    with pytest.raises(ValueError, match="response 1"):
        rm.score(["a", "b"], ["c", 3])
    with pytest.raises(ValueError, match=r"response 0\[0\]"):
        rm.score(["a"], [[{"role": "assistant"}]])
    with pytest.raises(TypeError, match="lists"):
        rm.score("a", "b")
    with pytest.raises(ValueError, match="batch_size"):
        rm.score(["a"], ["b"], batch_size=0)
    with pytest.raises(ValueError, match="best_of_n got no candidates"):
        rm.best_of_n("a", [])
    with pytest.raises(ValueError, match="no tokens"):
        rm(torch.ones(2, 3, dtype=torch.long), torch.tensor([[1, 1, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="attention_mask"):
        rm(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 4, dtype=torch.long))
    no_tok = RewardModel.from_backbone(bert_config())
    with pytest.raises(ValueError, match="no tokenizer"):
        no_tok.score(["a"], ["b"])
    with pytest.raises(TypeError, match="backbone"):
        RewardModel.from_backbone(42)
