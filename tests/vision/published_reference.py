"""Reference side of the published-model parity tests: builds tiny random-weight checkpoints with the
OFFICIAL code of each model, saves them the way that code saves them, and scores inputs with that
code. It never imports mmreward.

    python tests/vision/published_reference.py TASK ARGS.json     # writes ARGS["out"] (JSON)

It runs in the side environment ``scripts/setup_published_refs.sh`` installs (``PYTHONPATH`` = that
folder: transformers 4.51 as the models were released with, trl 0.16, qwen-vl-utils, image-reward,
hpsv2x, timm, fairscale, torchmetrics and torchvision 0.28). Two shims, both outside the code under
test:

* torchvision's wheel pairs with the CUDA torch; beside the CPU torch its compiled ops do not load and
  ``import torchvision`` fails registering ``torchvision::nms``. Defining the two operator schemas
  first lets its pure-Python part (the transforms the official preprocessing uses) import; no
  compiled torchvision op runs here.
* ``ImageReward/__init__.py`` and ``hpsv2/__init__.py`` import packages the scoring code never uses
  (OpenAI ``clip``, ``clint``); their submodules are imported under empty parent packages. decord
  (qwen-vl-utils' video reader) is replaced by the same frames read with OpenCV.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
import types

import numpy as np
import torch


def _torchvision_python_only() -> None:
    lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 - kept alive by torch's registry
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    globals()["_TV_LIB"] = lib


def _bare_packages(top: str, subpackages: tuple[str, ...]) -> None:
    """Import ``top``'s submodules without running its package ``__init__`` files."""
    root = importlib.util.find_spec(top).submodule_search_locations[0]
    for sub in ("",) + subpackages:
        name = top + (f".{sub.replace('/', '.')}" if sub else "")
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(root, sub)]
        sys.modules[name] = pkg


def _opencv_decord() -> None:
    """A ``decord`` with the VideoReader calls qwen-vl-utils makes, reading frames with OpenCV."""
    import cv2

    class VideoReader:
        def __init__(self, path):
            cap = cv2.VideoCapture(path)
            self.fps, frames = cap.get(cv2.CAP_PROP_FPS), []
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            cap.release()
            self.frames = np.stack(frames)

        def __len__(self):
            return len(self.frames)

        def get_avg_fps(self):
            return self.fps

        def get_batch(self, idx):
            return types.SimpleNamespace(asnumpy=lambda: self.frames[list(idx)])

    decord = types.ModuleType("decord")
    decord.__spec__ = importlib.machinery.ModuleSpec("decord", None)
    decord.VideoReader = VideoReader
    sys.modules["decord"] = decord
    os.environ["FORCE_QWENVL_VIDEO_READER"] = "decord"


def _throughput(args: dict, score_all) -> dict:
    """``{"official_items_per_s": …}`` of ``score_all(paths)`` on ``args["bench"]`` images, the best of
    ``args["repeat"]`` runs after a warm-up call, when the benchmark asks for it."""
    import time

    bench = args.get("bench")
    if not bench:
        return {}
    best = float("inf")
    with torch.no_grad():
        score_all(bench[:2])
        for _ in range(args.get("repeat", 1)):
            start = time.perf_counter()
            score_all(bench)
            best = min(best, time.perf_counter() - start)
    return {"official_items_per_s": len(bench) / best}


# ------------------------------------------------------------------ tokenizers
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>"]
QWEN_CHAT_TEMPLATE = (  # Qwen2-VL-7B-Instruct / Qwen2.5-VL-7B-Instruct chat_template.json
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}")
CORPUS = ("You are a helpful assistant. system user assistant What colour is the square? The answer is red blue "
          "green. Describe the image in detail. a photo of a cat on the left, two dogs playing piano 0123456789")


