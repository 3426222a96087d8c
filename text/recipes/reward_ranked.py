"""RAFT — Reward rAnked FineTuning (Dong et al., 2023).

Each iteration: sample K responses per prompt from the policy (any Hugging Face causal LM with
``generate``), score them with any reward callable ``(prompts, responses) -> Tensor[N]`` or reward
model scoring ``TextPair`` inputs, keep the best response per prompt (or the top fraction of all
samples, 1/K by default), fine-tune the policy on the kept (prompt, response) pairs with the
supervised next-token loss on the response tokens, repeat.

    history = raft(policy, tokenizer, prompts, reward_fn, RaftConfig(output_dir="runs/raft", iterations=4))

``output_dir/raft.csv`` (+ TensorBoard) gets one row per iteration: ``mean_reward`` (all samples of
the policy before that iteration's fine-tuning), ``selected_reward`` (mean of the kept samples),
``num_selected`` and the SFT loss; a final row (``iteration = iterations``) samples once more after
the last fine-tuning, so the first and last rows compare the policy before and after RAFT. The SFT
runs on :class:`mmreward.core.trainer.Trainer` (``output_dir/iter_<t>/metrics.csv``); its snapshots
are removed after each iteration unless ``keep_snapshots``. The fine-tuned tokens are exactly the
sampled ones (no decode / re-encode round trip).
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

SELECTIONS = ("best_per_prompt", "top_fraction")


@dataclass
class RaftConfig:
    output_dir: str = field(default="runs/raft", metadata={"help": "folder for raft.csv and the per-iteration SFT logs"})
    iterations: int = field(default=3, metadata={"help": "sample → select → fine-tune rounds"})
    samples_per_prompt: int = field(default=8, metadata={"help": "K responses sampled per prompt"})
    max_new_tokens: int = field(default=64, metadata={"help": "response length limit when sampling"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    top_k: int = field(default=0, metadata={"help": "top-k sampling (0: off)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling (1: off)"})
    selection: str = field(default="best_per_prompt", metadata={"help": "best_per_prompt | top_fraction (of all samples)"})
    top_fraction: Optional[float] = field(default=None, metadata={"help": "fraction of all samples kept with selection=top_fraction (None: 1/samples_per_prompt, as RAFT's global ranking, which keeps as many samples as there are prompts)"})
    generation_batch_size: int = field(default=16, metadata={"help": "prompts per generate() call"})
    sft_steps: int = field(default=50, metadata={"help": "optimizer steps of supervised fine-tuning per iteration"})
    sft_batch_size: int = field(default=8, metadata={"help": "SFT micro-batch size"})
    lr: float = field(default=1e-5, metadata={"help": "SFT learning rate"})
    seed: int = field(default=0, metadata={"help": "seed for sampling and SFT data order"})
    tensorboard: bool = field(default=True, metadata={"help": "also log to TensorBoard"})
    progress: bool = field(default=False, metadata={"help": "progress bars for SFT"})
    keep_snapshots: bool = field(default=False, metadata={"help": "keep each iteration's SFT snapshot folder"})
    overwrite: bool = field(default=False, metadata={"help": "start again in an output_dir that holds a RAFT run: its raft.csv, tb/ and iter_<t>/ folders are removed first"})

    def __post_init__(self) -> None:
        for name in ("iterations", "samples_per_prompt", "max_new_tokens", "generation_batch_size", "sft_steps",
                     "sft_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"RaftConfig.{name} must be an integer >= 1, got {v!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"RaftConfig.selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.top_fraction is not None and (isinstance(self.top_fraction, bool)
                                              or not isinstance(self.top_fraction, (int, float))
                                              or not 0.0 < self.top_fraction <= 1.0):
            raise ValueError(f"RaftConfig.top_fraction must be a number in (0, 1] or None (1/samples_per_prompt), "
                             f"got {self.top_fraction!r}")
        if self.top_fraction is not None and self.selection != "top_fraction":  # silently unused otherwise
            raise ValueError(f"RaftConfig.top_fraction applies to selection='top_fraction' only, not "
                             f"{self.selection!r}: set selection='top_fraction' or leave top_fraction out")
        # overwrite="no" (a string) was truthy: the earlier run's folders were removed
        for name in ("tensorboard", "progress", "keep_snapshots", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"RaftConfig.{name} must be True or False, got {getattr(self, name)!r}")
        # checked here: a bad value would otherwise fail only at the first generate() / fine-tuning, after the
        # samples were drawn and scored and raft.csv was started (the folder then refuses the corrected run)
        for name, low, high in (("temperature", 0.0, math.inf), ("top_p", 0.0, 1.0), ("lr", 0.0, math.inf)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and low < v <= high):
                bound = f"in ({low:g}, {high:g}]" if math.isfinite(high) else "> 0"
                raise ValueError(f"RaftConfig.{name} must be a finite number {bound}, got {v!r}")
        for name in ("top_k", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"RaftConfig.{name} must be an integer >= 0, got {v!r}")
        if isinstance(self.output_dir, os.PathLike):
            self.output_dir = os.fspath(self.output_dir)
        if isinstance(self.output_dir, str) and self.output_dir.startswith("~"):
            self.output_dir = os.path.expanduser(self.output_dir)  # as a shell reads it (and TrainConfig does)
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise ValueError(f"RaftConfig.output_dir must be a non-empty path, got {self.output_dir!r}")


def _run_entries(folder: str) -> list[str]:
    """What a RAFT run leaves in ``folder``: raft.csv, tb/ and the iter_<t>/ SFT folders."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [n for n in names if n in ("raft.csv", "tb") or (n.startswith("iter_") and n[5:].isdigit())]


