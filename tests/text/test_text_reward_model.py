import os

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from text_rm_fixtures import CHATML, bert_config, llama_config, word_tokenizer  # noqa: E402

import mmreward  # noqa: E402
from mmreward.core.folders import CheckpointError  # noqa: E402
from mmreward.core.inputs import TextPair  # noqa: E402
from mmreward.text import RewardModel  # noqa: E402
from mmreward.text.data import pad_batch  # noqa: E402

CONFIGS = {"llama": llama_config, "bert": bert_config}
PROMPTS = ["what is two plus three", "a", "b c", "what is the answer"]
RESPONSES = ["five", "b c a b d d c", "six", "seven seven"]
ITEMS = [TextPair(p, r) for p, r in zip(PROMPTS, RESPONSES)]


def make(kind, tokenizer=None, **kw):
    torch.manual_seed(0)
    return RewardModel.from_backbone(CONFIGS[kind](), tokenizer=tokenizer or word_tokenizer(), **kw).eval()


def test_defaults_follow_the_backbone_kind():
    assert make("llama").config.pooling == "last" and make("bert").config.pooling == "mean"
    assert make("bert").config.input_format == "joined"  # the tokenizer has no pair layout
    assert make("bert", word_tokenizer(pair=True)).config.input_format == "pair"
    assert make("llama", word_tokenizer(chat_template=CHATML)).config.input_format == "chat"
    assert make("bert").config.max_length == 64  # the tokenizer's / backbone's limit


@pytest.mark.parametrize("kind, pooling", [("llama", "last"), ("llama", "mean"), ("bert", "first"), ("bert", "mean"),
                                           ("bert", "last")])
def test_padding_does_not_change_the_reward(kind, pooling):
    rm = make(kind, pooling=pooling)
    rows = rm.encode(ITEMS)
    assert len({len(r) for r in rows}) > 1  # really padded
    with torch.no_grad():
        right = rm(*pad_batch(rows, rm.pad_id))
        alone = torch.cat([rm(*pad_batch([r], rm.pad_id)) for r in rows])
    assert right.shape == (4,) and right.dtype == torch.float32
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)
    assert right.std() > 0  # the inputs are told apart
    if kind == "llama":  # decoders take positions from the mask: left padding gives the same rewards
        with torch.no_grad():
            left = rm(*pad_batch(rows, rm.pad_id, "left"))
        torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_score_sorts_by_length_and_restores_order(kind):
    rm = make(kind)
    batched = rm.score(ITEMS, batch_size=3)
    single = torch.cat([rm.score([it]) for it in ITEMS])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    as_dicts = rm.score([{"prompt": p, "response": r} for p, r in zip(PROMPTS, RESPONSES)], progress=True)
    torch.testing.assert_close(as_dicts, batched, atol=1e-5, rtol=1e-5)
    idx, scores = rm.best_of_n("what is two plus three", ["five", "six", "b c a", "d"])
    assert idx == int(scores.argmax()) and scores.shape == (4,)
    torch.testing.assert_close(scores[1], rm.score([TextPair("what is two plus three", "six")])[0], atol=1e-5, rtol=1e-5)


def test_save_and_load_as_one_unit(tmp_path):
    rm = make("llama")
    before = rm.score(ITEMS)
    rm.save_pretrained(str(tmp_path / "rm"))
    files = set(os.listdir(tmp_path / "rm"))
    assert files == {"config.json", "model.safetensors", "manifest.json", "tokenizer"}
    assert not any(f.endswith((".bin", ".pt", ".pkl", ".pth")) for f in files)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary folder left
    for loader in (RewardModel.from_pretrained, mmreward.load):
        torch.testing.assert_close(loader(str(tmp_path / "rm")).score(ITEMS), before)
    # a kill mid-save leaves the old folder intact: the new one is built aside and swapped in
    other = make("llama", pooling="mean")

    class Killed(BaseException):
        pass

    def killed(*a, **k):
        raise Killed

    other.tokenizer.save_pretrained = killed
    with pytest.raises(Killed):
        other.save_pretrained(str(tmp_path / "rm"))
    torch.testing.assert_close(mmreward.load(str(tmp_path / "rm")).score(ITEMS), before)
    # a truncated weights file is reported, not loaded
    with open(tmp_path / "rm" / "model.safetensors", "r+b") as f:
        f.truncate(100)
    with pytest.raises(CheckpointError, match="bytes but the manifest records"):
        RewardModel.from_pretrained(str(tmp_path / "rm"))
    with pytest.raises(CheckpointError, match="does not exist"):
        RewardModel.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="could not be fetched from the hub"):  # HF_HUB_OFFLINE=1 in conftest
        RewardModel.from_pretrained("no-such-org/no-such-reward-model")


