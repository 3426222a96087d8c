"""Published VLM reward models that exist only as Python code inside their checkpoints. Their
``config.json`` maps the architecture to modules of the checkpoint (``auto_map``) that transformers
imports only with ``trust_remote_code=True``; transformers has no class of its own for them, so
loading one means running code that came with the weights, which mmreward never does. They are
recognised so that ``mmreward.load`` says why instead of "unknown model".
"""
from __future__ import annotations

from typing import Any, NoReturn, Optional

from mmreward.core.folders import CheckpointError

REMOTE_CODE_MODELS = {
    "InternVLChatModel": "VisualPRM-8B (OpenGVLab; an InternVL2.5 chat model whose PRM head is its LM head "
                         "reading '+' / '-' after each step)",
    "InternLMXComposer2ForRewardModel": "InternLM-XComposer2.5-Reward (internlm/internlm-xcomposer2d5-7b-reward)",
}


def _remote_architecture(config: Optional[dict]) -> Optional[str]:
    config = config or {}
    if not isinstance(config.get("auto_map"), dict):
        return None
    archs = config.get("architectures") or []
    return next((a for a in archs if a in REMOTE_CODE_MODELS), None)


def is_remote_code_vlm(folder: str, config: Optional[dict]) -> bool:
    return _remote_architecture(config) is not None


def refuse_remote_code_vlm(folder: str, *, device: Any = None, dtype: Any = None, **_: Any) -> NoReturn:
    """Always raises: see the module docstring."""
    import json

    from mmreward.core.model import read_config

    config = read_config(folder)
    arch = _remote_architecture(config)
    raise CheckpointError(
        f"{folder} holds {arch}: {REMOTE_CODE_MODELS[arch]}. Its model code ships inside the checkpoint (auto_map "
        f"{json.dumps(config.get('auto_map'))[:120]}) and transformers has no class for it, so it loads only with "
        "trust_remote_code; mmreward does not run code from checkpoints. Score it with its own repository's code.")


__all__ = ["REMOTE_CODE_MODELS", "is_remote_code_vlm", "refuse_remote_code_vlm"]
