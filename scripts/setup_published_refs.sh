#!/usr/bin/env bash
# The side environment the published-model parity tests and benchmark compare against: the OFFICIAL
# code of ImageReward, HPSv2, PickScore / CLIP score (transformers + torchmetrics), Skywork-VL-Reward
# (transformers 4.51 + trl 0.16 + qwen-vl-utils), pinned as those models were released, installed
# with --no-deps into a folder of its own (default: <venv>/published-ref). It is put on PYTHONPATH
# only by tests/vision/published_reference.py, never beside mmreward: its transformers 4.51 and the
# torchvision wheel (whose compiled ops do not load beside the CPU torch) would break the main venv.
#   MMREWARD_VENV=path              venv whose python runs the reference (default: .venv)
#   MMREWARD_PUBLISHED_REF=path     where to install it (default: $MMREWARD_VENV/published-ref)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MMREWARD_VENV:-.venv}
TARGET=${MMREWARD_PUBLISHED_REF:-$VENV/published-ref}
PIN=(
  "transformers==4.51.3" "tokenizers==0.21.1" "huggingface_hub==0.30.2"  # the Qwen2.5-VL / BLIP era
  "trl==0.16.1"                   # AutoModelForCausalLMWithValueHead (Skywork-VL-Reward's model card)
  "qwen-vl-utils==0.0.14"         # process_vision_info
  "image-reward==1.5" "timm==1.0.31" "fairscale==0.4.13"   # ImageReward (BLIP ViT from timm)
  "hpsv2x==1.2.0" "clint==0.5.1" "args==0.1.0"             # HPSv2 (hpsv2x ships the BPE vocab hpsv2 lacks)
  "torchmetrics==1.7.4" "lightning-utilities==0.14.3"      # CLIP score
  "ftfy==6.3.1" "wcwidth==0.2.13"                          # open_clip's tokenizer
  "torchvision==0.28.0"           # its pure-Python transforms; the runner never calls a compiled op
)
"$VENV/bin/python" -m pip --disable-pip-version-check -q install --no-deps --no-compile --upgrade \
  --target "$TARGET" "${PIN[@]}"
echo "[published-ref] installed into $TARGET"
