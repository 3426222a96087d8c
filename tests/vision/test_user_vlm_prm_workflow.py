"""A multimodal math-reasoning researcher's VisualPRM / VLM RM / StableReinforce workflows at toy scale:
published step-row layouts (VisualPRM400K-Raw), long solutions past the context (which steps are named),
chat markup inside a step, label tokens the tokenizer does not know, and StableReinforce settings that
would silently turn an update around."""
import inspect
import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from mmreward.cli import main as mmreward_main  # noqa: E402
from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.inputs import VisualSteps  # noqa: E402
from mmreward.vision import synthetic as S  # noqa: E402
from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config  # noqa: E402
from mmreward.vision.visual_prm import VisualPRM, VisualPRMConfig, as_labelled, evaluate_visual_prm  # noqa: E402
from test_visual_prm import new_prm  # noqa: E402


@pytest.fixture(scope="module")
def proc():
    return tiny_processor(S.COLOUR_WORDS)


RED = np.zeros((56, 56, 3), np.uint8)
RED[..., 0] = 255


# ------------------------------------------------------------------ VisualPRM400K-Raw rows
def raw_row(image):
    """A row as OpenGVLab/VisualPRM400K-Raw publishes it: one response, its steps with MC estimates."""
    return {"image": image, "question": "<image>\nwhat colour is the image", "answer": "red",
            "response": "look at the image\n\nso it is red",
            "steps_with_score": [{"step": "look at the image", "score": 0.75, "num_mc_correct": 12, "num_mc_total": 16},
                                 {"step": "so it is red", "num_mc_correct": 4, "num_mc_total": 16}],
            "num_mc_sequences": 16}


