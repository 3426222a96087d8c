"""The masked next-token loss shared by the judge trainers: an unknown reduction is an error."""
import pytest
import torch

pytest.importorskip("transformers", reason="the generative judges need transformers")
from mmreward.text.generative.sft import lm_loss, sft_batch  # noqa: E402
from mmreward.text.generative.tiny import tiny_llama, word_tokenizer  # noqa: E402


def test_lm_loss_refuses_an_unknown_reduction():
    """reduction="sum" (or a typo) used to return the mean without a word."""
    tok = word_tokenizer(["the cat sat on a mat"])
    model = tiny_llama(len(tok), hidden=32, layers=1, heads=2)
    batch = sft_batch(tok, [[{"role": "user", "content": "the cat"}]] * 2, ["a mat", "the mat"])
    mean, rows = lm_loss(model, batch), lm_loss(model, batch, reduction="none")
    assert rows.shape == (2,) and torch.isfinite(mean)
    for bad in ("sum", "Mean", None):
        with pytest.raises(ValueError, match=f"reduction must be 'mean' or 'none', got {bad!r}"):
            lm_loss(model, batch, reduction=bad)