def test_folder_without_tokenizer_files_is_refused(tmp_path):
    rm = make("bert")
    rm.save_pretrained(str(tmp_path / "rm"))
    os.remove(tmp_path / "rm" / "tokenizer" / "tokenizer.json")
    with pytest.raises(CheckpointError, match="tokenizer/tokenizer.json is missing"):
        mmreward.load(str(tmp_path / "rm"))
    os.remove(tmp_path / "rm" / "manifest.json")  # no manifest: the tokenizer check itself names the files
    with pytest.raises(CheckpointError, match=r"has no tokenizer files \(one of tokenizer.json, vocab.txt"):
        mmreward.load(str(tmp_path / "rm"))
    no_tok = RewardModel.from_backbone(bert_config())
    with pytest.raises(ValueError, match="no tokenizer"):
        no_tok.save_pretrained(str(tmp_path / "x"))
    assert not os.path.exists(tmp_path / "x")


def test_chat_template_and_conversations():
    rm = make("bert", word_tokenizer(chat_template=CHATML))
    msgs_p = [[{"role": "user", "content": p}] for p in PROMPTS]
    msgs_r = [[{"role": "assistant", "content": r}] for r in RESPONSES]
    s_str = rm.score(ITEMS)
    torch.testing.assert_close(rm.score([TextPair(p, r) for p, r in zip(msgs_p, msgs_r)]), s_str)  # user / assistant turns
    convs = [p + r for p, r in zip(msgs_p, msgs_r)]
    torch.testing.assert_close(rm.score([TextPair(None, c) for c in convs]), s_str)  # implicit-prompt conversations
    tokens = rm.tokenizer.convert_ids_to_tokens(rm.encode(ITEMS[:1])[0].ids)
    assert tokens == ["[CLS]", "<|im_start|>", "user", "what", "is", "two", "plus", "three", "<|im_end|>", "<|im_start|>",
                      "assistant", "five", "<|im_end|>", "[SEP]"]
    plain = make("bert")  # no template: "prompt\n\nresponse" with [CLS] ... [SEP]
    tokens = plain.tokenizer.convert_ids_to_tokens(plain.encode(ITEMS[:1])[0].ids)
    assert tokens == ["[CLS]", "what", "is", "two", "plus", "three", "five", "[SEP]"]
    paired = make("bert", word_tokenizer(pair=True))  # encoder pair layout with token types
    row = paired.encode(ITEMS[:1])[0]
    assert paired.tokenizer.convert_ids_to_tokens(row.ids) == ["[CLS]", "what", "is", "two", "plus", "three", "[SEP]",
                                                               "five", "[SEP]"]
    assert row.types == [0] * 7 + [1, 1]