def _prepare_output(cfg: RaftConfig) -> None:
    """Refuse an output_dir holding a RAFT run (its raft.csv used to be deleted at once and the run then
    refused at the first fine-tuning), or clear it with ``overwrite``."""
    from mmreward.core.checkpoint import discard

    folder = cfg.output_dir
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"RaftConfig.output_dir {folder} is a file, not a folder")
    found = _run_entries(folder)
    if not found:
        return
    if not cfg.overwrite:
        raise ValueError(f"{folder} holds a RAFT run ({', '.join(found[:4])}{', …' if len(found) > 4 else ''}): use "
                         "another output_dir, or RaftConfig(overwrite=True) to remove it and start again")
    for name in found:
        discard(os.path.join(folder, name))


@torch.no_grad()
def sample_responses(policy: nn.Module, tokenizer: Any, prompts: Sequence[str], config: RaftConfig) -> tuple[list[list[int]], list[list[int]], list[str]]:
    """K samples per prompt: ``(prompt_ids per sample, response_ids per sample, response texts)``,
    ordered prompt-major (sample ``p * K + k`` is the k-th response to prompt p)."""
    K, device = config.samples_per_prompt, next(policy.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
    eos_id = tokenizer.eos_token_id
    was_training = policy.training
    policy.eval()
    prompt_ids, response_ids = [], []
    for s in range(0, len(prompts), config.generation_batch_size):
        chunk = list(prompts[s:s + config.generation_batch_size])
        enc = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in chunk]
        width = max(len(e) for e in enc)
        # left padding: every prompt ends at the same column, so generation continues all of them
        ids = torch.tensor([[pad_id] * (width - len(e)) + e for e in enc], device=device)  # (B, T)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc], device=device)
        out = policy.generate(input_ids=ids, attention_mask=mask, do_sample=True, num_return_sequences=K,
                              max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                              top_k=config.top_k, top_p=config.top_p, pad_token_id=pad_id,
                              eos_token_id=eos_id)  # (B*K, T + new)
        for row, seq in enumerate(out[:, width:].tolist()):
            resp = []
            for t in seq:
                resp.append(t)
                if t == eos_id:
                    break
            if eos_id is None or eos_id != pad_id:  # drop trailing pads (when pad != eos)
                while resp and resp[-1] == pad_id and resp[-1] != eos_id:
                    resp.pop()
            prompt_ids.append(enc[row // K])
            response_ids.append(resp)
    policy.train(was_training)
    texts = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
    return prompt_ids, response_ids, texts


def select_samples(rewards: torch.Tensor, num_prompts: int, config: RaftConfig) -> list[int]:
    """Indices of kept samples: the best of each prompt's K, or the global top fraction (by default 1/K of
    the P·K samples, i.e. P of them: RAFT's global ranking, whose official code sets K = 1 / fraction)."""
    K = config.samples_per_prompt
    if config.selection == "best_per_prompt":
        best = rewards.view(num_prompts, K).argmax(1)  # (P,)
        return [p * K + int(b) for p, b in enumerate(best)]
    if config.top_fraction is None:
        k = num_prompts  # exactly 1/K of the P·K samples (no float rounding)
    else:
        k = max(1, math.ceil(config.top_fraction * rewards.numel()))
    return sorted(torch.topk(rewards, k).indices.tolist())


def _sft_collate(pad_id: int) -> Callable:
    def collate(examples: list[tuple[list[int], list[int]]]) -> dict:
        seqs = [p + r for p, r in examples]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T), right padding
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (p, r) in enumerate(examples):
            n = len(p) + len(r)
            ids[i, :n] = torch.tensor(p + r)
            mask[i, :n] = 1
            labels[i, len(p):n] = torch.tensor(r)  # loss only on the response tokens
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate


def _sft_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    return out.loss, {}


def raft(policy: nn.Module, tokenizer: Any, prompts: Sequence[str], reward_fn: Any,
         config: Optional[RaftConfig] = None) -> list[dict]:
    """Run RAFT on ``policy`` in place; returns one dict per iteration (module docstring)."""
    from mmreward.text.eval.rewardbench import score_responses

    from mmreward.core.logging import MetricLogger
    from mmreward.core.trainer import TrainConfig, Trainer

    cfg = config or RaftConfig()
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("raft: prompts must be a non-empty list of strings")
    if not hasattr(policy, "generate"):
        raise TypeError(f"raft: the policy must be a Hugging Face causal LM with generate(), got {type(policy).__name__}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:  # now, before the output folder is started
        raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
    _prepare_output(cfg)
    logger = MetricLogger(cfg.output_dir, filename="raft.csv", tensorboard=cfg.tensorboard, quiet=True)
    history = []
    try:
        for it in range(cfg.iterations + 1):
            torch.manual_seed(cfg.seed * 1_000_003 + it)  # each iteration's samples are reproducible
            p_ids, r_ids, texts = sample_responses(policy, tokenizer, prompts, cfg)
            rewards = score_responses(reward_fn, [p for p in prompts for _ in range(cfg.samples_per_prompt)], texts)
            row = {"iteration": it, "mean_reward": rewards.mean().item(), "max_reward": rewards.max().item()}
            if it < cfg.iterations:  # the last round only measures the final policy
                keep = select_samples(rewards, len(prompts), cfg)
                data = [(p_ids[i], r_ids[i]) for i in keep if r_ids[i]]
                row.update(selected_reward=rewards[keep].mean().item(), num_selected=len(data))
                if data:
                    sft_dir = os.path.join(cfg.output_dir, f"iter_{it}")
                    tc = TrainConfig(output_dir=sft_dir, max_steps=cfg.sft_steps,
                                     batch_size=min(cfg.sft_batch_size, len(data)), lr=cfg.lr, seed=cfg.seed + it,
                                     progress=cfg.progress, tensorboard=cfg.tensorboard, resume=False, plot=False,
                                     log_every=0)
                    sft = Trainer(policy, tc, data, _sft_collate(pad_id), _sft_loss).fit()
                    row["sft_loss_first"], row["sft_loss_last"] = sft[0]["loss"], sft[-1]["loss"]
                    if not cfg.keep_snapshots:
                        for name in os.listdir(sft_dir):
                            if name.startswith("checkpoint-"):
                                shutil.rmtree(os.path.join(sft_dir, name), ignore_errors=True)
            logger.log(step=it, **{k: v for k, v in row.items() if k != "iteration"})
            history.append(row)
    finally:
        logger.close()
    policy.eval()
    return history
