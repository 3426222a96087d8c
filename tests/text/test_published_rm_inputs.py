"""A published text reward model sees exactly the tokens its authors feed it: for each family, the ids
mmreward builds from (prompt, response) — strings, message lists with a system turn, several turns — are
compared token for token with the construction of the model card / official code written out here, and the
score with the official forward on the same folder. The tokenizer is a small byte-level BPE, so every
space and newline of a template shows in the ids."""
import json
import os

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from torch import nn  # noqa: E402

import mmreward  # noqa: E402
from mmreward.core.folders import CheckpointError  # noqa: E402
from mmreward.core.inputs import TextPair  # noqa: E402
from test_published_text_layouts_more import _randomise  # noqa: E402  (the same tiny-model fixture)

CORPUS = ["\n\nHuman: what is two plus three?\n\nAssistant: five. Go back, you are wrong: six and seven!",
          "system user assistant Please reason step by step; the answer is a number."]
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] }}<|eot_id|>{% endfor %}")
CHATML = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
SPECIALS = ["<|endoftext|>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|im_start|>", "<|im_end|>", "<s>", "</s>"]
CONVS = [  # (prompt, response): a string prompt, a system turn, several turns
    ("what is two plus three?", "five."),
    ([{"role": "system", "content": "Please reason step by step."}, {"role": "user", "content": "two plus three?"}],
     "the answer is five"),
    ([{"role": "user", "content": "two?"}, {"role": "assistant", "content": "six"},
      {"role": "user", "content": "you are wrong"}], [{"role": "assistant", "content": "seven!"}]),
]


def bpe_tokenizer(*, bos=None, eos="<|endoftext|>", template=None, pad="<|endoftext|>"):
    """Byte-level BPE (GPT-2 style). ``bos``: a token the tokenizer puts before every text (Llama-3 style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(CORPUS * 3, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:
        t.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B:1",
                                                         special_tokens=[(bos, t.token_to_id(bos))])
    else:
        t.post_processor = processors.ByteLevel(trim_offsets=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=t, eos_token=eos, pad_token=pad, unk_token="<|endoftext|>",
                                  model_max_length=256, model_input_names=["input_ids", "attention_mask"],
                                  **({"bos_token": bos} if bos else {}))
    if template:
        tok.chat_template = template
    return tok


def _messages(prompt, response):
    p = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    r = [{"role": "assistant", "content": response}] if isinstance(response, str) else response
    return p + r


def _llama_config(tok, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       pad_token_id=tok.pad_token_id, **kw)


def _ids(rm, items):
    return [e.ids for e in rm.encode(items)]


# ------------------------------------------------------------------ Ray2333's GPT-2 RMs: tokenizer(question, answer)
def test_gpt2_rm_reads_prompt_and_response_as_the_cards_text_pair(tmp_path):
    """Ray2333/gpt2-large-harmless-reward_model (GPT2ForSequenceClassification, no chat template): its card
    scores ``rm_tokenizer(q, a)`` with q = "\\n\\nHuman: …\\n\\nAssistant:". Before: read as ``joined``,
    q + "\\n\\n" + a, two newline tokens the model never saw before the answer, and another score."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tok = bpe_tokenizer()
    torch.manual_seed(0)
    ref = _randomise(GPT2ForSequenceClassification(GPT2Config(
        vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=4, num_labels=1,
        pad_token_id=tok.pad_token_id)))
    ref.save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    qa = [("\n\nHuman: what is two plus three?\n\nAssistant:", " five."),
          ("\n\nHuman: Go back?\n\nAssistant:", "Go back, you are wrong")]
    rm = mmreward.load(str(tmp_path))
    assert rm.config.input_format == "pair"
    want_ids = [tok(q, a)["input_ids"] for q, a in qa]
    assert _ids(rm, [TextPair(q, a) for q, a in qa]) == want_ids
    with torch.no_grad():
        want = torch.stack([ref(torch.tensor([ids])).logits[0, 0] for ids in want_ids])
    assert float((rm.score([TextPair(q, a) for q, a in qa], batch_size=2) - want).abs().max()) <= 1e-5
    # a whole text (prompt=None) is the card's single text
    text = qa[0][0] + qa[0][1]
    assert _ids(rm, [TextPair(None, text)]) == [tok(text)["input_ids"]]


