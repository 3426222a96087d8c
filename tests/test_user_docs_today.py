"""A new user's run through the docs on LoRA / gradient checkpointing, RewardBench 2, scoring large files
and the Diffusion Reward wrappers in an own RL loop: the commands and snippets, scaled down to tiny models,
do what the sentences say, and the figures given are the code's."""
import gzip
import io
import json
import os
import re
import shlex
import sys

import pytest
import torch

pytest.importorskip("transformers")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "text"))

from mmreward.cli import main  # noqa: E402

WORDS = "what is the answer to two plus three five six seven a b c d e f g h say".split()


def _read(rel: str) -> str:
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def _jsonl(path, rows):
    from text_rm_fixtures import write_jsonl

    return write_jsonl(path, rows)


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory):
    """A tiny Llama text RM saved as a folder."""
    from text_rm_fixtures import save_tiny_rm

    return save_tiny_rm(tmp_path_factory.mktemp("rm") / "m")


def _rows(n):
    return [{"id": i, "prompt": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 5)),
             "response": " ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(1 + (i * 7) % 13))}
            for i in range(n)]


def test_readme_lora_tour_line_trains_one_epoch_as_its_neighbour(tmp_path, monkeypatch):
    """README's LoRA line had no --epochs: run as written it trains the default 1000 steps, not the epoch the line
    above it trains. Run with a tiny BERT backbone folder in place of MiniLM: 16 pairs, batch 8 → 2 steps."""
    from text_rm_fixtures import bert_config, word_tokenizer
    from transformers import BertModel

    line = next(ln for ln in _read("README.md").splitlines() if "--lora-rank 16 --gradient-checkpointing" in ln)
    assert "--epochs 1" in line
    torch.manual_seed(0)
    backbone = tmp_path / "minilm"
    BertModel(bert_config()).save_pretrained(str(backbone))
    word_tokenizer().save_pretrained(str(backbone))
    _jsonl(tmp_path / "prefs.jsonl", [{"prompt": "what is two plus three", "chosen": "five",
                                       "rejected": " ".join(["six"] * (1 + i % 3))} for i in range(16)])
    monkeypatch.chdir(tmp_path)
    args = shlex.split(line.split("#")[0])[1:]
    args[args.index("path/to/minilm")] = str(backbone)
    assert main(args + ["--no-progress", "--no-tensorboard", "--no-plot"]) == 0
    steps = (tmp_path / "runs" / "rm-lora" / "metrics.csv").read_text().splitlines()
    last = dict(zip(steps[0].split(","), steps[-1].split(",")))
    assert int(last["step"]) == 2
    from mmreward.core.lora import has_lora
    import mmreward

    assert not has_lora(mmreward.load(str(tmp_path / "runs" / "rm-lora" / "model")))


def test_minilm_lora_figures_of_text_recipes_are_the_models_counts():
    """text_recipes.md gave 0.68 M adapter weights and 22.7 M for MiniLM (the published count, with the pooler
    the reward model does not keep); rank 16 on all-linear of the RM's backbone is 0.66 M of 22.6 M."""
    from transformers import BertConfig

    from mmreward.core.lora import LoraSettings, apply_lora
    from mmreward.text import RewardModel
    from text_rm_fixtures import word_tokenizer

    # all-MiniLM-L6-v2's architecture (its config.json), random weights: only the counts matter here
    cfg = BertConfig(vocab_size=30522, hidden_size=384, intermediate_size=1536, num_hidden_layers=6,
                     num_attention_heads=12, max_position_embeddings=512)
    rm = RewardModel.from_backbone(cfg, tokenizer=word_tokenizer())
    backbone = sum(p.numel() for p in rm.backbone.parameters())
    apply_lora(rm.backbone, LoraSettings(16, 32.0))
    adapters = sum(p.numel() for n, p in rm.named_parameters() if "lora_" in n)
    text = _read("docs/text_recipes.md")
    assert f"{adapters / 1e6:.2f} M adapter weights" in text
    assert f"MiniLM's backbone has {backbone / 1e6:.1f} M" in text


