"""Published decoder reward models whose class is written in their model card (or ships as remote code
that mmreward does not run): INF-ORM, UltraRM, Eurus-RM, Starling-RM-34B, OpenAssistant's
GPTNeoXRewardModel. Each test builds a tiny random model with the card's own class (the release's
module names), saves it as the release is saved, loads it with ``mmreward.load`` and compares the
scores with the card's scoring code on the same texts."""
import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from text_rm_fixtures import BOS_TEMPLATE, WORDS, word_tokenizer  # noqa: E402
from torch import nn  # noqa: E402

import mmreward  # noqa: E402
from mmreward.core.folders import CheckpointError  # noqa: E402
from mmreward.core.inputs import TextPair  # noqa: E402

PROMPTS = ["what is two plus three", "a", "b c d e", "what is the answer to a"]
RESPONSES = ["five", "b c a b d d c", "six", "seven seven seven"]
ITEMS = [TextPair(p, r) for p, r in zip(PROMPTS, RESPONSES)]
EXTRA = ["Human:", "Assistant:", "[INST]", "[/INST]"]
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|prompter|>", "<|assistant|>", "<|system|>", "<|endoftext|>"]


def _tokenizer(*, bos=True, chat_template=None):
    tok = word_tokenizer(bos=bos, words=tuple(WORDS) + tuple(EXTRA), chat_template=chat_template)
    tok.add_tokens(SPECIAL, special_tokens=True)  # split out of the words around them, as in the releases
    if not bos:  # GPT-NeoX: no special tokens added, <|endoftext|> is the EOS
        from tokenizers import processors

        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A")
        tok.eos_token = "<|endoftext|>"
    return tok