# ------------------------------------------------------------------ Skywork-Reward-V2 / INF-ORM / ArmoRM cards
@pytest.mark.parametrize("family", ["llama3", "qwen3"])
def test_chat_classifier_ids_are_the_cards(tmp_path, family):
    """Skywork-Reward-V2's card: ``apply_chat_template(conv, tokenize=False)``, a leading BOS string removed,
    ``tokenizer(text)``; INF-ORM's / ArmoRM's / Skywork-Reward v0.2's cards: ``apply_chat_template(conv,
    tokenize=True)``. Both give one BOS (Llama-3) or none (Qwen); mmreward's ids equal them for a string
    prompt, a system turn and several turns, and the score is the classifier's logit at the last token."""
    from transformers import LlamaForSequenceClassification

    tok = bpe_tokenizer(bos="<|begin_of_text|>", template=LLAMA3) if family == "llama3" else \
        bpe_tokenizer(template=CHATML, eos="<|im_end|>")
    ref = _randomise(LlamaForSequenceClassification(_llama_config(tok, num_labels=1)))
    ref.save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    rm = mmreward.load(str(tmp_path))
    want = []
    for p, r in CONVS:
        text = tok.apply_chat_template(_messages(p, r), tokenize=False)
        card = tok(text[len(tok.bos_token):] if tok.bos_token and text.startswith(tok.bos_token) else text)["input_ids"]
        assert card == list(tok.apply_chat_template(_messages(p, r), tokenize=True, return_dict=True)["input_ids"])
        want.append(card)
    assert _ids(rm, [TextPair(p, r) for p, r in CONVS]) == want
    # the same conversation as one message list (implicit prompt) or as a `messages` row
    assert _ids(rm, [{"messages": _messages(p, r)} for p, r in CONVS]) == want
    with torch.no_grad():
        logits = torch.stack([ref(torch.tensor([ids])).logits[0, 0] for ids in want])
    assert float((rm.score([TextPair(p, r) for p, r in CONVS], batch_size=3) - logits).abs().max()) <= 1e-5


def test_truncation_keeps_the_token_the_score_is_read_at(tmp_path):
    """A conversation longer than max_length loses content only: the template's last tokens (where the card's
    classifier reads its logit) stay at the end."""
    from transformers import LlamaForSequenceClassification

    tok = bpe_tokenizer(bos="<|begin_of_text|>", template=LLAMA3)
    LlamaForSequenceClassification(_llama_config(tok, num_labels=1)).save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    rm = mmreward.load(str(tmp_path))
    rm.config.max_length = 40
    long = TextPair("two plus three? " * 30, "the answer is five, " * 20)
    ids = _ids(rm, [long])[0]
    full = tok(tok.apply_chat_template(_messages(long.prompt, long.response), tokenize=False)[len(tok.bos_token):])
    assert len(ids) == 40 and ids[0] == tok.bos_token_id and ids[-1] == full["input_ids"][-1] == tok.convert_tokens_to_ids("<|eot_id|>")
    assert ids.count(tok.convert_tokens_to_ids("<|start_header_id|>")) == 2  # both turns' markers kept