def _rb2_rows():
    rows = []
    for i, s in enumerate(["Factuality", "Precise IF", "Math", "Safety", "Focus"]):
        rows.append({"id": str(i), "prompt": f"what is {WORDS[i]}", "chosen": ["five"],
                     "rejected": ["six six", "seven"], "subset": s, "num_correct": 1})
    for p in range(2):
        rows.append({"id": f"ref:{p}", "prompt": f"say {WORDS[p]}", "chosen": ["a"], "rejected": ["b", "c c"],
                     "subset": "Ties", "num_correct": 1})
        rows.append({"id": f"tied:{p}", "prompt": f"say {WORDS[p]}", "chosen": ["a", "a a"], "rejected": ["b", "c c"],
                     "subset": "Ties", "num_correct": 2})
    return rows


def test_rewardbench2_snippet_and_command_of_text_recipes(rm_folder, tmp_path, monkeypatch, capsys):
    """text_recipes.md's evaluate_rewardbench2 lines on a downloaded-layout folder (data/test-*.parquet), and the
    `--benchmark rewardbench-2` command; a v1 file given as RewardBench 2 is refused naming the benchmark."""
    import mmreward

    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    (tmp_path / "reward-bench-2" / "data").mkdir(parents=True)
    pd.DataFrame(_rb2_rows()).to_parquet(tmp_path / "reward-bench-2" / "data" / "test-00000-of-00001.parquet")
    monkeypatch.chdir(tmp_path)
    text = _read("docs/text_recipes.md")
    code = re.search(r"(from mmreward\.text\.eval import evaluate_rewardbench2\n.*?)```", text, re.S).group(1)
    scope = {"rm": mmreward.load(rm_folder)}
    exec(compile(code, "docs/text_recipes.md", "exec"), scope)
    res = scope["res"]
    assert set(res["subsets"]) == {"Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"}
    assert res["overall"] == pytest.approx(sum(res["subsets"].values()) / 6)
    assert {"ref_accuracy", "tied_accuracy", "correctness_preferred", "correctness_preferred_hard",
            "correctness_margin_score"} <= set(res["ties"])
    line = next(ln for ln in text.splitlines() if "--benchmark rewardbench-2" in ln and ln.startswith("mmreward"))
    args = shlex.split(line.replace("[--split test]", "--split test"))[1:]
    args[args.index("runs/rm")] = rm_folder
    assert main(args + ["--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["overall"] == pytest.approx(res["overall"])
    v1 = _jsonl(tmp_path / "rb1.jsonl", [{"prompt": "what", "chosen": "five", "rejected": "six",
                                         "subset": "alpacaeval-easy", "id": 1}])
    assert main(["text", "eval", "--model", rm_folder, "--benchmark", "rewardbench-2", "--data", v1,
                 "--no-progress"]) == 2
    assert "--benchmark rewardbench " in capsys.readouterr().err


def test_models_md_large_file_commands(rm_folder, tmp_path, monkeypatch, capsys):
    """models.md's three new `mmreward score` lines: a folder of shards to .gz, stdin to stdout, --resume; and a
    .parquet --out is refused."""
    rows = _rows(30)
    (tmp_path / "shards").mkdir()
    _jsonl(tmp_path / "shards" / "train-0.jsonl", rows[:15])
    _jsonl(tmp_path / "shards" / "train-1.jsonl", rows[15:])
    _jsonl(tmp_path / "big.jsonl", rows)
    monkeypatch.chdir(tmp_path)
    base = ["score", "--model", rm_folder, "--no-progress"]
    assert main(base + ["--data", "shards/", "--out", "scored.jsonl.gz"]) == 0
    with gzip.open(tmp_path / "scored.jsonl.gz", "rt") as f:
        gz = [json.loads(x) for x in f]
    assert [r["id"] for r in gz] == list(range(30))
    capsys.readouterr()
    data = gzip.compress((tmp_path / "big.jsonl").read_bytes())  # zcat rows.jsonl.gz | ...
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(gzip.decompress(data))))
    assert main(base + ["--data", "-", "--out", "-"]) == 0
    out = [json.loads(x)["score"] for x in capsys.readouterr().out.splitlines()]  # | jq .score
    assert out == pytest.approx([r["score"] for r in gz])
    assert main(base + ["--data", "big.jsonl", "--out", "scored.jsonl", "--resume"]) == 0
    assert not (tmp_path / "scored.jsonl.partial").exists()
    assert [json.loads(x)["score"] for x in (tmp_path / "scored.jsonl").read_text().splitlines()] == \
        pytest.approx(out)
    assert main(base + ["--data", "big.jsonl", "--out", "scored.parquet"]) == 2
    assert "JSON lines" in capsys.readouterr().err and not (tmp_path / "scored.parquet").exists()


