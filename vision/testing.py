"""Test-size models and tokenizers built offline from configs (no downloads): for tests, demos and the
CLI's ``--backbone clip-tiny`` / ``--backbone tiny``. Not exported at package level:

    from mmreward.vision.testing import tiny_clip_config, word_tokenizer, tiny_processor, tiny_qwen2vl_config
"""
from __future__ import annotations

from typing import Sequence

from .vlm_data import IMAGE_TOKEN, SPECIAL_TOKENS, VIDEO_TOKEN, VISION_END, VISION_START, SimpleVLMProcessor


# ------------------------------------------------------------------ image-text dual encoders (ImageRewardModel)
def word_tokenizer(words: Sequence[str], max_length: int = 32):
    """A word-level ``PreTrainedTokenizerFast`` over ``words`` (trained in-process, no downloads) for
    tiny CLIP-style text encoders. It appends ``<eos>``, whose id is the last one, so both of CLIP's
    pooling rules (argmax id / first eos) pick it: set ``text_config.eos_token_id = len(vocab) - 1``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1}
    for w in words:
        vocab.setdefault(w.lower(), len(vocab))
    vocab["<eos>"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", vocab["<eos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>",
                                   model_max_length=max_length)


def tiny_clip_config(vocab_size: int, width: int = 32, image_size: int = 32, patch_size: int = 8, layers: int = 2):
    """A small random CLIPConfig for a :func:`word_tokenizer` vocabulary (eos = the last id)."""
    from transformers import CLIPConfig

    heads = max(1, width // 16)
    text = dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                num_attention_heads=heads, max_position_embeddings=32, eos_token_id=vocab_size - 1,
                bos_token_id=vocab_size - 1, pad_token_id=0)
    vision = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=heads,
                  image_size=image_size, patch_size=patch_size)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=width)


# ------------------------------------------------------------------ VLMs (VLMRewardModel, VisualPRM)
def tiny_processor(words: Sequence[str], image_size: int = 56) -> SimpleVLMProcessor:
    """Word-level tokenizer over ``words`` + ChatML / vision specials, and a Qwen2-VL image processor
    resizing to about ``image_size``² pixels (patch 14, merge 2) — for tests and demos."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    base = ["user", "assistant", "system", "+", "-", "<", ">", "/", "think", "answer", "0", "1", "2", "3", "4", "5"]
    tok.train_from_iterator([" ".join(base + list(words))], trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", unk_token="[UNK]")
    fast.padding_side = "right"
    px = image_size * image_size
    ip = Qwen2VLImageProcessorPil(min_pixels=px, max_pixels=px, patch_size=14, merge_size=2, temporal_patch_size=2)
    return SimpleVLMProcessor(fast, ip)


def tiny_qwen2vl_config(processor, hidden: int = 32, layers: int = 2, heads: int = 4, vision_dim: int = 32):
    """A few-ten-thousand-parameter ``Qwen2VLConfig`` matching ``processor``'s vocabulary."""
    from transformers import Qwen2VLConfig

    tok = processor.tokenizer
    head_dim = hidden // heads
    q = head_dim // 2  # M-RoPE splits head_dim / 2 rotary frequencies over (t, h, w)
    section = [q - 2 * (q // 3), q // 3, q // 3]
    return Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=1024,
                         rope_scaling={"type": "mrope", "mrope_section": section}, bos_token_id=None, eos_token_id=None,
                         pad_token_id=tok.pad_token_id),
        vision_config=dict(depth=1, embed_dim=vision_dim, hidden_size=hidden, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN), video_token_id=tok.convert_tokens_to_ids(VIDEO_TOKEN),
        vision_start_token_id=tok.convert_tokens_to_ids(VISION_START), vision_end_token_id=tok.convert_tokens_to_ids(VISION_END),
    )
