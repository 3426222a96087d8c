"""An ML engineer using mmreward from a notebook and their own training code: the inputs they have at hand
(a datasets slice, a DataFrame row, a row with a misspelt column) get one error saying what to pass, and
``help(mmreward.load)`` / ``help(model.score)`` say what each takes."""
import pytest
import torch

import mmreward
from mmreward.core.data import DataError
from mmreward.core.inputs import Episode, ImagePrompt, StepSolution, TextPair, VideoPrompt
from mmreward.core.model import RewardScorer


class LengthScorer(RewardScorer):
    """A reward of the response's length: scoring needs no weights."""

    model_type = "test_notebook_length"
    input_types = (TextPair,)

    def _score(self, items, batch_size):
        return torch.tensor([float(len(x.response)) + (0.5 if x.prompt else 0.0) for x in items])


class StepCounter(RewardScorer):
    model_type = "test_notebook_steps"
    input_types = (StepSolution,)

    def _score(self, items, batch_size):
        return torch.tensor([float(len(x.steps)) for x in items])

    def _score_parts(self, items, batch_size):
        return [torch.ones(len(x.steps)) for x in items]


# ------------------------------------------------------------------ inputs as a notebook has them
def test_a_dict_of_columns_is_named_with_the_ways_to_pass_rows():
    """``rm.score(ds[:8])`` (a datasets slice is a dict of columns) said "wrap a single input in a list", and
    doing so gave "field 'prompt'[0] must be a message": the columns were read as one input."""
    columns = {"prompt": ["what", "who"], "response": ["five", "six"]}
    with pytest.raises(TypeError, match=r"dict of columns \('prompt': 2 values, 'response': 2 values\).*"
                                        r"Dataset itself, a pandas DataFrame"):
        LengthScorer().score(columns)
    with pytest.raises(TypeError, match="wrap a single input in a list"):  # one row as a dict: as before
        LengthScorer().score({"prompt": "what", "response": "five"})


def test_one_pandas_row_given_alone_says_to_wrap_it():
    """``rm.score(df.iloc[0])`` listed the row's cells as inputs: "input 0 must be a TextPair ... got str"."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame([{"prompt": "what", "response": "five"}, {"prompt": "who", "response": "sixteen"}])
    with pytest.raises(TypeError, match=r"pandas Series holding one row \(fields \['prompt', 'response'\]\): wrap "
                                        r"it in a list"):
        LengthScorer().score(df.iloc[0])
    assert LengthScorer().score([df.iloc[1]]).tolist() == [7.5]
    assert LengthScorer().score(df).tolist() == [4.5, 7.5]
    # a Series of inputs (a column of dicts) is a list of inputs, as before
    assert LengthScorer().score(pd.Series([{"prompt": "a", "response": "bc"}])).tolist() == [2.5]


@pytest.mark.parametrize("row, key, meant", [
    ({"promt": "what", "response": "five"}, "promt", "prompt"),
    ({"Prompt": "what", "response": "five"}, "Prompt", "prompt"),
    ({"prompt": "what", "respone": "five"}, "respone", "response"),
])
def test_a_misspelt_field_is_refused_not_scored_without_it(row, key, meant):
    """A typo in a column name dropped the field silently: ``{"promt": ..., "response": ...}`` was scored as a
    response without its prompt (a different reward, no error)."""
    with pytest.raises(DataError, match=rf"input 0: field '{key}' is not one TextPair reads \(did you mean "
                                        rf"'{meant}'\?\)"):
        LengthScorer().score([row])


def test_other_columns_of_a_row_are_still_ignored():
    rows = [{"prompt": "what", "response": "five", "prompt_id": 3, "id": "x", "score": 1.0, "responses": ["a"]},
            {"question": "what", "response": "five", "promt": "ignored: the prompt is given as 'question'"}]
    assert LengthScorer().score(rows).tolist() == [4.5, 4.5]


def test_misspelt_fields_of_other_inputs_are_named_too():
    with pytest.raises(DataError, match=r"field 'step' is not one StepSolution reads \(did you mean 'steps'\?\)"):
        StepCounter().score([{"problem": "1+1", "step": ["2"]}])
    with pytest.raises(DataError, match=r"field 'sucess' is not one Episode reads \(did you mean 'success'\?\)"):
        from mmreward.core.inputs import as_inputs

        as_inputs(Episode, [{"frames": "ep.npz", "sucess": [0, 1]}])


# ------------------------------------------------------------------ what help() says
def test_help_of_score_names_the_inputs_the_model_takes():
    """``help(model.score)`` of every model without a score of its own said "one reward per input" and nothing of
    which inputs: an image scorer's user could not tell ImagePrompt from Conversation without the docs."""
    class Images(LengthScorer):
        model_type = "test_notebook_images"
        input_types = (ImagePrompt, VideoPrompt)

    doc = Images.score.__doc__
    assert "ImagePrompt(prompt, image) / VideoPrompt(prompt, video)" in doc and "batch_size" in doc
    assert "TextPair(prompt, response)" in LengthScorer.score.__doc__
    assert "StepSolution(problem, steps)" in StepCounter.score_parts.__doc__
    assert "Tensor[K_i]" in StepCounter.score_parts.__doc__
    # the documented methods are the contract's: checked inputs, the same scores
    assert StepCounter().score([("1+1", ["2", "3"])]).tolist() == [2.0]
    assert StepCounter().score_parts([("1+1", ["2", "3"])])[0].tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match="wrap a single input in a list"):
        StepCounter().score(StepSolution("1+1", ["2"]))


