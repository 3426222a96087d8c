"""A new user's walk through docs/generative.md, models.md, text.md and ops.md: the examples run as written
(tiny models in place of hub ones) and the sentences checked here say what the code does."""
import os
import re
import sys
import types

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DOCS = ["generative", "prm", "serving", "text", "models", "published_models", "ops", "reliability"]


def _doc(name: str) -> str:
    with open(os.path.join(ROOT, "docs", f"{name}.md"), encoding="utf-8") as f:
        return f.read()


def _python_block_after(text: str, heading: str) -> str:
    start = text.index(heading)
    m = re.search(r"```python\n(.*?)```", text[start:], flags=re.S)
    return m.group(1)


def test_the_generative_quick_start_runs_as_written(tmp_path, monkeypatch):
    """docs/generative.md "Scoring, saving and loading", with a tiny Llama in place of a hub model (the
    cuda / bf16 load on the CPU)."""
    from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

    tokenizer = word_tokenizer(["2 + 2 = 4 5 Is the answer correct (Yes/No)? Yes No A B"])
    model = tiny_llama(len(tokenizer), hidden=16, layers=1, heads=2)
    code = _python_block_after(_doc("generative"), "## Scoring, saving and loading")
    code = code.replace('device="cuda"', 'device="cpu"')
    monkeypatch.chdir(tmp_path)
    scope = {"model": model, "tokenizer": tokenizer}
    exec(compile(code, "docs/generative.md", "exec"), scope)
    from mmreward.text.generative import GenRM

    judge = scope["judge"]
    assert type(judge) is GenRM
    from mmreward.core.inputs import TextPair
    got = scope["genrm"].score([TextPair("2 + 2 =", "4")])
    assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape == (1,)
    assert sorted(os.listdir(tmp_path / "runs" / "genrm")) == ["config.json", "lm", "manifest.json"]


def test_the_model_type_example_of_models_md_runs_and_round_trips(tmp_path, monkeypatch):
    """docs/models.md "Adding a model type": the class, as written, scores, saves and is opened by mmreward.load."""
    import mmreward
    import mmreward.registry as registry

    monkeypatch.setattr(registry, "MODEL_TYPES", dict(registry.MODEL_TYPES))
    code = _python_block_after(_doc("models"), "## Adding a model type")
    module = types.ModuleType("docs_models_example")  # a module of the user's, as register_model records it
    monkeypatch.setitem(sys.modules, module.__name__, module)
    scope = module.__dict__
    exec(compile(code, "docs/models.md", "exec"), scope)
    m = scope["LengthRM"](scope["LengthRMConfig"](scale=0.5))
    from mmreward.core.inputs import TextPair

    assert m.score([TextPair("q", "abcd"), {"prompt": "q", "response": "ab"}]).tolist() == [2.0, 1.0]
    m.save_pretrained(str(tmp_path / "len"))
    back = mmreward.load(str(tmp_path / "len"))
    assert type(back).__name__ == "LengthRM" and back.config.scale == 0.5


def test_text_md_says_which_files_a_hub_id_fetches(monkeypatch):
    """text.md said a hub id fetches "JSON, safetensors and tokenizer files only"; the loader also fetches the
    top-level .pt / .pth checkpoints published scorers ship (and .bin where there are no safetensors), as
    models.md says."""
    import huggingface_hub

    from mmreward.registry import _weight_patterns

    files = ["config.json", "model.safetensors", "ImageReward.pt", "mlp.pth", "pytorch_model.bin",
             "checkpoint-1/optimizer.pt"]
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id: files)
    assert _weight_patterns("org/name") == ["*.safetensors", "ImageReward.pt", "mlp.pth"]
    text = _doc("text")
    assert "JSON, safetensors and tokenizer files only" not in text
    assert "as [models.md](models.md) lists" in text
    assert ".pth` checkpoints published scorers ship" in _doc("models")