def test_text_md_score_line_for_large_files(rm_folder, tmp_path, monkeypatch):
    """text.md: `mmreward text score --model FOLDER --data big.jsonl.gz --out scored.jsonl.gz [--resume]`."""
    rows = _rows(12)
    with gzip.open(tmp_path / "big.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    line = next(ln for ln in _read("docs/text.md").splitlines() if "big.jsonl.gz" in ln and ln.startswith("mmreward"))
    args = shlex.split(line.split("#")[0].replace("[--resume]", "--resume"))[1:]
    args[args.index("FOLDER")] = rm_folder
    assert main(args + ["--no-progress"]) == 0
    with gzip.open(tmp_path / "scored.jsonl.gz", "rt") as f:
        assert [json.loads(x)["id"] for x in f] == list(range(12))
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".partial")]


def test_figures_and_tense_of_todays_doc_sentences():
    """No figure without a source in benchmarks/results or a test: the vector wrapper's 36 / 93 ms and the
    '≈ 3×' per-step cost had none; and no 'today's defaults' (a doc says what is, not when)."""
    dr = _read("docs/diffusion_reward.md")
    own_loop = dr[dr.index("### In your own RL loop"):dr.index("## Implementation and differences")]
    assert not re.search(r"\d+ ms\b", own_loop) and "≈ 3×" not in own_loop
    assert "today" not in _read("docs/text_recipes.md").lower()


def test_train_reward_model_with_lora_returns_the_history_and_leaves_the_model_plain(tmp_path):
    """text.md said `train_reward_model` "returns the model folded": it returns the per-step history and leaves the
    model it trained folded (no adapters), checkpointing off and its frozen weights frozen, as a bf16 model."""
    from text_rm_fixtures import bert_config, word_tokenizer

    from mmreward.core.lora import gradient_checkpointing_on, has_lora
    from mmreward.text import RewardModel
    from mmreward.text.train import RewardTrainConfig, train_reward_model

    text = _read("docs/text.md")
    assert "`train_reward_model` leaves the model it trained folded" in " ".join(text.split())
    torch.manual_seed(0)
    rm = RewardModel.from_backbone(bert_config(), tokenizer=word_tokenizer()).to(torch.bfloat16)
    rm.backbone.embeddings.word_embeddings.weight.requires_grad_(False)
    pairs = [{"prompt": "what is two plus three", "chosen": "five", "rejected": " ".join(["six"] * (1 + i % 3))}
             for i in range(8)]
    cfg = RewardTrainConfig(output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4, lora_rank=4,
                            gradient_checkpointing=True)
    history = train_reward_model(rm, pairs, config=cfg)
    assert isinstance(history, list) and len(history) == 2 and "loss" in history[-1]
    assert not has_lora(rm) and not gradient_checkpointing_on(rm.backbone)
    assert not rm.backbone.embeddings.word_embeddings.weight.requires_grad
    assert rm.backbone.encoder.layer[0].attention.self.query.weight.requires_grad
    assert next(rm.backbone.parameters()).dtype == torch.bfloat16


