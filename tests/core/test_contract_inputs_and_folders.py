"""The model contract on unusual-but-valid inputs and folders: any ordered iterable of inputs, pandas
rows, numpy strings; ``~`` paths; weights of the wrong kind; a model saved in bf16 loads in bf16 and
scores as it did; ``mmreward score`` refuses a ``--prompt`` it would ignore."""
import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import mmreward
from mmreward import registry
from mmreward.core.data import DataError
from mmreward.core.folders import CheckpointError
from mmreward.core.inputs import Episode, StepSolution, TextPair, as_inputs
from mmreward.core.model import RewardScorer


@dataclass
class LinConfig:
    width: int = 4


class LinRM(RewardScorer, torch.nn.Module):
    """A text RM whose reward depends on every weight: a linear map of character counts."""

    model_type = "contract_lin_rm"
    input_types = (TextPair,)
    config_class = LinConfig

    def __init__(self, config=None):
        super().__init__()
        self.config = config or LinConfig()
        self.a = torch.nn.Linear(self.config.width, self.config.width)
        self.b = torch.nn.Linear(self.config.width, 1)

    def _score(self, items, batch_size):
        x = torch.tensor([[len(it.response) / (k + 1) for k in range(self.config.width)] for it in items])
        return self.b(torch.tanh(self.a(x.to(self.a.weight.dtype))).to(self.b.weight.dtype)).squeeze(-1).float().detach()


ITEMS = [TextPair("q", "a short answer"), TextPair("q", "x"), TextPair(None, "a much longer answer than that")]


class SplitRM(LinRM):
    """Keeps its first layer in a file of its own: model.safetensors holds part of the model."""

    model_type = "contract_split_rm"

    def _save(self, folder, state_dict=None):
        from mmreward.core.model import save_weights

        state = state_dict if state_dict is not None else self.state_dict()
        save_weights(folder, {k: v for k, v in state.items() if k.startswith("b.")})
        save_weights(folder, {k: v for k, v in state.items() if k.startswith("a.")}, name="first.safetensors")

    @classmethod
    def _load(cls, folder, body, device, **kw):
        from mmreward.core.model import config_from_dict, load_state_strict, load_weights

        model = cls(config_from_dict(LinConfig, body["config"], cls.model_type))
        state = {**load_weights(folder), **load_weights(folder, name="first.safetensors")}
        load_state_strict(model, state, folder)
        return model


@pytest.fixture
def lin_type():
    registry.register_model(LinRM.model_type, f"{__name__}:LinRM")
    yield LinRM
    registry.MODEL_TYPES.pop(LinRM.model_type, None)


# ------------------------------------------------------------------ inputs
def test_any_ordered_iterable_of_inputs_is_scored_like_a_list():
    """A generator, a numpy object array, dict values: "score takes a list of inputs, got generator"."""
    want = as_inputs(TextPair, [("q", "a"), ("p", "b")])
    assert as_inputs(TextPair, (x for x in [("q", "a"), ("p", "b")])) == want
    assert as_inputs(TextPair, np.array([TextPair("q", "a"), TextPair("p", "b")], dtype=object)) == want
    assert as_inputs(TextPair, {"x": ("q", "a"), "y": ("p", "b")}.values()) == want
    with pytest.raises(TypeError, match="got a set, which has no order"):
        as_inputs(TextPair, {("q", "a"), ("p", "b")})  # scores could not be matched to inputs
    with pytest.raises(TypeError, match=r"got dict; wrap a single input in a list"):
        as_inputs(TextPair, {"prompt": "q", "response": "a"})
    with pytest.raises(TypeError, match=r"got ndarray of shape \(2, 8, 8, 3\): build the inputs \(Episode\(frames, success\)\)"):
        as_inputs(Episode, np.zeros((2, 8, 8, 3), np.uint8))


