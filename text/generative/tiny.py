"""Tiny chat LMs for tests and examples: a word-level tokenizer trained in-process with a chat
template, and a small ``LlamaForCausalLM`` built from a config (no downloads)."""
from __future__ import annotations

from typing import Iterable

SPECIALS = ["<pad>", "<unk>", "<eos>", "<system>", "<user>", "<assistant>"]
# role tags as tokens; each message ends with <eos> so generation stops at the end of the reply
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


def word_tokenizer(corpus: Iterable[str], extra: Iterable[str] = ()):
    """A ``PreTrainedTokenizerFast`` (WordLevel over whitespace/punctuation splits) covering ``corpus``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    words: dict[str, int] = {t: i for i, t in enumerate(SPECIALS)}
    for text in list(corpus) + list(extra):
        for w, _ in pre.pre_tokenize_str(text):
            words.setdefault(w, len(words))
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.add_special_tokens(SPECIALS)  # role tags stay whole (not split at "<" ">")
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama(vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0,
               max_positions: int = 256, eos_token_id: int = 2, pad_token_id: int = 0):
    """A randomly initialised ``LlamaForCausalLM`` (seeded) with untied embeddings."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max_positions, eos_token_id=eos_token_id,
                      pad_token_id=pad_token_id, bos_token_id=None, tie_word_embeddings=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg)
