"""Throughput of the image scorer: scoring through the model contract (``score`` on ImagePrompt
inputs, no grad), one listwise training step, and a video (``score`` on a VideoPrompt of ``--batch``
frames), for the built-in conv backbone and a tiny random CLIP, on synthetic 32 px shapes.

    .venv/bin/python benchmarks/bench_image_reward.py [--threads 1] [--batch 64] [--device cpu]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeat


def main() -> None:
    from mmreward.core.device import resolve_device
    from mmreward.core.inputs import ImagePrompt, VideoPrompt
    from mmreward.vision import synthetic
    from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel
    from mmreward.vision.testing import tiny_clip_config, word_tokenizer
    from mmreward.vision.train import make_collate, ranked_loss, synthetic_examples

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64, help="images per scoring call (sets of 4 for training)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    words = synthetic.vocabulary()
    tok = word_tokenizer(words)
    models = {
        "conv (embed 32)": ImageRewardModel.from_backbone(ConvTextConfig(vocab=words, embed_dim=32)),
        "tiny CLIP (2 layers, width 32)": ImageRewardModel.from_backbone(tiny_clip_config(len(tok)), tokenizer=tok),
    }
    examples = synthetic_examples(args.batch // 4, 4, 32, 0)
    items = [ImagePrompt(e.prompt, img) for e in examples for img in e.images]  # uint8 [32, 32, 3] each
    video = [VideoPrompt(examples[0].prompt, np.concatenate([e.images for e in examples]))]  # (T, 32, 32, 3)
    print(f"device {device}, {args.threads} thread(s), batch {len(items)} images of 32 px")
    for name, model in models.items():
        model.to(device)
        n_params = sum(p.numel() for p in model.parameters())
        bs = len(items)
        t_score = timed(lambda m=model: m.score(items, batch_size=bs), args.repeat)
        t_video = timed(lambda m=model: m.score(video, batch_size=bs), args.repeat)
        model.train()
        batch = make_collate(model)(examples)
        batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        loss_fn = ranked_loss("listwise")

        def step(model=model, batch=batch, loss_fn=loss_fn):
            loss, _ = loss_fn(model, batch)
            loss.backward()

        t_step = timed(step, args.repeat)
        print(f"{name:<32} {n_params / 1e6:5.2f} M params | score {len(items) / t_score:8.0f} img/s | "
              f"video {len(items) / t_video:8.0f} frames/s | train step {t_step * 1e3:7.1f} ms "
              f"({len(examples)} sets x 4)")


if __name__ == "__main__":
    main()