def test_pandas_frames_and_rows_are_inputs_with_missing_cells_as_none():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame([{"prompt": "q", "response": "a", "id": 1}, {"prompt": None, "response": "b", "id": 2}])
    assert df["prompt"].isna().iloc[1]  # the missing prompt is NaN in the frame
    want = [TextPair("q", "a"), TextPair(None, "b")]
    assert as_inputs(TextPair, df) == want
    assert as_inputs(TextPair, [row for _, row in df.iterrows()]) == want


def test_numpy_strings_are_plain_strings():
    got = as_inputs(StepSolution, [{"problem": np.str_("q"), "steps": np.array(["s1", "s2"])}])
    assert got == [StepSolution("q", ["s1", "s2"])]
    assert type(got[0].problem) is str and all(type(s) is str for s in got[0].steps)
    got = as_inputs(TextPair, [(np.str_("q"), np.str_("a"))])
    assert type(got[0].prompt) is str and type(got[0].response) is str


# ------------------------------------------------------------------ folders and paths
def test_tilde_paths_are_the_home_folder_not_a_folder_named_tilde(lin_type, tmp_path, monkeypatch):
    """save_pretrained("~/rm") made a folder named "~" in the working folder; load("~/rm") said it did not exist."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    torch.manual_seed(0)
    model = LinRM()
    model.save_pretrained("~/rm")
    assert (home / "rm" / "config.json").is_file() and not (work / "~").exists()
    assert torch.equal(mmreward.load("~/rm").score(ITEMS), model.score(ITEMS))
    assert torch.equal(LinRM.from_pretrained("~/rm").score(ITEMS), model.score(ITEMS))
    (home / "rows.jsonl").write_text(json.dumps({"prompt": "q", "response": "x"}) + "\n")
    from mmreward.cli import main

    assert main(["score", "--model", "~/rm", "--data", "~/rows.jsonl", "--json"]) == 0


@pytest.mark.parametrize("bad", [None, 3, ["a"]])
def test_a_path_that_is_not_a_path_names_the_argument(bad):
    with pytest.raises(TypeError, match="a model path must be a folder path"):
        mmreward.load(bad)
    with pytest.raises(TypeError, match="save_pretrained: the folder must be a path"):
        LinRM().save_pretrained(bad)
    with pytest.raises(TypeError, match="from_pretrained: the folder must be a path"):
        LinRM.from_pretrained(bad)


def _rewrite_weights(folder, change):
    from safetensors.torch import load_file, save_file

    from mmreward.core import folders

    path = os.path.join(folder, "model.safetensors")
    save_file(change(load_file(path)), path, metadata={"format": "pt"})
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(folders.build_manifest(folder), f)


def test_integer_weights_are_refused_not_cast_to_whole_numbers(lin_type, tmp_path):
    """load_state_dict cast int32 weights into the float parameters: every reward came out 0."""
    LinRM().save_pretrained(str(tmp_path / "m"))
    _rewrite_weights(str(tmp_path / "m"), lambda s: {k: v.to(torch.int32) for k, v in s.items()})
    with pytest.raises(CheckpointError, match=r"a\.weight is int32, the model expects a floating-point tensor \(float32"):
        mmreward.load(str(tmp_path / "m"))


def test_a_model_saved_in_bf16_loads_in_bf16_and_scores_as_saved(lin_type, tmp_path):
    """dtype=None is "as saved": a bf16 save loaded in float32 (twice the memory, other scores)."""
    torch.manual_seed(0)
    model = LinRM().to(torch.bfloat16)
    model.save_pretrained(str(tmp_path / "bf16"))
    loaded = mmreward.load(str(tmp_path / "bf16"))
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert torch.equal(loaded.score(ITEMS), model.score(ITEMS))
    # an explicit dtype still wins
    assert {p.dtype for p in mmreward.load(str(tmp_path / "bf16"), dtype="fp32").parameters()} == {torch.float32}
    # mixed precision (a bf16 layer under a float32 head) is kept tensor by tensor
    model.b.float()
    model.save_pretrained(str(tmp_path / "mixed"))
    loaded = mmreward.load(str(tmp_path / "mixed"))
    assert loaded.a.weight.dtype == torch.bfloat16 and loaded.b.weight.dtype == torch.float32
    assert torch.equal(loaded.score(ITEMS), model.score(ITEMS))
    # a file holding part of the model casts that part only
    split = SplitRM()
    split.b.to(torch.bfloat16)
    split.save_pretrained(str(tmp_path / "split"))
    loaded = SplitRM.from_pretrained(str(tmp_path / "split"))
    assert loaded.a.weight.dtype == torch.float32 and loaded.b.weight.dtype == torch.bfloat16
    assert torch.equal(loaded.score(ITEMS), split.score(ITEMS))
    # float32 saves are untouched
    LinRM().save_pretrained(str(tmp_path / "fp32"))
    assert {p.dtype for p in mmreward.load(str(tmp_path / "fp32")).parameters()} == {torch.float32}


# ------------------------------------------------------------------ mmreward score
def test_score_cli_refuses_a_prompt_it_would_ignore(lin_type, tmp_path, capsys):
    """--prompt with --data rows, or with a model that takes no prompt, was silently ignored."""
    from mmreward.cli import main

    LinRM().save_pretrained(str(tmp_path / "m"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "p", "response": "ab"}\n')
    assert main(["score", "--model", str(tmp_path / "m"), "--data", str(rows), "--prompt", "other"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--prompt" in err[0] and "--data" in err[0]
    (tmp_path / "a.png").write_bytes(b"")
    assert main(["score", "--model", str(tmp_path / "m"), str(tmp_path / "a.png"), "--prompt", "red"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--prompt is for image scorers; LinRM scores TextPair" in err[0]


def test_score_cli_checks_its_inputs_before_loading_the_model(tmp_path, capsys, monkeypatch):
    """A typo in the data file's name was found only after the (possibly 70B) model had loaded."""
    from mmreward.cli import main

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(registry, "load", no_load)
    assert main(["score", "--model", "whatever", "--data", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["score", "--model", "whatever", "--data", str(tmp_path / "empty.jsonl")]) == 2
    assert "holds no rows" in capsys.readouterr().err
    assert main(["score", "--model", "whatever", str(tmp_path / "gone.npz")]) == 2
    err = capsys.readouterr().err
    assert "input file" in err and "gone.npz" in err
    assert main(["score", "--model", "whatever", "https://example.com/cat.png"]) == 2
    assert "is a URL: mmreward score reads local files" in capsys.readouterr().err
    assert main(["score", "--model", "whatever", "--data", str(tmp_path / "empty.jsonl"), "--batch-size", "0"]) == 2
    assert "--batch-size must be an integer >= 1, got 0" in capsys.readouterr().err


# ------------------------------------------------------------------ the registry
def test_bad_registrations_are_refused_when_made_not_at_every_later_load(tmp_path):
    """register_model("x", 3) raised AttributeError; a layout path without ':' was accepted and then
    every load of an unrecognised folder failed with "No module named ..." that named no layout."""
    with pytest.raises(TypeError, match=r"register_model\('x', ...\): the target must be a class with from_pretrained"):
        registry.register_model("x", 3)
    with pytest.raises(ValueError, match=r"must be a 'module:attribute' path .* got 'nocolon'"):
        registry.register_model("x", "nocolon")
    with pytest.raises(ValueError, match=r"register_layout\('odd'\): detect must be a 'module:attribute' path"):
        registry.register_layout("odd", "nocolon", "a:b")
    assert "x" not in registry.MODEL_TYPES and all(x.name != "odd" for x in registry.LAYOUTS)
    registry.register_model("x_unimportable", "no_such_module_here:Cls")
    try:
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "x_unimportable"}))
        with pytest.raises(registry.LoadError, match="model_type 'x_unimportable' is registered as "
                                                     "'no_such_module_here:Cls', which cannot be imported"):
            mmreward.load(str(tmp_path / "m"))
    finally:
        registry.MODEL_TYPES.pop("x_unimportable", None)


