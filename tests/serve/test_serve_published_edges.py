"""Edge inputs of the surfaces the trainers and published loaders reach: OpenRLHF query cleaning with unusual
tokenizer tokens, --openrlhf-split / step models with prompts sent padded or without the bos, numeric settings of
other number types, and Qwen-VL image settings that would allocate an enormous image. Tiny models only."""
import numpy as np
import pytest
import torch
from serve_toys import ToyStepScorer, ToyTextScorer

from mmreward.core.inputs import StepSolution, TextPair
from mmreward.serve import OpenRLHFRewardFunction, VerlRewardFunction
from mmreward.serve.protocol import ModelSpec, clean_query, openrlhf_inputs

SPEC = ModelSpec("t", (TextPair,), False, ("<pad>", "</s>", "<s>"))
STEPS = ModelSpec("t", (StepSolution,), False, ("<pad>", "</s>", "<s>"))


def test_a_pad_token_that_opens_the_eos_leaves_no_tail_of_it():
    # pad "<|end|>" is the start of eos "<|end|>x": the alternation took the shorter first and left "x" as text
    spec = ModelSpec("t", (TextPair,), False, ("<|end|>", "<|end|>x", None))
    assert clean_query("<|end|>x<|end|>xhello", spec) == "hello"
    assert clean_query("<|end|><|end|>xhello", spec) == "hello"
    # real text that merely looks like the tail stays
    assert clean_query("xhello", spec) == "xhello"


@pytest.mark.parametrize("prompt", ["<pad><pad><s>p</s>", "p</s>", "<s>p</s>"])
def test_split_cuts_after_a_prompt_sent_padded_or_without_the_bos(prompt):
    # the query lost its left padding in clean_query; a prompt decoded from the same padded ids (or sent without
    # the bos the query carries) no longer prefixed it: a 400 "does not start with its prompt"
    q = "<pad><pad><s>p</s>a\n\nb</s>"
    assert openrlhf_inputs([q], [prompt], STEPS, "\n\n") == [StepSolution("p</s>", ["a", "b</s>"])]
    assert openrlhf_inputs([q], [prompt], SPEC, "\n\n", split=True) == [TextPair("p</s>", "a\n\nb</s>")]
    # a prompt that is not the query's start is still refused
    with pytest.raises(Exception, match="does not start with its prompt"):
        openrlhf_inputs([q], ["<s>other</s>"], STEPS, "\n\n")


class _SpaceTok:
    """A tokenizer whose pad token is a space (``tokenizer.pad_token = " "``) and no bos."""

    pad_token, eos_token, bos_token, bos_token_id = " ", "</s>", None, None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [7]}


class _SpaceText(ToyTextScorer):
    def __init__(self):
        super().__init__()
        self.tokenizer = _SpaceTok()


def test_a_whitespace_pad_token_never_strips_the_text_s_spaces():
    spec = ModelSpec.of(_SpaceText())
    assert spec.query_tokens == ("</s>", "</s>", None)  # no usable pad: the eos, as OpenRLHF pads then
    remote = ModelSpec.from_json({"model_type": "t", "inputs": ["TextPair"], "parts": False,
                                  "query_tokens": {"pad": " ", "eos": "</s>", "bos": None}})  # an older server's /info
    assert remote.query_tokens == ("</s>", "</s>", None)
    assert clean_query("  indented code\n    x = 1  ", spec) == "  indented code\n    x = 1  "
    assert clean_query("</s>  hi", spec) == "hi"  # the eos of the left padding still goes


def test_missing_reward_of_numpy_and_other_real_types_is_accepted():
    model = ToyStepScorer()
    for value in (np.float32(-1.5), np.int64(-2), np.float64(0.25)):
        assert VerlRewardFunction(model, missing_reward=value).missing_reward == float(value)
        assert OpenRLHFRewardFunction(model, missing_reward=value).missing_reward == float(value)
    for bad in (float("nan"), float("inf"), "-1", True, np.bool_(True), [1.0]):
        with pytest.raises(ValueError, match="missing_reward must be a finite number"):
            VerlRewardFunction(model, missing_reward=bad)


def test_qwen_image_settings_of_numpy_ints_and_an_enormous_first_resize():
    from mmreward.vision.published.qwen_vl import QwenImage, QwenVisionConfig, image_patches

    cfg = QwenVisionConfig()
    image = np.zeros((32, 32, 3), np.uint8)
    # numpy integers (a row read from parquet / an array) are ints
    settings = QwenImage(image, resized_height=np.int64(56), resized_width=np.int32(84))
    assert (settings.resized_height, settings.resized_width) == (56, 84) and type(settings.resized_height) is int
    assert image_patches(settings, cfg)[1] == [1, 4, 6]
    with pytest.raises(ValueError, match="positive int"):
        QwenImage(image, min_pixels=np.bool_(True))
    # min_pixels / max_pixels far above qwen-vl-utils' bounds: the first resize would allocate ~3 TB
    with pytest.raises(ValueError, match=r"image: its min_pixels / max_pixels .* more than \d+ pixels is refused"):
        image_patches(QwenImage(image, min_pixels=10 ** 12, max_pixels=10 ** 13), cfg)
    # a large but sane max_pixels is read as before
    assert image_patches(QwenImage(image, min_pixels=10 ** 5, max_pixels=10 ** 13), cfg)[1] == [1, 24, 24]


