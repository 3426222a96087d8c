"""Published models that exist only as Python code inside their checkpoints. Their ``config.json``
maps the architecture to modules of the checkpoint (``auto_map``) that transformers imports only with
``trust_remote_code=True``; loading one means running code that came with the weights, which
mmreward never does. The ones mmreward reads with its own modules (ArmoRM, Qwen2.5-Math-PRM, …) are
recognised by earlier layouts; every other ``auto_map`` folder ends here, so that ``mmreward.load``
says why instead of "unknown model".
"""
from __future__ import annotations

import json
from typing import Any, NoReturn, Optional

from .folders import CheckpointError

# architectures users are likely to bring, with what they are
REMOTE_CODE_MODELS = {
    "InternLM2ForRewardModel": "an InternLM2 reward model (internlm/internlm2-*-reward)",
    "InternVLChatModel": "VisualPRM-8B (OpenGVLab; an InternVL2.5 chat model whose PRM head is its LM head "
                         "reading '+' / '-' after each step)",
    "InternLMXComposer2ForRewardModel": "InternLM-XComposer2.5-Reward (internlm/internlm-xcomposer2d5-7b-reward)",
}


def is_remote_code(folder: str, config: Optional[dict]) -> bool:
    return isinstance((config or {}).get("auto_map"), dict)


def refuse_remote_code(folder: str, *, device: Any = None, dtype: Any = None, **_: Any) -> NoReturn:
    """Always raises: see the module docstring."""
    from .model import read_config

    config = read_config(folder)
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    arch = next((a for a in archs if a in REMOTE_CODE_MODELS), archs[0] if archs else "its model")
    what = f"{arch}: {REMOTE_CODE_MODELS[arch]}" if arch in REMOTE_CODE_MODELS else arch
    raise CheckpointError(
        f"{folder} holds {what}. Its model code ships inside the checkpoint (auto_map "
        f"{json.dumps(config.get('auto_map'))[:120]}) and mmreward has no reader of its own for it, so it loads only "
        "with trust_remote_code; mmreward does not run code from checkpoints. Score it with its own repository's code.")


__all__ = ["REMOTE_CODE_MODELS", "is_remote_code", "refuse_remote_code"]