def test_score_cli_refuses_a_preference_row_whose_prompt_it_would_drop(lin_type, tmp_path, capsys):
    """{"messages": [...], "chosen": ..., "rejected": ...} scored both responses without the conversation."""
    from mmreward.cli import main

    LinRM().save_pretrained(str(tmp_path / "m"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}) + "\n")
    assert main(["score", "--model", str(tmp_path / "m"), "--data", str(rows)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "row 0: field 'messages' would be dropped" in err[0] and "rename 'messages' to 'prompt'" in err[0]
    rows.write_text(json.dumps({"prompt": [{"role": "user", "content": "q"}], "chosen": "ab", "rejected": "b"}) + "\n")
    assert main(["score", "--model", str(tmp_path / "m"), "--data", str(rows), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[0])
    assert out["score_chosen"] != out["score_rejected"]


class HalfOut(LinRM):
    """A model whose own code returns its compute dtype (bf16 here; a GPU model would return CUDA tensors)."""

    model_type = "contract_half_out"

    def _score(self, items, batch_size):
        return super()._score(items, batch_size).to(torch.bfloat16)

    def _score_parts(self, items, batch_size):
        return [torch.tensor([1.0, 2.0], dtype=torch.float16) for _ in items]


def test_scores_are_float32_on_the_cpu_whatever_the_model_computes_in():
    model = HalfOut()
    scores = model.score(ITEMS)
    assert scores.dtype == torch.float32 and scores.device.type == "cpu" and scores.shape == (3,)
    parts = model.score_parts(ITEMS)
    assert len(parts) == 3 and all(p.dtype == torch.float32 and p.tolist() == [1.0, 2.0] for p in parts)


def test_a_score_parts_of_the_wrong_length_is_an_error_not_a_misaligned_result():
    class Short(LinRM):
        def _score_parts(self, items, batch_size):
            return [torch.ones(2)] * (len(items) - 1)

    with pytest.raises(RuntimeError, match=r"Short._score_parts returned .* for 3 inputs: one 1-d tensor per input"):
        Short().score_parts(ITEMS)


def test_a_config_json_with_a_byte_order_mark_loads(lin_type, tmp_path):
    """A config.json edited in an editor that writes a UTF-8 BOM was 'corrupt ... Unexpected UTF-8 BOM'."""
    from mmreward.core import folders

    torch.manual_seed(0)
    model = LinRM(LinConfig(width=3))
    model.save_pretrained(str(tmp_path / "m"))
    path = tmp_path / "m" / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(folders.build_manifest(str(tmp_path / "m"))))
    loaded = mmreward.load(str(tmp_path / "m"))
    assert loaded.config == LinConfig(width=3) and torch.equal(loaded.score(ITEMS), model.score(ITEMS))


def test_list_columns_read_by_pandas_or_pyarrow_are_lists():
    """A parquet / pandas list column arrives as a numpy object array: images became one "image" (the
    whole array), messages and steps were refused as not lists."""
    from mmreward.core.inputs import Conversation, VisualSteps

    msgs = np.array([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], dtype=object)
    got = as_inputs(Conversation, [{"messages": msgs, "images": np.array(["a.png", "b.png"], dtype=object)}])
    assert got == [Conversation(list(msgs), ["a.png", "b.png"])]
    assert as_inputs(TextPair, [{"prompt": msgs[:1], "response": "a"}]) == [TextPair([dict(msgs[0])], "a")]
    got = as_inputs(VisualSteps, [{"question": "q", "steps": np.array(["s1"], dtype=object), "images": np.array(["a.png"])}])
    assert got == [VisualSteps("q", ["s1"], ["a.png"])]
    pixels = np.zeros((4, 4, 3), np.uint8)  # one image as pixels stays one image
    (one,) = as_inputs(VisualSteps, [{"question": "q", "steps": ["s"], "images": pixels}])
    assert len(one.images) == 1 and one.images[0] is pixels
    with pytest.raises(DataError, match="field 'steps' must be a non-empty list of strings, got tensor"):
        as_inputs(StepSolution, [{"problem": "q", "steps": torch.tensor([1.0, 2.0])}])


def test_media_paths_of_a_home_folder_data_file_point_next_to_it(tmp_path, monkeypatch):
    """`--data "~/rows.jsonl"` was read from the home folder, but its rows' relative image paths were joined
    onto a "./~" folder of the working directory."""
    from mmreward.core.data import read_records, resolve_media_paths

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path.parent)
    (tmp_path / "rows.jsonl").write_text('{"prompt": "p", "image": "a.png"}\n')
    rows = resolve_media_paths(read_records("~/rows.jsonl"), "~/rows.jsonl")
    assert rows[0]["image"] == str(tmp_path / "a.png")


def test_score_cli_out_writes_the_json_lines_to_a_file(lin_type, tmp_path, capsys):
    """`mmreward score --out F` writes what --json prints (row fields + unrounded scores), the pairwise
    summary on stderr; an --out that is the data file is refused before anything is scored."""
    from mmreward.cli import main

    LinRM().save_pretrained(str(tmp_path / "m"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "p", "response": "ab"}\n{"prompt": "q", "chosen": "abc", "rejected": "a"}\n')
    base = ["score", "--model", str(tmp_path / "m"), "--data", str(rows)]
    assert main([*base, "--json"]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "sub dir" / "scored.jsonl"
    out.parent.mkdir()
    assert main([*base, "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert cap.out == "" and out.read_text() == printed
    assert "2 rows scored" in cap.err and "pairwise accuracy" in cap.err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["score"] == float(mmreward.load(str(tmp_path / "m")).score([("p", "ab")])[0])
    assert main([*base, "--out", str(rows)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "--data" in err[0]
    assert main([*base, "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_data_files_with_a_byte_order_mark_are_read(tmp_path):
    """JSON / JSONL saved with a UTF-8 byte-order mark (Windows editors, Excel's UTF-8 export) were
    refused ("line 1 is not valid JSON: Unexpected UTF-8 BOM"); the mark is no data."""
    from mmreward.core.data import read_records

    rows = [{"prompt": "p", "response": "é"}, {"prompt": "q", "response": "b"}]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in rows).encode())
    assert read_records(str(jsonl)) == rows
    js = tmp_path / "rows.json"
    js.write_bytes(b"\xef\xbb\xbf" + json.dumps(rows).encode())
    assert read_records(str(js)) == rows
    # only a leading mark: one inside a later line is still that line's text, refused as JSON
    jsonl.write_bytes(json.dumps(rows[0]).encode() + b"\n\xef\xbb\xbf" + json.dumps(rows[1]).encode())
    with pytest.raises(Exception, match="line 2"):
        read_records(str(jsonl))


def test_score_cli_progress_chunks_give_the_same_scores_and_name_the_row(lin_type, tmp_path, capsys, monkeypatch):
    """`mmreward score --progress` scores in chunks of whole batches behind a bar on stderr: the same scores as
    one call, and a model error in a later chunk names the file's row (not the row within its chunk)."""
    from mmreward.cli import main

    LinRM().save_pretrained(str(tmp_path / "m"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": "p", "response": "a" * (1 + i % 7)}) + "\n" for i in range(40)))
    base = ["score", "--model", str(tmp_path / "m"), "--data", str(rows), "--json", "--batch-size", "2"]
    assert main([*base, "--no-progress"]) == 0
    plain = capsys.readouterr().out
    assert main([*base, "--progress"]) == 0
    cap = capsys.readouterr()
    assert cap.out == plain and "40/40" in cap.err
    real = LinRM._score

    def refuse_long(self, items, batch_size):
        for k, it in enumerate(items):
            if len(it.response) == 9:
                raise ValueError(f"input {k}: response too long")
        return real(self, items, batch_size)

    monkeypatch.setattr(LinRM, "_score", refuse_long)
    lines = rows.read_text().splitlines()
    lines[37] = json.dumps({"prompt": "p", "response": "b" * 9})
    rows.write_text("\n".join(lines) + "\n")
    for flag in ("--progress", "--no-progress"):
        assert main([*base, flag]) == 2
        assert "rows.jsonl: row 37: response too long" in capsys.readouterr().err