@pytest.mark.filterwarnings("ignore:OpenRLHFRewardFunction:RuntimeWarning")
def test_tensor_outputs_refuse_a_missing_reward_and_take_numpy_missing_reward():
    class NaNText(ToyTextScorer):
        def score(self, items, **kw):
            return torch.full((len(items),), float("nan"))

    fn = OpenRLHFRewardFunction(NaNText())
    with pytest.raises(ValueError, match="query 0 'a b' .*has no finite reward"):
        fn.as_function(output="tensor")(["a b"], [None], [None])
    out = OpenRLHFRewardFunction(NaNText(), missing_reward=np.float32(-1)).as_function(output="tensors")(["a b"])
    assert out["rewards"].dtype == torch.float32 and out["rewards"].tolist() == [-1.0]
    for bad in ("list", None, ["lists"]):
        with pytest.raises(ValueError, match="output must be one of"):
            fn.as_function(output=bad)


def _text_helpers():
    import os
    import sys

    pytest.importorskip("transformers")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "text"))
    import test_published_rm_inputs as helpers

    return helpers


def test_grm_folder_with_named_chat_templates_loads(tmp_path):
    # a tokenizer holding several named templates (tokenizer.chat_template is a dict {"default": ..., ...}, as
    # transformers loads additional_chat_templates): GRM's two-BOS rule and OpenRLHF's text wrap concatenated
    # the dict with a string (TypeError at load)
    from transformers import LlamaForSequenceClassification

    import mmreward

    h = _text_helpers()
    items = [TextPair(p, r) for p, r in h.CONVS]
    tok = h.bpe_tokenizer(bos="<|begin_of_text|>", template=h.LLAMA3)
    want = [tok(tok.apply_chat_template(h._messages(p, r), tokenize=False))["input_ids"] for p, r in h.CONVS]
    tok.chat_template = {"default": h.LLAMA3, "tool_use": "{{ 'tools' }}"}
    cfg = h._llama_config(tok, num_labels=1)
    cfg.vhead_layer_type, cfg.vhead_num_layers, cfg.vhead_num_neurons = "mlp", 1, 1024  # GRM's config keys
    h._randomise(LlamaForSequenceClassification(cfg)).save_pretrained(str(tmp_path / "grm"))
    tok.save_pretrained(str(tmp_path / "grm"))
    assert h._ids(mmreward.load(str(tmp_path / "grm")), items) == want  # the card's two BOS


def test_openrlhf_folder_with_named_chat_templates_loads(tmp_path):
    import mmreward

    h = _text_helpers()
    items = [TextPair(p, r) for p, r in h.CONVS]
    # the default template wrapped as OpenRLHF's RewardDataset reads it
    tok = h.bpe_tokenizer(template=h.CHATML, eos="<|im_end|>")
    want = [h._openrlhf_ids(tok, h._messages(p, r)) for p, r in h.CONVS]
    tok.chat_template = {"default": h.CHATML, "rag": "{{ 'rag' }}"}
    h._save_openrlhf(tmp_path / "orlhf", tok)
    assert h._ids(mmreward.load(str(tmp_path / "orlhf")), items) == want


class _NoPadTok:
    """A Llama-3-base-like tokenizer without a pad token (OpenRLHF's get_tokenizer then pads with the eos)."""

    pad_token, eos_token, bos_token, bos_token_id = None, "</s>", None, None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [7]}


def test_a_tokenizer_without_pad_strips_the_eos_padding_openrlhf_pads_with():
    model = ToyTextScorer()
    model.tokenizer = _NoPadTok()
    spec = ModelSpec.of(model)
    assert spec.query_tokens == ("</s>", "</s>", None)
    # right padding with the eos (OpenRLHF <= 0.8): one eos kept, as serve_rm strips the run and appends one
    assert clean_query("</s></s>user hi assistant yo</s></s></s>", spec) == "user hi assistant yo</s>"
    assert clean_query("user hi assistant yo</s>", spec) == "user hi assistant yo</s>"
    fn = OpenRLHFRewardFunction(model)
    padded, plain = fn(["q a</s></s></s>", "q a</s>"])["rewards"]
    assert padded == plain