def test_bad_inputs_are_clear_errors():
    rm = make("bert")
    with pytest.raises(ValueError, match="no inputs"):
        rm.score([])
    with pytest.raises(ValueError, match="input 1: field 'response' must be a string or a list of messages"):
        rm.score([{"prompt": "a", "response": "b"}, {"prompt": "b", "response": 3}])
    with pytest.raises(ValueError, match=r"input 0: field 'response'\[0\] must be a message"):
        rm.score([{"prompt": "a", "response": [{"role": "assistant"}]}])
    with pytest.raises(ValueError, match="input 0: field 'messages' must be a list of messages, got"):
        rm.score([{"messages": "a"}])
    with pytest.raises(ValueError, match="input 0: field 'response' is null"):
        rm.score([{"prompt": "a", "response": None}])
    with pytest.raises(TypeError, match="takes a list of inputs"):
        rm.score("a")
    with pytest.raises(ValueError, match="batch_size"):
        rm.score(ITEMS, batch_size=0)
    with pytest.raises(ValueError, match="best_of_n got no candidates"):
        rm.best_of_n("a", [])
    with pytest.raises(ValueError, match="no tokens"):
        rm(torch.ones(2, 3, dtype=torch.long), torch.tensor([[1, 1, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="attention_mask"):
        rm(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 4, dtype=torch.long))
    no_tok = RewardModel.from_backbone(bert_config())
    with pytest.raises(ValueError, match="no tokenizer"):
        no_tok.score(ITEMS)
    with pytest.raises(TypeError, match="backbone"):
        RewardModel.from_backbone(42)
    with pytest.raises(ValueError, match="pooling must be one of"):
        make("bert", pooling="max")


def test_inputs_the_backbone_cannot_read_name_the_input(tmp_path, capsys):
    """Inputs longer than a learned position table, or token ids past the embedding table, failed deep
    in the backbone ("The size of tensor a (124) must match ...", "index out of range in self"); now the
    error names the input, the limit and the fix, before any forward pass."""
    import dataclasses
    import json

    from transformers import RobertaConfig

    from mmreward.cli import main as mmreward_main
    from mmreward.text import RewardTrainConfig, train_reward_model
    from text_rm_fixtures import WORDS, vocab_size

    bert = make("bert")
    assert bert.position_limit() == 64 and make("llama").position_limit() is None  # rotary: no hard end
    bert.config = dataclasses.replace(bert.config, max_length=None)
    fits, long = "a " * 62, "a " * 63  # [CLS] + words + [SEP]: 64 and 65 tokens
    bert.score([TextPair(None, fits)])
    with pytest.raises(ValueError, match=r"^input 1 is 65 tokens, more than the 64 positions the BertModel backbone "
                                         r"reads \(max_length is None\): use a max_length of at most 64$"):
        bert.score([TextPair(None, fits), TextPair(None, long)])
    # RoBERTa counts positions from padding_idx + 1: 66 rows with pad id 1 read 64 tokens
    roberta = RewardModel.from_backbone(RobertaConfig(vocab_size=vocab_size(), hidden_size=32, intermediate_size=64,
                                                      num_hidden_layers=1, num_attention_heads=4,
                                                      max_position_embeddings=66, pad_token_id=1),
                                        tokenizer=word_tokenizer(), max_length=100)
    assert roberta.position_limit() == 64
    roberta.score([TextPair(None, fits)])
    with pytest.raises(ValueError, match="input 0 is 65 tokens, more than the 64 positions the RobertaModel"):
        roberta.score([TextPair(None, long)])
    # a tokenizer with more words than the model has embeddings: named by training pair and side
    wider = make("bert", word_tokenizer(words=WORDS + ["zebra"]))
    pairs = [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b", "rejected": "zebra"}]
    cfg = RewardTrainConfig(output_dir=str(tmp_path / "run"), max_steps=1, progress=False, tensorboard=False, plot=False)
    with pytest.raises(ValueError, match=rf"^training pair 1 \(rejected\) holds token id {vocab_size()}, but the backbone "
                                         rf"has embeddings for ids 0..{vocab_size() - 1} only: the tokenizer is not"):
        train_reward_model(wider, pairs, None, cfg)
    assert not os.path.exists(tmp_path / "run")  # refused before the run started
    # the CLI: one line, exit 2; --max-length below 2 is refused by the config's own check
    make("bert").save_pretrained(str(tmp_path / "rm"))
    (tmp_path / "rows.jsonl").write_text(json.dumps({"prompt": "a", "response": long}) + "\n")
    for max_length, message in (("100000", "rows.jsonl: row 0 is 66 tokens, more than the 64 positions"),
                                ("1", "max_length must be an integer >= 2 or None, got 1"),
                                ("-5", "max_length must be an integer >= 2 or None, got -5")):
        capsys.readouterr()
        assert mmreward_main(["text", "score", "--model", str(tmp_path / "rm"), "--data", str(tmp_path / "rows.jsonl"),
                              "--max-length", max_length, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_a_backbone_that_projects_its_output_gets_a_head_of_that_width():
    """OPT projects its last hidden states to word_embed_proj_dim (facebook/opt-350m: 1024 -> 512): the head was
    built from hidden_size and the first forward failed ("mat1 and mat2 shapes cannot be multiplied")."""
    from transformers import OPTConfig

    from text_rm_fixtures import vocab_size

    torch.manual_seed(0)
    config = OPTConfig(vocab_size=vocab_size(), hidden_size=32, word_embed_proj_dim=16, ffn_dim=64, num_hidden_layers=1,
                       num_attention_heads=4, max_position_embeddings=64)
    rm = RewardModel.from_backbone(config, tokenizer=word_tokenizer(chat_template=CHATML)).eval()
    assert rm.head.in_features == 16
    scores = rm.score([TextPair("q", "good"), TextPair("q", "bad")])
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_from_backbone_refuses_keywords_it_would_ignore():
    """`from_backbone(BertConfig(...), tok, pooler_act="tanh")` dropped pooler_act without a word (extra keywords
    are from_pretrained options, which only a backbone path uses): the model had no pooler."""
    with pytest.raises(TypeError, match=r"from_backbone: pooler_act= would be ignored.*backbone here is a BertConfig"):
        RewardModel.from_backbone(bert_config(), tokenizer=word_tokenizer(), pooler_act="tanh")
