"""Tiny backbones, word-level tokenizers and folder writers for the text reward-model tests."""
import json
import os

import torch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<s>", "</s>"]  # ids 0-5
WORDS = ("user assistant system what is the answer to two plus three five six seven a b c d e f g h say "
         "<|im_start|> <|im_end|>").split()
# a ChatML-style template (Qwen / Skywork-Reward-V2) and a Llama-style one with a BOS string
CHATML = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}")
BOS_TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['role'] }} {{ m['content'] }} </s> {% endfor %}"


def word_tokenizer(*, pair=False, types=True, chat_template=None, bos=False, model_max_length=64, words=WORDS):
    """Whitespace word-level tokenizer. ``pair``: BERT layout, ``[CLS] a [SEP]`` / ``[CLS] a [SEP] b [SEP]``
    (with token type ids unless ``types=False``); ``bos``: Llama layout, ``<s> a`` (no pair template);
    otherwise ``[CLS] a [SEP]``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos:
        t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 4)])
    else:
        t.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1" if pair else None,
            special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    kw = dict(model_input_names=["input_ids", "token_type_ids", "attention_mask"]) if pair and types else {}
    extra = dict(bos_token="<s>", eos_token="</s>") if bos else dict(cls_token="[CLS]", sep_token="[SEP]")
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="[PAD]", unk_token="[UNK]",
                                  model_max_length=model_max_length, **extra, **kw)
    if chat_template:
        tok.chat_template = chat_template
    return tok


def vocab_size():
    return len(SPECIALS) + len(WORDS)


def bert_config(**kw):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=64, **kw)


def llama_config(**kw):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, **kw)


def qwen2_config(**kw):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, **kw)


def deberta_v2_config(**kw):
    from transformers import DebertaV2Config

    return DebertaV2Config(vocab_size=vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=64, type_vocab_size=0,
                           relative_attention=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
                           pooler_hidden_act="gelu", **kw)


def roberta_config(**kw):
    from transformers import RobertaConfig

    return RobertaConfig(vocab_size=vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=70, pad_token_id=0, **kw)


def electra_config(**kw):
    from transformers import ElectraConfig

    return ElectraConfig(vocab_size=vocab_size(), embedding_size=16, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, **kw)


def xlm_roberta_config(**kw):
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(vocab_size=vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=70, pad_token_id=0, **kw)


def distilbert_config(**kw):
    from transformers import DistilBertConfig

    return DistilBertConfig(vocab_size=vocab_size(), dim=32, hidden_dim=64, n_layers=2, n_heads=4,
                            max_position_embeddings=64, pad_token_id=0, **kw)


def mpnet_config(**kw):
    from transformers import MPNetConfig

    return MPNetConfig(vocab_size=vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=70, pad_token_id=0, **kw)


def save_classifier(folder, config, tokenizer, seed=1):
    """A one-label ``AutoModelForSequenceClassification`` with random weights, saved as transformers saves it."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    config.num_labels = 1
    config.initializer_range = 0.3  # large random weights: the scores of different inputs differ clearly
    seq = AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():  # non-zero biases, so a head that drops them is caught
        for name, p in seq.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    seq.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return seq


def classifier_logits(model, rm, rows):
    """A transformers / peft classifier's ``logits[:, 0]`` on exactly the token ids mmreward's reward model ``rm``
    feeds, one row at a time (the reference a loaded folder's scores are compared with)."""
    out = []
    with torch.no_grad():
        for enc in rm.encode(rows):
            batch = {"input_ids": torch.tensor([enc.ids])}
            if enc.types is not None:
                batch["token_type_ids"] = torch.tensor([enc.types])
            out.append(model(**batch).logits[0, 0].float())
    return torch.stack(out)


def save_legacy_folder(folder, model):
    """The folder layout of mmreward 0.1: backbone config.json, model.safetensors (backbone.* + head.*),
    tokenizer files and mmreward_reward_model.json with the weights' byte size."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    model.backbone.config.save_pretrained(str(folder))
    model.tokenizer.save_pretrained(str(folder))
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    meta = {"model_type": "mmreward_reward_model", "format_version": 1,
            "weights_bytes": os.path.getsize(os.path.join(folder, "model.safetensors")),
            "hidden_size": model.head.in_features, "backbone_class": type(model.backbone).__name__}
    with open(os.path.join(folder, "mmreward_reward_model.json"), "w") as f:
        json.dump(meta, f)


def save_tiny_rm(folder) -> str:
    """A tiny Llama text RM (word tokenizer, max_length 64), drawn from seed 0 and saved in ``folder``."""
    from mmreward.text import RewardModel

    torch.manual_seed(0)
    RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer()).save_pretrained(str(folder))
    return str(folder)


def write_jsonl(path, rows) -> str:
    """``rows`` as JSON lines in ``path``; returns the path as a string."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def count_score_calls(monkeypatch) -> list:
    """The number of inputs of each call of the text RM's ``_score`` (appended as the calls come)."""
    from mmreward.text import RewardModel

    seen, real = [], RewardModel._score

    def counted(self, items, batch_size, progress=False):
        seen.append(len(items))
        return real(self, items, batch_size, progress)

    monkeypatch.setattr(RewardModel, "_score", counted)
    return seen


def peak_memory_of_command(run) -> int:
    """Peak Python memory (tracemalloc) while ``run()`` (a CLI call) runs; it must return exit status 0."""
    import tracemalloc

    tracemalloc.start()
    try:
        assert run() == 0
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def stop_text_scoring_at(monkeypatch, calls: list, at: int = 2):
    """``RewardModel._score`` raising KeyboardInterrupt (a Ctrl-C) once ``calls`` (from :func:`count_score_calls`)
    holds ``at`` entries: a run stopped in a later chunk. Returns the unpatched method to put back."""
    from mmreward.text import RewardModel

    real = RewardModel._score

    def stopped(self, items, batch_size, progress=False):
        if len(calls) == at:
            raise KeyboardInterrupt
        return real(self, items, batch_size, progress)

    monkeypatch.setattr(RewardModel, "_score", stopped)
    return real

