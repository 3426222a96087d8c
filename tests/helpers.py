"""Shared test helpers: assertions for op tests (tolerances from the op spec) and saved folders of older
releases."""
import os
import shutil

import torch

TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-8),
    torch.float32: dict(atol=1e-5, rtol=5e-4),
    torch.bfloat16: dict(atol=5e-3, rtol=5e-3),
    torch.float16: dict(atol=1e-3, rtol=1e-3),
}


def assert_close(actual, expected, dtype, *, scale=1.0, msg=""):
    """Compare in float64; `dtype` is the *input* dtype and picks the tolerance.
    `scale` widens tolerances for quantities accumulated over many terms."""
    tol = TOL[dtype]
    torch.testing.assert_close(
        actual.double(), expected.double(), atol=tol["atol"] * scale, rtol=tol["rtol"] * scale, msg=msg or None
    )


def device_for(backend: str) -> str:
    """The device whose tensors `backend` is tested on here: CUDA kernels on the GPU, Triton on the
    GPU when there is one (else in the interpreter, TRITON_INTERPRET=1, on CPU tensors), the C++ and
    reference ops on CPU tensors."""
    if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def to_device(tree, device):
    """Every tensor in a nested structure of lists / tuples / dicts moved to `device`. `.to()` is
    differentiable, so gradients still reach CPU leaves that require grad."""
    from torch.utils._pytree import tree_map

    return tree_map(lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, tree)


def call_on(backend: str, fn, *args, **kwargs):
    """fn(*args, **kwargs) under `backend`, on the device that backend runs on (inputs moved there,
    tensor outputs moved back to the CPU). Tests write inputs and expectations on the CPU once and
    run every backend through this, so the CUDA and Triton-on-GPU parametrisations run the same
    checks as the CPU ones."""
    from mmreward.ops import _backend

    dev = device_for(backend)
    with _backend.use_backend(backend):
        out = fn(*to_device(args, dev), **to_device(kwargs, dev))
    return to_device(out, "cpu")


def load_script(relpath: str):
    """A repository script (e.g. ``benchmarks/bench_rl_learning.py``) imported as a module, so tests
    can call its functions and ``main(argv)``."""
    import importlib.util
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    name = os.path.splitext(os.path.basename(relpath))[0]
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, relpath))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def samples_on(samples, device):
    """`[(op_name, args), ...]` opcheck samples with every tensor moved to `device` as a fresh leaf
    that keeps its requires_grad (opcheck clones inputs under no_grad, which keeps requires_grad for
    leaves only)."""
    from torch.utils._pytree import tree_map

    def leaf(x):
        return x.detach().to(device).requires_grad_(x.requires_grad) if isinstance(x, torch.Tensor) else x

    return [(name, tree_map(leaf, args)) for name, args in samples]


def word_tokenizer(words, *, model_max_length: int, chat_template=None):
    """A tiny BERT-style word-level tokenizer ("[CLS] words [SEP]", whitespace split) for text tests:
    ids 0–3 are [PAD] [UNK] [CLS] [SEP], then `words` in order (repeats ignored)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    for w in words:
        vocab.setdefault(w, len(vocab))
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                  sep_token="[SEP]", model_max_length=model_max_length)
    if chat_template:
        tok.chat_template = chat_template
    return tok


def folder_without(folder, dst, key: str) -> str:
    """A copy of a saved model folder at ``dst`` as a release before the weight ``key`` existed wrote it:
    the weight removed, no ``manifest.json`` (the mmreward 0.1 layout, which loads as it is)."""
    from mmreward.core.model import load_weights, save_weights

    weights = load_weights(str(folder), "cpu")
    del weights[key]
    shutil.copytree(folder, dst)
    os.remove(os.path.join(dst, "manifest.json"))
    save_weights(str(dst), weights)
    return str(dst)


def one_line_error(capsys) -> str:
    """The one line a CLI user error printed on stderr (asserted: one line, no traceback)."""
    err = capsys.readouterr()[1]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