def test_ops_md_promises_only_what_every_backend_gives_for_an_infinite_bce_logit():
    """ops.md said an infinite step logit on the wrong side of its label gives a +inf BCE loss; the C++ and
    reference backends disagree (NaN on one, +inf on the other), and both are never finite, which is the
    promise the page keeps."""
    import mmreward.ops as ops

    hidden, w = torch.ones(1, 3, 4), torch.zeros(4)
    results = {}
    for backend in ops.available_backends("step_bce_loss", "cpu"):
        with ops.use_backend(backend):
            for bias, label in ((float("inf"), 0.0), (float("-inf"), 1.0)):
                loss = ops.step_bce_loss(hidden, w, w, torch.tensor([label]), b_good=torch.tensor(bias),
                                         b_bad=torch.tensor(0.0), step_index=torch.tensor([[0, 1]]), reduction="none")
                assert not torch.isfinite(loss).any(), (backend, bias, label)
                results[(backend, bias)] = loss.item()
    text = _doc("ops")
    assert "on the wrong side of\n  its label is +inf" not in text and "wrong side of its label is +inf" not in text
    assert "NaN or +inf, never finite" in text


HISTORY = [r"\bused to\b", r"\bno longer\b", r"\bfails on the old\b", r"\bthe old parsers?\b",
           r"\*\*Other construction paths\*\* stay\b",
           # developers' circumstances, not the user's: why something was not run, what is still to do
           r"\bbuild environment\b", r"^## Not done yet"]


@pytest.mark.parametrize("name", USER_DOCS)
def test_user_docs_tell_what_is_not_how_it_changed(name):
    """The pages are for users: no sentence about how the code used to behave or what its developers lacked."""
    text = _doc(name)
    found = [m.group(0) for p in HISTORY for m in re.finditer(p, text, flags=re.M)]
    assert not found, f"docs/{name}.md: {found}"


def test_serving_md_says_how_unknown_routes_are_counted(monkeypatch):
    """A user who points a trainer at a wrong route looks in /metrics for the 404s: they are counted under the one
    endpoint "(routing)" (a scanner's paths add no label values), as the page says."""
    import httpx

    from mmreward.serve import BackgroundServer, ServeConfig
    monkeypatch.syspath_prepend(os.path.join(ROOT, "tests", "serve"))
    from serve_toys import ToyTextScorer

    with BackgroundServer(ToyTextScorer(), ServeConfig(port=0)) as url:
        assert httpx.post(url + "/get_rewards", json={"query": ["a"]}).status_code == 404
        assert httpx.post(url + "/no/such/" + "x" * 40, json={}).status_code == 404
        assert httpx.get(url + "/score").status_code == 405
        metrics = httpx.get(url + "/metrics").text
    assert 'requests_total{code="404",endpoint="(routing)"} 2' in metrics
    assert 'requests_total{code="405",endpoint="(routing)"} 1' in metrics
    assert "/get_rewards" not in metrics and "no/such" not in metrics  # no label value per path
    assert "counted under the one endpoint `(routing)`" in _doc("serving")


def test_text_md_says_how_a_bad_rows_place_is_named(tmp_path):
    """text.md promised "the file, row (and JSONL line)" for every invalid row; a field error names the row only,
    counted from 0 without blank lines, so a user looking for line 1 of a file with blank lines looked at the
    wrong one. The page says how rows are counted, and that a line that does not parse is named by its line."""
    from mmreward.core.data import DataError
    from mmreward.text.data import load_preference_pairs

    good = '{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
    bad_field = tmp_path / "train.jsonl"
    bad_field.write_text(good + "\n\n" + '{"prompt": "a", "chosen": 5, "rejected": "c"}\n')
    with pytest.raises(DataError, match=r"train.jsonl: row 1: field 'chosen'"):
        load_preference_pairs(str(bad_field))
    bad_json = tmp_path / "held.jsonl"
    bad_json.write_text(good + "\n\n" + good + "{not json\n")
    with pytest.raises(DataError, match=r"held.jsonl: line 5 \(row 2\) is not valid JSON"):
        load_preference_pairs(str(bad_json))
    text = _doc("text")
    assert "row (and JSONL line) and field" not in text
    assert "rows count from 0 and leave blank lines out" in text