def _randomise(model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def _llama(tok, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, **kw)


def _scores(rm):
    return rm.score(ITEMS, batch_size=4)  # padded batch: each score read at its own last token


# ------------------------------------------------------------------ INF-ORM-Llama3.1-70B
def test_inf_orm_scores_as_its_card(tmp_path):
    """INFORMForSequenceClassification: a LlamaModel, ``score`` = Linear(H, H) → ReLU → Linear(H, 1), the
    logit at the last non-pad token of ``apply_chat_template(conv, tokenize=True)`` (its card). Before:
    refused as "a base model" (the sequence-classifier reader looked for ``score.weight``)."""
    from transformers import LlamaModel, LlamaPreTrainedModel

    class INFORMForSequenceClassification(LlamaPreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.num_labels = config.num_labels
            self.model = LlamaModel(config)
            self.score = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(),
                                       nn.Linear(config.hidden_size, self.num_labels))
            self.post_init()

        def forward(self, input_ids):
            logits = self.score(self.model(input_ids)[0])
            last = (torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1) % input_ids.shape[-1]
            return logits[torch.arange(input_ids.shape[0]), last]

    tok = _tokenizer(chat_template=BOS_TEMPLATE)
    ref = _randomise(INFORMForSequenceClassification(_llama(tok, num_labels=1)))
    ref.save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    want = []
    for p, r in zip(PROMPTS, RESPONSES):
        conv = [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
        ids = tok.apply_chat_template(conv, tokenize=True, return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            want.append(ref(ids)[0, 0])
    rm = mmreward.load(str(tmp_path))
    assert rm.config.pooler_act == "relu"
    assert float((_scores(rm) - torch.stack(want)).abs().max()) <= 1e-5


# ------------------------------------------------------------------ UltraRM-13b / Eurus-RM-7b
def _regression_head_class(base_config, base_model):
    from transformers import PreTrainedModel

    class RewardModel(PreTrainedModel):  # the UltraRM / Eurus-RM card class (LlamaRewardModel / EurusRewardModel)
        config_class = base_config

        def __init__(self, config):
            super().__init__(config)
            self.model = base_model(config)
            self.regression_head = nn.Linear(self.config.hidden_size, 1, bias=False)

        def forward(self, input_ids, attention_mask):
            hidden_states = self.model(input_ids, attention_mask=attention_mask)[0]
            rewards = self.regression_head(hidden_states).squeeze(-1)
            ends = attention_mask.cumsum(dim=1).argmax(dim=1).view(-1, 1)
            return torch.gather(rewards, 1, ends)

    return RewardModel


def test_ultrarm_scores_as_its_card(tmp_path):
    """UltraRM-13b: LlamaModel + bias-free ``regression_head``, ``pytorch_model.bin``, the text
    "Human: {prompt}\\nAssistant: {response}" tokenised as the card does, the reward at the last token of
    the attention mask. Before: "cannot tell which reward model this is"."""
    from transformers import LlamaConfig, LlamaModel

    cls = _regression_head_class(LlamaConfig, LlamaModel)
    cls.__name__ = "LlamaRewardModel"
    tok = _tokenizer()
    ref = _randomise(cls(_llama(tok)))
    ref.save_pretrained(str(tmp_path), safe_serialization=False)
    tok.save_pretrained(str(tmp_path))
    texts = [f"Human: {p}\nAssistant: {r}" for p, r in zip(PROMPTS, RESPONSES)]
    with torch.no_grad():
        want = torch.stack([ref(**tok(t, return_tensors="pt"))[0, 0] for t in texts])
    assert mmreward.registry.detect(str(tmp_path))[0] == "headed-decoder-rm"
    rm = mmreward.load(str(tmp_path))
    assert float((_scores(rm) - want).abs().max()) <= 1e-5
    # a conversation of several turns continues the card's pattern
    conv = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    with torch.no_grad():
        one = ref(**tok("Human: a\nAssistant: b\nHuman: c\nAssistant: d", return_tensors="pt"))[0, 0]
    assert abs(float(rm.score([{"messages": conv}])[0]) - float(one)) <= 1e-5


def test_eurus_rm_scores_as_its_card_without_remote_code(tmp_path):
    """Eurus-RM-7b ships its class as remote code (auto_map): MistralModel + ``regression_head``, the text
    "[INST] {prompt} [/INST] {response}". mmreward reads it with its own modules. Before: refused."""
    from transformers import MistralConfig, MistralModel

    cls = _regression_head_class(MistralConfig, MistralModel)
    cls.__name__ = "EurusRewardModel"
    tok = _tokenizer()
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
    ref = _randomise(cls(cfg))
    ref.config.auto_map = {"AutoModel": "modeling_eurus_rm.EurusRewardModel"}
    ref.save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    texts = [f"[INST] {p} [/INST] {r}" for p, r in zip(PROMPTS, RESPONSES)]
    with torch.no_grad():
        want = torch.stack([ref(**tok(t, return_tensors="pt"))[0, 0] for t in texts])
    rm = mmreward.load(str(tmp_path))
    assert float((_scores(rm) - want).abs().max()) <= 1e-5
    # its first config.json named MistralForCausalLM without auto_map: known by its tensors, still Eurus' format
    import json
    import os

    path = os.path.join(str(tmp_path), "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.pop("auto_map")
    cfg["architectures"] = ["MistralForCausalLM"]
    with open(path, "w") as f:
        json.dump(cfg, f)
    assert float((_scores(mmreward.load(str(tmp_path))) - want).abs().max()) <= 1e-5


# ------------------------------------------------------------------ Starling-RM-34B
def _starling_class():
    from transformers import LlamaModel, LlamaPreTrainedModel

    class LlamaForSequenceClassification(LlamaPreTrainedModel):  # the Starling-RM-34B card's class
        def __init__(self, config):
            super().__init__(config)
            self.transformer = LlamaModel(config)
            self.v_head = nn.Linear(config.hidden_size, 1, bias=False)
            self.PAD_ID = 0
            self.post_init()

        def forward(self, input_ids, attention_mask):
            out = self.transformer(input_ids, attention_mask=attention_mask, output_hidden_states=True)
            rewards = self.v_head(out.hidden_states[-1]).squeeze(-1)
            scores = []
            for i in range(int(input_ids.shape[0])):
                c_inds = (input_ids[i] == self.PAD_ID).nonzero()
                c_ind = c_inds[0].item() if len(c_inds) > 0 else input_ids.shape[1]
                scores.append(rewards[i, c_ind - 1])
            return torch.stack(scores)

    return LlamaForSequenceClassification


def test_starling_rm_34b_scores_as_its_card(tmp_path):
    """Starling-RM-34B: ``transformer`` (LlamaModel) + bias-free ``v_head`` under a config that names
    LlamaForSequenceClassification; the card pads to max_length and reads the token before the first
    PAD_ID (0) of "<|im_start|>user\\n…<|im_end|>\\n<|im_start|>assistant\\n…<|im_end|>". Before: refused
    as "a classifier with 2 labels"."""
    tok = _tokenizer()
    ref = _randomise(_starling_class()(_llama(tok)))
    ref.save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    assert ref.config.architectures == ["LlamaForSequenceClassification"]
    texts = [f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n{r}<|im_end|>" for p, r in zip(PROMPTS, RESPONSES)]
    enc = tok(texts, truncation=True, max_length=64, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        want = ref(enc["input_ids"], enc["attention_mask"])
    rm = mmreward.load(str(tmp_path))
    assert float((_scores(rm) - want).abs().max()) <= 1e-5


def test_value_head_of_two_outputs_is_refused_by_name(tmp_path):
    tok = _tokenizer()
    ref = _starling_class()(_llama(tok))
    ref.v_head = nn.Linear(32, 2, bias=False)
    ref.save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    with pytest.raises(CheckpointError, match=r"v_head\.weight has shape \(2, 32\); a reward model has one output"):
        mmreward.load(str(tmp_path))


# ------------------------------------------------------------------ OpenAssistant GPTNeoXRewardModel
def test_openassistant_pythia_rm_scores_as_its_code(tmp_path):
    """OpenAssistant's oasst-rm-*-pythia-*: ``model_type`` gpt_neox_reward_model (a class of the
    Open-Assistant repository, not of transformers), ``gpt_neox`` + ``out_proj``, the last token of the
    attention mask of "<|prompter|>…<|endoftext|><|assistant|>…<|endoftext|>". Before: "cannot tell
    which reward model this is"."""
    from transformers import GPTNeoXConfig, GPTNeoXModel, GPTNeoXPreTrainedModel

    class GPTNeoXRewardModelConfig(GPTNeoXConfig):
        model_type = "gpt_neox_reward_model"

        def __init__(self, pooling="last", **kwargs):
            super().__init__(**kwargs)
            self.pooling = pooling or "last"

    class GPTNeoXRewardModel(GPTNeoXPreTrainedModel):
        config_class = GPTNeoXRewardModelConfig

        def __init__(self, config):
            super().__init__(config)
            self.gpt_neox = GPTNeoXModel(config)
            self.out_proj = nn.Linear(config.hidden_size, 1)
            self.pooling = config.pooling

        def forward(self, input_ids, attention_mask):
            hidden_states = self.gpt_neox(input_ids, attention_mask=attention_mask)[0]
            last_idx = attention_mask.cumsum(dim=1).argmax(dim=1)
            pooled = hidden_states.gather(1, last_idx.view(-1, 1, 1).expand(-1, 1, hidden_states.size(-1))).squeeze(1)
            return self.out_proj(pooled)

    tok = _tokenizer(bos=False)
    cfg = GPTNeoXRewardModelConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, max_position_embeddings=64)
    ref = _randomise(GPTNeoXRewardModel(cfg))
    ref.save_pretrained(str(tmp_path), safe_serialization=False)
    tok.save_pretrained(str(tmp_path))
    texts = [f"<|prompter|>{p}<|endoftext|><|assistant|>{r}<|endoftext|>" for p, r in zip(PROMPTS, RESPONSES)]
    with torch.no_grad():
        want = torch.stack([ref(**tok(t, return_tensors="pt"))[0, 0] for t in texts])
    rm = mmreward.load(str(tmp_path))
    assert float((_scores(rm) - want).abs().max()) <= 1e-5


def test_user_tokenizer_is_not_changed(tmp_path):
    """The card's input format is set on mmreward's copy of a tokenizer passed in, not on the caller's."""
    from transformers import LlamaConfig, LlamaModel

    tok = _tokenizer(chat_template=BOS_TEMPLATE)
    cls = _regression_head_class(LlamaConfig, LlamaModel)
    cls(_llama(tok)).save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    rm = mmreward.load(str(tmp_path), tokenizer=tok)
    assert tok.chat_template == BOS_TEMPLATE and "Human: " in rm.tokenizer.chat_template


def test_qrm_is_refused_not_read_as_armorm(tmp_path):
    """QRM-Llama3.1-8B names ArmoRM's architecture but predicts quantiles; ArmoRM's reader must not take it."""
    import json

    cfg = _llama(_tokenizer()).to_dict()
    cfg.update(architectures=["LlamaForRewardModelWithGating"], num_objectives=19, num_quantiles=19,
               loss="quantile_regression", auto_map={"AutoModelForSequenceClassification":
                                                     "modeling_custom.LlamaForRewardModelWithGating"})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"QRM quantile reward model .*num_quantiles=19.*ArmoRM"):
        mmreward.load(str(tmp_path))