def test_help_of_a_registered_model_class_names_its_inputs():
    from mmreward.registry import model_class

    assert "Episode(frames, success)" in model_class("rnd").score.__doc__


def test_help_of_load_says_what_path_device_and_dtype_take():
    doc = mmreward.load.__doc__
    for said in ("pathlib.Path", "~", "metaworld-64", "cuda", "bf16", "as saved", "input_types", "share no tensor"):
        assert said in doc, said



# ------------------------------------------------------------------ model.config edited in a notebook
def _tiny_rnd():
    from mmreward.robotics.reward import RND, RNDConfig

    torch.manual_seed(0)
    return RND(RNDConfig(image_size=32, channels=(4, 8, 8), feature_dim=16, hidden_dim=16))


def _episode():
    g = torch.Generator().manual_seed(0)
    return [Episode(torch.randint(0, 255, (3, 32, 32, 3), dtype=torch.uint8, generator=g).numpy())]


@pytest.mark.parametrize("field, value", [("feature_dim", "16"), ("feature_dim", 0), ("image_size", float("nan"))])
def test_save_refuses_a_config_value_the_load_would_refuse_and_keeps_the_old_folder(tmp_path, field, value):
    """``model.config`` is a plain dataclass a notebook edits: a value of the wrong kind or out of range was saved,
    the good folder replaced by one that every later load refuses."""
    model = _tiny_rnd()
    folder = tmp_path / "rnd"
    model.save_pretrained(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    setattr(model.config, field, value)
    with pytest.raises(ValueError, match=rf"save_pretrained: RND.config would not load from the saved folder "
                                         rf"\(.*{field}.*\).*nothing was written"):
        model.save_pretrained(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert isinstance(mmreward.load(folder), type(model))
    # a valid edit saves and loads as before
    setattr(model.config, field, getattr(mmreward.load(folder).config, field))
    model.config.lr = 3e-4
    model.save_pretrained(folder)
    assert mmreward.load(folder).config.lr == 3e-4


def test_a_misspelt_config_attribute_is_refused_not_ignored(tmp_path):
    """``model.config.feature_dimm = 8`` (a typo) set an attribute nothing reads: scores unchanged, the value
    dropped by save_pretrained, no word said."""
    model = _tiny_rnd()
    episode = _episode()
    base = model.score(episode)
    model.config.hidden_dimm = 8
    for call in (lambda: model.score(episode), lambda: model.score_parts(episode),
                 lambda: model.save_pretrained(tmp_path / "rnd")):
        with pytest.raises(AttributeError, match=r"RND.config has no field 'hidden_dimm' .*did you mean "
                                                 r"'hidden_dim'\?"):
            call()
    assert not (tmp_path / "rnd").exists()
    del model.config.hidden_dimm
    assert torch.equal(model.score(episode), base)


def test_a_text_rm_with_its_own_score_checks_its_config_attributes_too():
    class OwnScore(LengthScorer):
        model_type = "test_notebook_own_score"

        def score(self, inputs, *, batch_size=None):
            return self._score(list(inputs), 1)

    from dataclasses import dataclass

    @dataclass
    class Cfg:
        scale: float = 1.0

    m = OwnScore()
    m.config = Cfg()
    assert m.score([TextPair("a", "bc")]).tolist() == [2.5]
    m.config.scael = 2.0
    with pytest.raises(AttributeError, match="has no field 'scael'"):
        m.score([TextPair("a", "bc")])


def test_a_vlm_reward_model_deep_copies_and_pickles_with_its_processor():
    """docs/models.md promises copy.deepcopy / pickle of a model, processor included: the VLM processor's
    compiled chat template did not pickle (Template.__new__() missing 'source')."""
    import copy
    import pickle

    from mmreward.vision.synthetic import COLOUR_WORDS
    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
    from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel

    processor = tiny_processor(COLOUR_WORDS)
    torch.manual_seed(0)
    model = VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(processor), processor)
    messages = [{"role": "user", "content": "red"}, {"role": "assistant", "content": "blue"}]
    want = processor.apply_chat_template(messages)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert twin.processor.apply_chat_template(messages) == want
        assert twin.processor is not processor


def test_a_shipped_name_opens_through_the_class_as_through_load():
    """mmreward.load("metaworld-64") worked, DiffusionReward.from_pretrained("metaworld-64") said the folder did not
    exist (RewardModel.from_pretrained reads shipped names)."""
    from mmreward.core.folders import CheckpointError
    from mmreward.robotics.reward.diffusion_reward import DiffusionReward

    model = DiffusionReward.from_pretrained("metaworld-64")
    assert isinstance(model, DiffusionReward) and int(model.statistics[2]) > 0
    with pytest.raises(CheckpointError, match="does not exist"):
        DiffusionReward.from_pretrained("no-such-shipped-name")


@pytest.mark.parametrize("kind,row", [
    # rows as public datasets spell them: extra columns one edit from nothing the row lacks are not refused
    ("Comparison", {"prompt": "q", "chosen": "a", "rejected": "b", "chosen_model": "m", "rejected_model": "n",
                    "subset": "chat", "id": 3}),                                     # RewardBench
    ("Comparison", {"prompt": "q", "prompt_id": "x", "chosen": "a", "rejected": "b", "messages": [],
                    "score_chosen": 8.0, "score_rejected": 3.0}),                    # UltraFeedback binarized
    ("TextPair", {"prompt": "q", "response": "a", "responses": ["a", "b"], "label": 1}),
    ("StepSolution", {"problem": "q", "steps": ["a", "b"], "label": [1, 0], "labels": [True, False]}),
    ("StepSolution", {"question": "q", "steps": ["a"], "step": 0, "answer": "a"}),  # PRM800K-style extras
    ("ImagePrompt", {"caption": "c", "image": "a.png", "images": ["a.png"], "jpg_0": "x", "label_0": 1}),
])
def test_real_dataset_rows_are_not_taken_for_typos(kind, row):
    import mmreward.core.inputs as inputs

    item, = inputs.as_inputs(getattr(inputs, kind), [row], "score")
    assert type(item).__name__ == kind