def test_prm_score_out_keeps_the_processbench_table_on_stdout(tmp_path, monkeypatch, capsys):
    """prm.md: with `--out FILE` the file holds the solution rows only (gzipped for .gz) and the ProcessBench table
    is stdout's last line, after `wrote N rows to FILE`; with `--out -` it follows the rows on stdout."""
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    assert "`--out FILE` the file holds the solution rows only" in _read("docs/prm.md")
    tok = char_tokenizer("char")
    folder = str(tmp_path / "prm")
    ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=1, heads=2, seed=0), tok,
                                     max_length=80).save_pretrained(folder)
    rows = [{"id": f"{'gsm8k' if i % 2 else 'math'}-{i}", "problem": "1+1",
             "steps": ["1+1=2", "2+1=3", "3+1=4"][: 1 + i % 3], "label": -1 if i % 3 == 0 else i % 3 - 1}
            for i in range(6)]
    data = _jsonl(tmp_path / "pb.jsonl", rows)
    monkeypatch.chdir(tmp_path)
    assert main(["prm", "score", "--model", folder, "--data", data, "--out", "s.jsonl.gz"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "wrote 6 rows to s.jsonl.gz" and "processbench" in json.loads(out[-1])
    with gzip.open(tmp_path / "s.jsonl.gz", "rt") as f:
        assert [json.loads(x)["id"] for x in f] == [r["id"] for r in rows]
    assert main(["prm", "score", "--model", folder, "--data", data, "--out", "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and "processbench" in json.loads(lines[-1])


def test_vlm_lora_target_names_reach_a_llava_vision_tower_as_vision_vlm_md_says():
    """vision_vlm.md said `q_proj,v_proj` leaves the vision tower as it was: true of Qwen2-VL, whose vision layers
    are qkv / proj / fc1 / fc2, but a LLaVA CLIP tower has q_proj / v_proj of its own, and names match the last
    part of a layer's name."""
    import torch.nn as nn
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              Qwen2VLForConditionalGeneration)

    from mmreward.core.lora import LoraSettings, apply_lora, lora_layers
    from mmreward.vision import testing as T

    text = " ".join(_read("docs/vision_vlm.md").split())
    assert "`q_proj,v_proj` adapts only the language model, but a LLaVA-style" in text
    qwen = Qwen2VLForConditionalGeneration(T.tiny_qwen2vl_config(T.tiny_processor(["red", "green"])))
    assert sorted({n.rsplit(".", 1)[-1] for n, m in qwen.named_modules()
                   if type(m) is nn.Linear and "visual" in n} & {"q_proj", "v_proj"}) == []
    apply_lora(qwen, LoraSettings(2, targets="q_proj,v_proj"))
    assert not [n for n in lora_layers(qwen) if "visual" in n]
    llava = LlavaForConditionalGeneration(LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=28, patch_size=14),
        text_config=LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=1), image_token_index=3))
    apply_lora(llava, LoraSettings(2, targets="q_proj,v_proj"))
    assert [n for n in lora_layers(llava) if "vision_tower" in n]


def test_freeze_vision_tower_keeps_lora_off_a_llava_tower():
    """vision_vlm.md: with freeze_vision_tower the tower's layers get no adapters (they stay as the freeze setting
    says), though their names match the targets; a LLaVA tower was adapted through its own q_proj / v_proj."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from mmreward.core.lora import AdapterOptions, BackboneSetup, lora_layers
    from mmreward.vision import vlm_data as D

    assert "set `freeze_vision_tower` to keep it out" in " ".join(_read("docs/vision_vlm.md").split())
    llava = LlavaForConditionalGeneration(LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=28, patch_size=14),
        text_config=LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=1), image_token_index=3))
    D.freeze_vision(llava, vision_tower=True, projector=False)

    class Holder(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

    holder = Holder(llava)
    setup = BackboneSetup(holder, AdapterOptions(lora_rank=2, lora_targets="q_proj,v_proj"))
    names = list(lora_layers(llava))
    assert names and not [n for n in names if "vision_tower" in n]
    setup.undo()
    assert not any(p.requires_grad for n, p in llava.named_parameters() if "vision_tower" in n)