def qwen_tokenizer():
    """A byte-level BPE tokenizer with Qwen's special tokens (any text encodes, no unknown tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([CORPUS] * 4, trainer)
    return Qwen2TokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              unk_token=None)


def bert_vocab(folder: str) -> str:
    words = sorted(set(CORPUS.lower().replace(",", " ").replace(".", " ").replace("?", " ").split()))
    path = os.path.join(folder, "vocab.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", "?"] + words) + "\n")
    return path


def clip_bpe_files(folder: str) -> None:
    """vocab.json + merges.txt of the CLIP BPE from the bpe_simple_vocab_16e6.txt.gz open_clip ships."""
    import gzip

    from hpsv2.src.open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({v: i for i, v in enumerate(vocab)}, f)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


# ------------------------------------------------------------------ Qwen2-VL / Qwen2.5-VL + value head (Skywork-VL-Reward)
def _mrope_section(head_dim: int) -> list[int]:
    """M-RoPE splits head_dim / 2 rotary frequencies over (time, height, width)."""
    q = head_dim // 2
    return [q - 2 * (q // 3), q // 3, q // 3]


def qwen_vl(args: dict) -> dict:
    """Save a tiny Qwen-VL + TRL value head as Skywork-VL-Reward ships (save_pretrained folder +
    value_head.safetensors) and score conversations with the model card's get_reward."""
    _opencv_decord()
    from qwen_vl_utils import process_vision_info
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import AutoProcessor, Qwen2VLImageProcessor
    from trl import AutoModelForCausalLMWithValueHead

    folder, flavour = args["folder"], args["flavour"]
    torch.manual_seed(0)
    tokenizer = qwen_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    width = args.get("width", 32)
    common = dict(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                  rope_scaling={"type": "mrope", "mrope_section": _mrope_section(width // 4)},
                  image_token_id=ids["<|image_pad|>"],
                  video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                  vision_end_token_id=ids["<|vision_end|>"], eos_token_id=ids["<|im_end|>"],
                  pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=False)
    if flavour == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig as Config, Qwen2_5_VLForConditionalGeneration as Model
        from transformers import Qwen2_5_VLProcessor as Processor
        vision = dict(depth=2, hidden_size=width, intermediate_size=2 * width, num_heads=2, out_hidden_size=width,
                      patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
        config = Config(vision_config=vision, tokens_per_second=2, **common)
    else:
        from transformers import Qwen2VLConfig as Config, Qwen2VLForConditionalGeneration as Model
        from transformers import Qwen2VLProcessor as Processor
        vision = dict(depth=2, embed_dim=width, hidden_size=width, num_heads=2, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
        config = Config(vision_config=vision, **common)
    model = Model(config).eval()
    image_processor = Qwen2VLImageProcessor(min_pixels=args.get("min_pixels", 56 * 56),
                                            max_pixels=args.get("max_pixels", 28 * 28 * 64))
    Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN_CHAT_TEMPLATE).save_pretrained(folder)
    model.save_pretrained(folder)
    rm = AutoModelForCausalLMWithValueHead.from_pretrained(model)
    torch.nn.init.normal_(rm.v_head.summary.weight, std=0.5)
    save_file({k: v.contiguous() for k, v in rm.state_dict().items() if k.startswith("v_head.")},
              os.path.join(folder, "value_head.safetensors"))

    # ---- the model card's inference code, verbatim but for the local folder
    processor = AutoProcessor.from_pretrained(folder)
    model = Model.from_pretrained(folder)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(model)
    with safe_open(os.path.join(folder, "value_head.safetensors"), framework="pt", device="cpu") as f:
        vhead_params = {key: f.get_tensor(key) for key in f.keys()}
    model.load_state_dict(vhead_params, strict=False)
    model.requires_grad_(False)
    model.eval()

    def get_reward(messages):
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        image_inputs, video_inputs = process_vision_info(messages)
        inputs = processor(text=[text], images=image_inputs, videos=video_inputs, padding=True, return_tensors="pt")
        values = model(**inputs, return_dict=True, use_cache=False)[-1]
        scores = values.gather(dim=-1, index=(inputs["attention_mask"].sum(dim=-1, keepdim=True) - 1))
        return scores[0].item(), inputs

    rewards, encoded = [], []
    for messages in args["conversations"]:
        reward, inputs = get_reward(messages)
        rewards.append(reward)
        encoded.append({k: v.tolist() for k, v in inputs.items() if k in ("input_ids", "image_grid_thw", "video_grid_thw")})
        for k in ("pixel_values", "pixel_values_videos"):
            if k in inputs:
                encoded[-1][k + "_sum"] = float(inputs[k].double().sum())
                encoded[-1][k + "_abs_sum"] = float(inputs[k].double().abs().sum())
    answer = lambda im: [{"role": "user", "content": "a photo of a cat"},  # noqa: E731
                         {"role": "assistant", "content": [{"type": "image", "image": im}]}]
    timing = _throughput(args, lambda paths: [get_reward(answer(p)) for p in paths])
    return {"rewards": rewards, "encoded": encoded, **timing}


# ------------------------------------------------------------------ ImageReward v1.0 (BLIP)
def imagereward(args: dict) -> dict:
    """A tiny ImageReward from the official modules (BLIP ViT, med.py BERT, MLP), saved as
    ImageReward.pt (its state dict) + med_config.json + the BERT tokenizer; scored with the official
    ImageReward.score and inference_rank."""
    from PIL import Image

    _bare_packages("ImageReward", ("models", "models/BLIP"))
    import ImageReward.models.BLIP.blip as blip
    from ImageReward.ImageReward import MLP, ImageReward, _transform
    from ImageReward.models.BLIP.med import BertConfig, BertModel
    from ImageReward.models.BLIP.vit import VisionTransformer
    from transformers import BertTokenizer

    folder = args["folder"]
    os.makedirs(folder, exist_ok=True)
    bert_vocab(folder)
    blip.BertTokenizer = types.SimpleNamespace(from_pretrained=lambda _: BertTokenizer.from_pretrained(folder))
    tokenizer = blip.init_tokenizer()  # bert-base-uncased + [DEC] + [ENC], as BLIP builds it
    text_width, vit_width, depth = args.get("text_width", 32), args.get("vit_width", 64), args.get("depth", 2)
    med = dict(architectures=["BertModel"], attention_probs_dropout_prob=0.1, hidden_act="gelu",
               hidden_dropout_prob=0.1, hidden_size=text_width, initializer_range=0.02, intermediate_size=2 * text_width,
               layer_norm_eps=1e-12, max_position_embeddings=64, model_type="bert", num_attention_heads=2,
               num_hidden_layers=depth, pad_token_id=0, type_vocab_size=2, vocab_size=len(tokenizer),
               encoder_width=vit_width, add_cross_attention=True)
    with open(os.path.join(folder, "med_config.json"), "w") as f:
        json.dump(med, f, indent=2)
    torch.manual_seed(0)
    config = BertConfig.from_json_file(os.path.join(folder, "med_config.json"))
    config.encoder_width = vit_width
    model = ImageReward.__new__(ImageReward)
    torch.nn.Module.__init__(model)
    model.device = "cpu"
    model.blip = torch.nn.Module()
    model.blip.visual_encoder = VisionTransformer(img_size=args["image_size"], patch_size=16, embed_dim=vit_width,
                                                  depth=depth, num_heads=vit_width // 64)
    model.blip.tokenizer = tokenizer
    model.blip.text_encoder = BertModel(config=config, add_pooling_layer=False)
    model.blip.vision_proj, model.blip.text_proj = torch.nn.Linear(vit_width, 16), torch.nn.Linear(text_width, 16)
    model.preprocess = _transform(args["image_size"])
    model.mlp = MLP(text_width)
    model.mean, model.std = 0.16717362830052426, 1.0333394966054072
    for p in model.parameters():  # random non-zero weights everywhere (MLP / LayerNorm defaults are degenerate)
        torch.nn.init.normal_(p, std=0.2)
    model.eval()
    torch.save(model.state_dict(), os.path.join(folder, "ImageReward.pt"))
    with torch.no_grad():
        scores = [[model.score(prompt, Image.open(path)) for path in args["images"]] for prompt in args["prompts"]]
        _, ranked = model.inference_rank(args["prompts"][0], args["images"])
    timing = _throughput(args, lambda paths: [model.score(args["prompts"][0], Image.open(p)) for p in paths])
    return {"scores": scores, "rank_scores": ranked, **timing}


# ------------------------------------------------------------------ HPSv2 (open_clip ViT-H-14, light augmentation)
def hpsv2(args: dict) -> dict:
    """A tiny open_clip CLIP built by HPSv2's own factory, saved as HPS_v2_compressed.pt
    ({"state_dict": ...}) + open_clip_config.json; scored with hpsv2.img_score.score."""
    from PIL import Image

    _bare_packages("hpsv2", ())
    from hpsv2 import img_score
    from hpsv2.src.open_clip import factory
    from hpsv2.src.open_clip.tokenizer import default_bpe

    folder = args["folder"]
    os.makedirs(folder, exist_ok=True)
    width, depth = args.get("width", 64), args.get("depth", 2)
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": args["image_size"], "layers": depth, "width": width,
                                           "head_width": 32, "patch_size": args.get("patch_size", 8)},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 2, "layers": depth}}
    factory._MODEL_CONFIGS["tiny-hps"] = cfg
    torch.manual_seed(0)
    model, _, preprocess_val = factory.create_model_and_transforms(
        "tiny-hps", None, precision="fp32", device="cpu", jit=False, force_quick_gelu=False, force_custom_text=False,
        force_patch_dropout=False, force_image_size=None, pretrained_image=False, image_mean=None, image_std=None,
        light_augmentation=True, aug_cfg={}, output_dict=True, with_score_predictor=False, with_region_predictor=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1 and "embedding" not in name:
                p.normal_(std=0.1)
    state = {k: v.half() if args.get("fp16") else v for k, v in model.state_dict().items()}
    torch.save({"iterations": 1, "name": "tiny", "state_dict": state}, os.path.join(folder, args["checkpoint"]))
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": cfg, "preprocess_cfg": {}}, f)
    if args.get("with_bpe", True):
        import shutil

        shutil.copy(default_bpe(), os.path.join(folder, "bpe_simple_vocab_16e6.txt.gz"))
    if args.get("fp16"):
        model.load_state_dict({k: v.float() for k, v in state.items()})
    img_score.model_dict.update(model=model, preprocess_val=preprocess_val)  # initialize_model() keeps ours
    scores = [[float(s) for s in img_score.score(args["images"], p, cp=os.path.join(folder, args["checkpoint"]))]
              for p in args["prompts"]]
    tokenizer = img_score.get_tokenizer("ViT-H-14")

    def loop(paths):  # img_score.score's per-image body, without re-reading the checkpoint on every call
        for path in paths:
            image = preprocess_val(Image.open(path)).unsqueeze(0)
            out = model(image, tokenizer([args["prompts"][0]]))
            torch.diagonal(out["image_features"] @ out["text_features"].T)

    return {"scores": scores, **_throughput(args, loop)}


# ------------------------------------------------------------------ PickScore / CLIP score (transformers CLIPModel)
def clip(args: dict) -> dict:
    """A tiny CLIPModel + CLIPProcessor saved with save_pretrained; scored with PickScore's README code
    and torchmetrics' clip_score."""
    from PIL import Image
    from torchmetrics.functional.multimodal import clip_score
    from transformers import (AutoModel, AutoProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor,
                              CLIPTokenizer)

    folder = args["folder"]
    os.makedirs(folder, exist_ok=True)
    _bare_packages("hpsv2", ())
    clip_bpe_files(folder)
    torch.manual_seed(0)
    width, depth = args.get("width", 64), args.get("depth", 2)
    config = CLIPConfig(text_config=dict(vocab_size=49408, hidden_size=48, intermediate_size=96, num_hidden_layers=depth,
                                         num_attention_heads=2, max_position_embeddings=77, hidden_act="gelu"),
                        vision_config=dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=depth,
                                           num_attention_heads=2, image_size=args["image_size"],
                                           patch_size=args.get("patch_size", 8), hidden_act="gelu"),
                        projection_dim=32, logit_scale_init_value=4.0)
    model = CLIPModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(args.get("logit_scale", 4.0))
        if args.get("aligned"):  # a shared direction in both towers: positive cosines (CLIP score unclamped)
            for ln in (model.text_model.final_layer_norm, model.vision_model.post_layernorm):
                ln.bias.fill_(1.0)
            for proj in (model.text_projection, model.visual_projection):
                proj.weight.add_(0.1)
    model.save_pretrained(folder)
    size = args["image_size"]
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
                  tokenizer=CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"))
                  ).save_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    images = [Image.open(p) for p in args["images"]]
    pick, clipscore = [], []
    for prompt in args["prompts"]:
        # PickScore README: calc_probs
        image_inputs = processor(images=images, padding=True, truncation=True, max_length=77, return_tensors="pt")
        text_inputs = processor(text=prompt, padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            image_embs = model.get_image_features(**image_inputs)
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = model.get_text_features(**text_inputs)
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            pick.append((model.logit_scale.exp() * (text_embs @ image_embs.T)[0]).tolist())
            clipscore.append([float(clip_score(torch.from_numpy(np.asarray(im.convert("RGB"))).permute(2, 0, 1), prompt,
                                               model_name_or_path=lambda: (model, processor))) for im in images])
    def readme(paths):  # PickScore's calc_probs on a list of images
        inputs = processor(images=[Image.open(p) for p in paths], return_tensors="pt")
        text = processor(text=args["prompts"][0], padding=True, truncation=True, max_length=77, return_tensors="pt")
        i = model.get_image_features(**inputs)
        t = model.get_text_features(**text)
        model.logit_scale.exp() * (t / t.norm(dim=-1, keepdim=True) @ (i / i.norm(dim=-1, keepdim=True)).T)[0]

    return {"pickscore": pick, "clip_score": clipscore, **_throughput(args, readme)}


TASKS = {"qwen_vl": qwen_vl, "imagereward": imagereward, "hpsv2": hpsv2, "clip": clip}

if __name__ == "__main__":
    task, args_path = sys.argv[1], sys.argv[2]
    with open(args_path) as f:
        args = json.load(f)
    _torchvision_python_only()
    import warnings

    warnings.filterwarnings("ignore")
    result = TASKS[task](args)
    with open(args["out"], "w") as f:
        json.dump(result, f)