# ------------------------------------------------------------------ headed decoders: the cards' plain-text formats
def _headed(tmp_path, tok, prefix, head, config=None):
    from transformers import LlamaModel, LlamaPreTrainedModel

    class Card(LlamaPreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            setattr(self, prefix, LlamaModel(config))
            setattr(self, head, nn.Linear(config.hidden_size, 1, bias=False))
            self.post_init()

    ref = _randomise(Card(config or _llama_config(tok)))
    ref.save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    return mmreward.load(str(tmp_path))


@pytest.mark.parametrize("family", ["UltraRM", "Starling-RM"])
def test_plain_text_cards_ids(tmp_path, family):
    """UltraRM-13b's card: ``tokenizer("Human: {instruction}\\nAssistant: {completion}")`` (Llama: one <s>);
    Starling-RM-34B's card: "<|im_start|>user\\n…<|im_end|>\\n<|im_start|>assistant\\n…<|im_end|>" with Yi's
    tokenizer, which adds no BOS. Token for token, a message-list prompt as its string."""
    if family == "UltraRM":
        tok = bpe_tokenizer(bos="<s>", eos="</s>")
        rm = _headed(tmp_path, tok, "model", "regression_head")
        card = "Human: {p}\nAssistant: {r}"
    else:
        tok = bpe_tokenizer(eos="<|im_end|>")
        from transformers import LlamaConfig

        cfg = _llama_config(tok)
        cfg.architectures = ["LlamaForSequenceClassification"]
        rm = _headed(tmp_path, tok, "transformer", "v_head", cfg)
        card = "<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n{r}<|im_end|>"
        assert isinstance(cfg, LlamaConfig)
    pairs = [("what is two plus three?", "five."), ("Go back?", "you are wrong: six")]
    want = [tok(card.format(p=p, r=r))["input_ids"] for p, r in pairs]
    assert _ids(rm, [TextPair(p, r) for p, r in pairs]) == want
    assert _ids(rm, [TextPair([{"role": "user", "content": p}], r) for p, r in pairs]) == want


def test_eurus_rm_ids_are_its_cards(tmp_path):
    """Eurus-RM-7b's card: ``tokenizer("[INST] {instruction} [/INST] {completion}")`` with Mistral's tokenizer (one <s>)."""
    from transformers import MistralConfig, MistralModel, PreTrainedModel

    tok = bpe_tokenizer(bos="<s>", eos="</s>")

    class EurusRewardModel(PreTrainedModel):
        config_class = MistralConfig

        def __init__(self, config):
            super().__init__(config)
            self.model = MistralModel(config)
            self.regression_head = nn.Linear(config.hidden_size, 1, bias=False)

    cfg = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0)
    EurusRewardModel(cfg).save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    rm = mmreward.load(str(tmp_path))
    pairs = [("what is two plus three?", "five."), ("Go back?", "you are wrong: six")]
    want = [tok(f"[INST] {p} [/INST] {r}")["input_ids"] for p, r in pairs]
    assert _ids(rm, [TextPair(p, r) for p, r in pairs]) == want