def test_visualprm400k_raw_rows_are_read_as_steps_and_labels(proc, tmp_path, capsys):
    (ex,) = as_labelled([raw_row(RED)])
    assert ex.input.steps == ["look at the image", "so it is red"]
    assert ex.labels == [0.75, 0.25]  # a step without "score": num_mc_correct / num_mc_total
    prm = new_prm(proc)
    plain = {"image": RED, "question": "<image>\nwhat colour is the image", "steps": ex.input.steps, "labels": [0.75, 0.25]}
    assert evaluate_visual_prm(prm, [raw_row(RED)]) == evaluate_visual_prm(prm, [plain])
    # the command line reads a JSONL of them too (image paths relative to the file)
    from PIL import Image

    Image.fromarray(RED).save(tmp_path / "red.png")
    (tmp_path / "raw.jsonl").write_text(json.dumps(raw_row("red.png")) + "\n")
    prm.save_pretrained(str(tmp_path / "prm"))
    assert mmreward_main(["vision", "eval", "--model", str(tmp_path / "prm"), "--data", str(tmp_path / "raw.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["step_accuracy"] >= 0
    # what cannot be read is refused naming the row and the fields to give
    conv = {"image": RED, "conversations": [{"from": "human", "value": "<image>\nwhat colour\nlook"},
                                            {"from": "gpt", "value": "+"}]}
    with pytest.raises(DataError, match=r"rows: row 0: a conversation row .* give fields image\(s\), question, steps"):
        as_labelled([conv])
    bad = raw_row(RED)
    bad["steps_with_score"][1] = {"step": "so it is red"}
    with pytest.raises(DataError, match=r"row 0: field 'steps_with_score': item 1 needs a 'score' number"):
        as_labelled([bad])
    with pytest.raises(DataError, match="both label the steps"):
        as_labelled([{**raw_row(RED), "labels": [1.0, 1.0]}])


# ------------------------------------------------------------------ long solutions: which steps are past the context
def test_steps_past_the_context_are_named_by_their_rotary_position():
    """Qwen2-VL's M-RoPE gives an image's tokens shared positions: the context bounds a label's position,
    not its place among the tokens. The steps named must be those whose label lies past it."""
    proc = tiny_processor(S.COLOUR_WORDS, image_size=112)  # 16 image tokens over 4 rotary positions
    prm = new_prm(proc)
    img = np.zeros((112, 112, 3), np.uint8)
    item = VisualSteps("red", ["red"] * 12, [img])
    enc = prm.encode([item])
    label = enc["step_index"][:, 1] + 1  # the label token of each step
    rope = prm.backbone.get_rope_index  # (3, B, T) M-RoPE positions, as the backbone's forward computes them
    names = inspect.signature(rope).parameters
    pos = rope(**{k: v for k, v in enc.items() if k in names})[0].amax(0)[0, label]
    limit = int(pos[6]) + 1  # steps 0..6 are labelled within it, 7.. are not
    assert int(label[6]) >= limit  # counted in tokens, step 6 would look past it: the case under test
    prm.backbone.config.text_config.max_position_embeddings = limit
    with pytest.raises(DataError, match=r"input 0: .* \(steps 7\.\.11 of its 12, counted from 0, lie past it\)"):
        prm.score_parts([item])


# ------------------------------------------------------------------ chat markup inside a step; label tokens
def test_chat_markup_in_a_step_is_named_not_misread_as_a_label(proc):
    prm = new_prm(proc)
    step = "red <|im_end|>\n<|im_start|>assistant\n+"  # a copied transcript: it holds a label of its own
    with pytest.raises(DataError, match=r"input 1: found 3 label positions for 2 steps: its question or a step holds "
                                        r"the chat template's assistant header"):
        prm.score_parts([VisualSteps("q", ["red", "blue"], [RED]), VisualSteps("q", [step, "blue"], [RED])])


def test_a_label_token_the_tokenizer_does_not_know_is_refused(proc):
    prm = new_prm(proc, good_token="++")  # one "token" to a word-level tokenizer: its unknown token
    with pytest.raises(ValueError, match=r"label token '\+\+' is not in the tokenizer's vocabulary"):
        prm.score_parts([VisualSteps("q", ["red"], [RED])])


# ------------------------------------------------------------------ StableReinforce settings
def test_stable_reinforce_refuses_settings_that_turn_the_update_around():
    from mmreward.vision.stable_reinforce import StableReinforceConfig, r1_reward

    # clip_grad_norm_(max_norm=-1) multiplies the gradients by a negative factor: the step climbs the loss
    p = torch.nn.Parameter(torch.ones(3))
    (p * 2).sum().backward()
    torch.nn.utils.clip_grad_norm_([p], -1.0)
    assert bool((p.grad < 0).all())
    for bad in (-1.0, 0, float("nan")):
        with pytest.raises(ValueError, match="max_grad_norm must be > 0 or None"):
            StableReinforceConfig(max_grad_norm=bad)
    assert StableReinforceConfig(max_grad_norm=None).max_grad_norm is None
    with pytest.raises(ValueError, match="kl_coef must be a finite number >= 0"):
        StableReinforceConfig(kl_coef=-0.1)
    with pytest.raises(ValueError, match="format_weight must be a finite number"):
        StableReinforceConfig(format_weight=float("nan"))
    # a yes / no label is not the index of the better answer (True == 1 was read as "answer 1")
    with pytest.raises(ValueError, match="preferred must be 1 or 2"):
        r1_reward("<think>x</think><answer>1</answer>", True)
    assert r1_reward("<think>x</think><answer>1</answer>", 1)[0] == 1.5


# ------------------------------------------------------------------ response scores and Best-of-N
def test_response_scores_refuse_an_empty_response_and_best_of_n_checks_reduce_first(proc, monkeypatch):
    from mmreward.vision.visual_prm import reduce_step_scores

    # a response without step scores reduced to 1.0, the best score: Best-of-N over prefixes picked it
    with pytest.raises(ValueError, match=r"response 1 must be a non-empty 1-D tensor"):
        reduce_step_scores([torch.tensor([0.2, 0.4]), torch.tensor([])], "min")
    with pytest.raises(ValueError, match="no responses"):
        reduce_step_scores([], "mean")
    prm = new_prm(proc)

    def never(*a, **k):  # an unknown reduction must be refused before N candidates are scored
        raise AssertionError("scored before the reduction was checked")

    monkeypatch.setattr(prm, "score_parts", never)
    for bad in ("sum", ""):  # "" fell back to config.reduce without a word
        with pytest.raises(ValueError, match=r"best_of_n: reduce must be one of"):
            prm.best_of_n([RED], "q", [["red"], ["blue"]], reduce=bad)


def test_r1_answer_ending_a_sentence_names_its_choice():
    """A judge that closes its answer with a full stop ("Answer 2.") named answer 2: the format check read the
    "2." as the start of a decimal and gave the output no format and no accuracy (reward 0)."""
    from mmreward.vision.stable_reinforce import parse_r1_output, r1_reward

    for text, choice in (("Answer 2.", 2), ("The better response is Answer 1.", 1), ("Answer 2...", 2)):
        out = parse_r1_output(f"<think>Answer {choice} is better</think><answer>{text}</answer>")
        assert out.format_ok and out.choice == choice, (text, out)
    assert r1_reward("<think>Answer 2 is better</think><answer>Answer 2.</answer>", 2)[0] == 2.0
    for number in ("1.5", "2.0", "0.2", "12"):  # numbers are still not a choice
        assert not parse_r1_output(f"<think>t</think><answer>{number}</answer>").format_ok, number


# ------------------------------------------------------------------ Monte-Carlo labels
def test_monte_carlo_outcomes_that_are_not_true_false_are_refused():
    """bool("incorrect") is True: an is_correct that returns the grader's verdict as text labelled every step
    good (soft label 1.0) without a word."""
    from mmreward.vision.visual_prm import mc_step_labels, monte_carlo_labels

    assert mc_step_labels([[True, False, 1, 0, np.bool_(True), torch.tensor(False)]]) == ([0.5], [1])
    with pytest.raises(ValueError, match=r"step 0, rollout 0: an outcome must be True / False .* got 'correct'"):
        monte_carlo_labels("q", ["a", "b"], lambda q, steps, n: ["x", "y"], lambda a: "correct" if a == "x" else "incorrect", 2)
    for bad in (0.5, float("nan"), "False"):
        with pytest.raises(ValueError, match="an outcome must be True / False"):
            mc_step_labels([[True], [bad]])


def test_an_image_url_in_training_rows_is_named_as_a_url():
    """Rows checked up front said an image URL "does not exist" (as if a local file were missing)."""
    from mmreward.vision.vlm_rm import as_pairs

    url = "https://example.com/chart.png"
    with pytest.raises(DataError, match=r"rows: row 0: field 'images': image 0: 'https://example.com/chart.png' is a "
                                        r"URL; images are read from local files only"):
        as_labelled([{"image": url, "question": "q", "steps": ["a"], "labels": [1.0]}])
    with pytest.raises(DataError, match=r"row 0: field 'images': image 1: .* is a URL"):
        as_pairs([{"images": [RED, url], "question": "q", "chosen": "a", "rejected": "b"}])


def test_rows_of_the_other_model_kind_are_named_as_such(tmp_path, capsys):
    """Preference rows given to train-visual-prm (or step rows to train-vlm-rm) were refused as "missing field
    'question'" / "missing field 'conversations_chosen'", not as rows of the other model."""
    pref = {"image": RED, "question": "what colour", "chosen": "red", "rejected": "blue"}
    step = {"image": RED, "question": "what colour", "steps": ["red"], "labels": [1.0]}
    with pytest.raises(DataError, match=r"rows: row 0: a preference row .* preference rows are for a VLM reward model"):
        as_labelled([pref])
    from mmreward.vision.vlm_rm import as_pairs

    with pytest.raises(DataError, match=r"rows: row 0: missing field .conversations_chosen.: a step row .* step rows are for a VisualPRM"):
        as_pairs([step])
    (tmp_path / "steps.jsonl").write_text(json.dumps({**step, "image": "red.png"}) + "\n")
    from PIL import Image

    Image.fromarray(RED).save(tmp_path / "red.png")
    assert mmreward_main(["vision", "train-vlm-rm", "--data", str(tmp_path / "steps.jsonl"),
                          "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a step row (question, steps)" in err[0], err


def test_labels_as_numpy_or_torch_values_are_read(proc):
    """Rows built with pandas / datasets / numpy hold labels as an array or numpy scalars: they were refused as
    "must hold numbers in [0, 1], got [1.0, 0.5]", a message that shows numbers."""
    row = {"image": RED, "question": "q", "steps": ["a", "b"]}
    for labels in (np.array([1.0, 0.5]), [np.float32(1.0), np.float32(0.5)], torch.tensor([1.0, 0.5])):
        assert as_labelled([{**row, "labels": labels}])[0].labels == [1.0, 0.5]
    with pytest.raises(DataError, match="must hold numbers in"):
        as_labelled([{**row, "labels": [np.bool_(True), 1.0]}])


def test_a_non_finite_stable_reinforce_update_is_not_applied():
    """A NaN in old_logprobs (or the policy's logits) gave a NaN loss; clip_grad_norm_ scales a NaN gradient by
    NaN and the optimizer wrote NaN into every weight of the policy without a word."""
    from mmreward.core.trainer import TrainingDiverged
    from mmreward.vision.stable_reinforce import stable_reinforce_step

    class Policy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(8, 8)

        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": self.emb(input_ids)})()

    torch.manual_seed(0)
    pol = Policy()
    before = pol.emb.weight.detach().clone()
    opt = torch.optim.SGD(pol.parameters(), lr=0.1)
    seq, attn = torch.randint(0, 8, (2, 4)), torch.ones(2, 4, dtype=torch.long)
    action = torch.tensor([[0, 1, 1], [0, 1, 1]], dtype=torch.bool)
    old = torch.full((2, 3), -2.0)
    old[0, 1] = float("nan")
    with pytest.raises(TrainingDiverged, match="not finite; the update was not applied"):
        stable_reinforce_step(pol, opt, seq, attn, action, old, torch.tensor([1.0, 0.0]))
    assert torch.equal(pol.emb.weight, before)
    old[0, 1] = -2.0  # the same step with finite inputs updates the policy
    stable_reinforce_step(pol, opt, seq, attn, action, old, torch.tensor([1.0, 0.0]))
    assert bool(torch.isfinite(pol.emb.weight).all()) and not torch.equal(pol.emb.weight, before)


def test_home_folder_image_paths_in_python_rows_pass_the_upfront_check(tmp_path, monkeypatch):
    """Scoring reads "~/…" as the home folder's, but the up-front check of training rows said the same path
    "does not exist"."""
    from PIL import Image

    from mmreward.vision.vlm_rm import as_pairs

    monkeypatch.setenv("HOME", str(tmp_path))
    Image.fromarray(RED).save(tmp_path / "red.png")
    (ex,) = as_labelled([{"image": "~/red.png", "question": "q", "steps": ["a"], "labels": [1.0]}])
    assert ex.input.images == ["~/red.png"]
    assert as_pairs([{"image": "~/red.png", "question": "q", "chosen": "a", "rejected": "b"}])[0].chosen.images
    with pytest.raises(DataError, match="does not exist"):
        as_labelled([{"image": "~/gone.png", "question": "q", "steps": ["a"], "labels": [1.0]}])
    # a resume compares the image's bytes, not its "~/…" name: an image changed under that name is noticed
    from mmreward.vision.visual_prm import data_digest

    before = data_digest([ex])
    Image.fromarray(255 - RED).save(tmp_path / "red.png")
    assert data_digest(as_labelled([{"image": "~/red.png", "question": "q", "steps": ["a"], "labels": [1.0]}])) != before


def test_a_template_that_writes_before_the_label_is_named(proc):
    """A chat template that renders text into the last assistant turns (Qwen3's empty think block) moves the
    label away from the assistant header; the error blamed the tokenizer ("merges the label token")."""
    from mmreward.vision.vlm_data import QWEN_CHAT_TEMPLATE, SimpleVLMProcessor

    last_user = ("{% set ns = namespace(last=0) %}{% for m in messages %}{% if m['role'] == 'user' %}"
                 "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}{% for m in messages %}")
    think = "{% if m['role'] == 'assistant' and loop.index0 > ns.last %}<think> </think> {% endif %}"
    tpl = QWEN_CHAT_TEMPLATE.replace("{% for m in messages %}", last_user, 1).replace(
        "<|im_start|>{{ m['role'] }}\n", "<|im_start|>{{ m['role'] }}\n" + think, 1)
    qwen3ish = SimpleVLMProcessor(proc.tokenizer, proc.image_processor, tpl)
    torch.manual_seed(0)
    prm = VisualPRM(VisualPRMConfig(), tiny_qwen2vl_config(qwen3ish), qwen3ish)
    with pytest.raises(DataError, match=r"input 0: found 1 label positions for 2 steps: in the rendered chat a label "
                                        r"token .* does not directly follow the assistant header"):
        prm.score_parts([VisualSteps("q", ["red", "blue"], [RED])])


def test_a_backbone_folder_that_is_no_model_is_named(tmp_path, capsys):
    """--backbone <a data folder> answered with transformers' "Unrecognized processing class in …", naming
    neither the flag nor what the folder lacks."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "rows.jsonl").write_text("{}\n")
    argv = ["vision", "train-visual-prm", "--data", "synthetic", "--n-train", "4", "--backbone", str(folder),
            "--out", str(tmp_path / "run"), "--max-steps", "1", "--no-progress"]
    assert mmreward_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--backbone '{folder}' has no config.json" in err[0], err


def test_visualprm400k_raw_rows_are_scored_by_their_steps(proc):
    """`score` (and `mmreward score --data`) reads a VisualPRM400K-Raw row as training does: its steps are the
    `step` of each `steps_with_score` item (was "missing field 'steps'")."""
    item = VisualSteps.from_record(raw_row(RED))
    assert item.steps == ["look at the image", "so it is red"]
    prm = new_prm(proc)
    plain = VisualSteps(item.question, ["look at the image", "so it is red"], item.images)
    torch.testing.assert_close(prm.score([raw_row(RED)]), prm.score([plain]))


def test_a_relative_image_path_field_is_read_next_to_its_data_file(tmp_path, monkeypatch):
    """`image_path` (RLAIF-V, MM-RLHF rows) resolves against the data file's folder like `image`: from a working
    folder holding a file of the same name, that other file was read."""
    from mmreward.core.data import resolve_media_paths

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.jsonl").write_text("{}\n")
    rows = resolve_media_paths([{"image_path": "red.png", "question": "q"}], str(tmp_path / "data" / "rows.jsonl"))
    assert rows[0]["image_path"] == str(tmp_path / "data" / "red.png")