# ------------------------------------------------------------------ OpenRLHF-trained reward models
def _openrlhf_class():
    """OpenRLHF's ``_get_reward_model(LlamaPreTrainedModel, LlamaModel, value_head_prefix)`` written out
    (openrlhf/models/model.py): the backbone under base_model_prefix, a bias-free value head, mean / std from
    config.json applied when ``normalize_reward``; the reward at the last token of the attention mask."""
    from transformers import LlamaModel, LlamaPreTrainedModel

    class RewardModel(LlamaPreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            setattr(self, self.base_model_prefix, LlamaModel(config))
            self.value_head_prefix = getattr(config, "value_head_prefix", "score")
            setattr(self, self.value_head_prefix, nn.Linear(config.hidden_size, 1, bias=False))
            self.normalize_reward = config.normalize_reward
            self.register_buffer("mean", torch.zeros(1), persistent=False)
            self.register_buffer("std", torch.ones(1), persistent=False)
            if hasattr(config, "mean"):
                self.mean[0] = config.mean
                self.std[0] = config.std
            self.post_init()

        def forward(self, input_ids, attention_mask):
            eos_indices = attention_mask.size(1) - 1 - attention_mask.long().fliplr().argmax(dim=1, keepdim=True)
            position_ids = attention_mask.long().cumsum(-1) - 1
            position_ids.masked_fill_(attention_mask == 0, 1)
            out = getattr(self, self.base_model_prefix)(input_ids, attention_mask=attention_mask,
                                                         position_ids=position_ids)
            values = getattr(self, self.value_head_prefix)(out["last_hidden_state"]).squeeze(-1)
            reward = values.gather(dim=1, index=eos_indices).squeeze(1)
            if not self.training and self.normalize_reward:
                reward = (reward - self.mean) / self.std
            return reward

    return RewardModel


def _openrlhf_ids(tok, messages):
    """OpenRLHF's RewardDataset (--apply_chat_template): the rendered text without trailing newlines, " " + eos
    unless it ends with eos, tokenised without special tokens, the last token set to eos."""
    text = tok.apply_chat_template(messages, tokenize=False).rstrip("\n") if tok.chat_template else \
        "".join(m["content"] for m in messages).rstrip("\n")
    if not text.endswith(tok.eos_token):
        text += " " + tok.eos_token
    ids = tok(text, add_special_tokens=False)["input_ids"]
    ids[-1] = tok.eos_token_id
    return ids


def _save_openrlhf(folder, tok, head="score", mean=-0.75, std=3.5):
    cfg = _llama_config(tok)
    cfg.normalize_reward = False
    cfg.value_head_prefix = head
    ref = _randomise(_openrlhf_class()(cfg))
    ref.config.mean, ref.config.std = mean, std  # set by its trainer's last evaluation, saved in config.json
    ref.mean[0], ref.std[0] = mean, std  # as its __init__ reads them when OpenRLHF loads the folder
    ref.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return ref


@pytest.mark.parametrize("case", ["llama3", "chatml-eos-im_end", "chatml-eos-endoftext"])
def test_openrlhf_reward_model_reads_its_training_text(tmp_path, case):
    """An OpenRLHF checkpoint (architectures ["RewardModel"], value head under value_head_prefix, mean / std in
    config.json) is read with the text its RewardDataset trains on, and scores as its forward. Before:
    "cannot tell which reward model this is"."""
    if case == "llama3":
        tok = bpe_tokenizer(bos="<|begin_of_text|>", eos="<|eot_id|>", template=LLAMA3)
    else:
        tok = bpe_tokenizer(template=CHATML, eos="<|im_end|>" if case.endswith("im_end") else "<|endoftext|>")
    ref = _save_openrlhf(tmp_path, tok, head="value_head" if case == "llama3" else "score")
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["RewardModel"]
    rm = mmreward.load(str(tmp_path))
    want = [_openrlhf_ids(tok, _messages(p, r)) for p, r in CONVS]
    assert _ids(rm, [TextPair(p, r) for p, r in CONVS]) == want
    if case == "chatml-eos-endoftext":
        assert tok.convert_ids_to_tokens(want[0][-2:]) == ["Ġ", "<|endoftext|>"]  # " " + eos appended
    ids = torch.full((len(want), max(map(len, want))), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(want):  # OpenRLHF's collate pads on the left
        ids[i, ids.shape[1] - len(row):], mask[i, ids.shape[1] - len(row):] = torch.tensor(row), 1
    with torch.no_grad():
        raw = ref(ids, mask)
    items = [TextPair(p, r) for p, r in CONVS]
    assert float((rm.score(items, batch_size=3) - raw).abs().max()) <= 1e-5
    # normalize_reward: (r - mean) / std with the stored mean / std, as OpenRLHF's --normalize_reward
    ref.normalize_reward = True
    with torch.no_grad():
        normed = ref(ids, mask)
    assert float((mmreward.load(str(tmp_path), normalize_reward=True).score(items) - normed).abs().max()) <= 1e-5
    # saved in mmreward's format and loaded back: the same inputs
    out = tmp_path / "saved"
    rm.save_pretrained(str(out))
    assert _ids(mmreward.load(str(out)), items) == want


def test_openrlhf_reward_model_without_statistics_or_template(tmp_path):
    tok = bpe_tokenizer(eos="<|endoftext|>")
    _save_openrlhf(tmp_path, tok)
    with pytest.warns(UserWarning, match="no chat template"):
        rm = mmreward.load(str(tmp_path))
    # OpenRLHF without --apply_chat_template / --input_template: prompt + response as they are, then " " + eos
    assert _ids(rm, [TextPair("two plus three?", " five")]) == [
        _openrlhf_ids(tok, [{"content": "two plus three?"}, {"content": " five"}])]
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("std")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"normalize_reward=True needs .*std=None"):
        mmreward.load(str(tmp_path), normalize_reward=True)
    assert os.path.isfile(tmp_path / "config.json")


def test_starling_without_tokenizer_files_names_the_cards_tokenizer(tmp_path):
    """Starling-RM-34B's card loads its tokenizer from 01-ai/Yi-34B-Chat; a folder without one says so."""
    tok = bpe_tokenizer(eos="<|im_end|>")
    cfg = _llama_config(tok)
    cfg.architectures = ["LlamaForSequenceClassification"]
    rm = _headed(tmp_path, tok, "transformer", "v_head", cfg)
    for f in os.listdir(tmp_path):
        if f.startswith(("tokenizer", "special_tokens", "chat_template")):
            os.remove(tmp_path / f)
    with pytest.raises(CheckpointError, match=r"no tokenizer files .*Yi-34B-Chat: pass tokenizer="):
        mmreward.load(str(tmp_path))
    assert _ids(mmreward.load(str(tmp_path), tokenizer=tok), [TextPair("a", "b")]) == _ids(rm, [TextPair("a", "b")])


def test_openrlhf_head_name_of_older_releases_and_critics(tmp_path):
    """OpenRLHF/Llama-3-8b-rm-mixture's head is ``value_head`` (the default before OpenRLHF wrote
    value_head_prefix into config.json); a PPO critic (``CriticModel``) is refused, not read as a reward model."""
    tok = bpe_tokenizer(template=CHATML, eos="<|im_end|>")
    ref = _save_openrlhf(tmp_path, tok, head="value_head")
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("value_head_prefix")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    rm = mmreward.load(str(tmp_path))
    assert torch.equal(rm.head.weight, ref.value_head.weight)
    cfg["architectures"] = ["CriticModel"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="OpenRLHF critic .*not a reward model"):
        mmreward.load(str(tmp_path))


# ------------------------------------------------------------------ GRM (Ray2333's *-rewardmodel-ft)
def test_grm_reads_the_two_bos_tokens_of_its_card(tmp_path):
    """GRM-Llama3.2-3B / GRM-gemma2-2B-rewardmodel-ft: their card (and the GRM training / eval code) tokenises
    ``apply_chat_template(message, tokenize=False)`` with ``encode_plus`` (special tokens on), so a template that
    writes the BOS gets a second one. Before: one BOS (the Skywork-Reward-V2 convention) and another score."""
    from transformers import LlamaForSequenceClassification

    tok = bpe_tokenizer(bos="<|begin_of_text|>", template=LLAMA3)
    cfg = _llama_config(tok, num_labels=1)
    cfg.vhead_layer_type, cfg.vhead_num_layers, cfg.vhead_num_neurons = "mlp", 1, 1024  # GRM's config keys
    ref = _randomise(LlamaForSequenceClassification(cfg))
    ref.save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    rm = mmreward.load(str(tmp_path))
    # encode_plus (gone from transformers 5) is tok(text) with the tokenizer's special tokens
    want = [tok(tok.apply_chat_template(_messages(p, r), tokenize=False))["input_ids"] for p, r in CONVS]
    assert want[0][:2] == [tok.bos_token_id] * 2
    assert _ids(rm, [TextPair(p, r) for p, r in CONVS]) == want
    with torch.no_grad():
        logits = torch.stack([ref(torch.tensor([ids])).logits[0, 0] for ids in want])
    assert float((rm.score([TextPair(p, r) for p, r in CONVS]) - logits).abs().max()) <= 1e-5
    assert tok.chat_template == LLAMA3  # the caller's / folder's tokenizer is not changed
    out = tmp_path / "saved"
    rm.save_pretrained(str(out))
    assert _ids(mmreward.load(str(out)), [TextPair(p, r) for p, r in CONVS]) == want
    # a Qwen-style GRM (no BOS anywhere) is read as it is
    tok2 = bpe_tokenizer(template=CHATML, eos="<|im_end|>")
    from mmreward.text.layouts import grm_tokenizer

    assert grm_tokenizer(tok2) is tok2


def test_nemotron_reward_lm_is_refused_with_the_reason(tmp_path):
    """nvidia/Llama-3.1-Nemotron-70B-Reward-HF is a LlamaForCausalLM whose card reads the reward from
    generate's scores at token id 0. Before: "cannot tell which reward model this is"."""
    from transformers import LlamaForCausalLM

    tok = bpe_tokenizer(bos="<|begin_of_text|>", template=LLAMA3)
    folder = tmp_path / "Llama-3.1-Nemotron-70B-Reward-HF"
    LlamaForCausalLM(_llama_config(tok)).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    with pytest.raises(CheckpointError, match=r"Nemotron reward model in causal-LM form .*token id 0"):
        mmreward.load(str(folder))
