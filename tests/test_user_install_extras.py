"""A user who installs mmreward with only some extras (none, `text`, `vision`, `serve`, `robotics`): a package
an extra brings that is not installed is one line naming the extra (exit 2 from the CLI, an ImportError from
Python), checked before a command does any work; `--help` needs none of them; and every package the code
imports is declared in the extra of the domain that imports it (pyproject.toml).

A missing package is simulated in-process: ``sys.modules[name] = None`` makes ``import name`` fail as if it
were not installed (and :func:`mmreward.core.extras.installed` report it missing)."""
import ast
import os
import re
import sys
import tomllib

import pytest
import torch

import mmreward
from mmreward.cli import main
from mmreward.core.extras import INCLUDES, PACKAGES, MissingExtraError, extra_of_module, missing_extra, needs_extra

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
for sub in ("", "text"):
    if os.path.join(HERE, sub) not in sys.path:
        sys.path.insert(0, os.path.join(HERE, sub))


def _block(monkeypatch, *names):
    """Make ``import name`` fail for each of ``names`` (and their submodules), as on a machine without them."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def text_rm(tmp_path_factory):
    pytest.importorskip("transformers")
    from text_rm_fixtures import llama_config, word_tokenizer

    from mmreward.text import RewardModel

    torch.manual_seed(0)
    folder = str(tmp_path_factory.mktemp("extras") / "rm")
    RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer()).save_pretrained(folder)
    return folder


# ------------------------------------------------------------------ pyproject.toml <-> the code's imports
def _pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _dist(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower()


def _declared(extra: str, project=None) -> set:
    project = project or _pyproject()
    out = set()
    for req in project["optional-dependencies"][extra]:
        nested = re.fullmatch(r"mmreward\[(.*)\]", req)
        out |= set().union(*(_declared(e, project) for e in nested.group(1).split(","))) if nested else {_dist(req)}
    return out


# packages that come as hard dependencies of a package an extra declares (not declared themselves)
CARRIED_BY = {"tokenizers": "transformers", "huggingface_hub": "transformers", "packaging": "transformers",
              "starlette": "fastapi"}


def test_extras_table_matches_pyproject():
    """mmreward.core.extras names the extra that brings each package; pyproject.toml is what pip installs, so
    every (package, extra) pair there must hold, and every package an extra declares must be in the table."""
    project = _pyproject()
    for module, (dist, extras) in PACKAGES.items():
        for extra in extras:
            declared = _declared(extra, project)
            dist_name = _dist(dist)
            assert dist_name in declared or CARRIED_BY.get(dist_name) in declared, \
                f"{module}: {dist} is named as coming with mmreward[{extra}], which does not declare it"
    known = {_dist(dist) for dist, _ in PACKAGES.values()}
    core = {_dist(r) for r in project["dependencies"]}
    for extra in ("text", "vision", "published", "robotics", "serve", "serve-ray", "triton"):
        assert _declared(extra, project) - core <= known, (extra, _declared(extra, project) - core - known)
    for extra, inner in INCLUDES.items():
        assert set(inner) <= {m.group(1) for r in project["optional-dependencies"][extra]
                              for m in [re.fullmatch(r"mmreward\[(.*)\]", r)] if m}, extra


def _domain(rel: str):
    """The extra of a source file (core code, None, reads what it finds: CSV without tensorboard …)."""
    parts = rel[:-3].split("/")
    module = ".".join(parts if parts[0] == "mmreward" else ["mmreward"] + parts)
    return extra_of_module(module.removesuffix(".__init__"))


# imported only when installed (checked with find_spec first): optional inside the extra, on purpose
GUARDED = {("triton", "robotics")}


def test_every_package_a_domain_imports_is_declared_in_its_extra():
    """robotics/rl/expert.py imports scipy (eval-expert / eval-rl intervals) and text / vision chat templates import
    jinja2, which their extras did not declare (they came only through metaworld and torch)."""
    std = set(sys.stdlib_module_names)
    project = _pyproject()
    core = {_dist(r) for r in project["dependencies"]}
    missing = set()
    for top in ("mmreward", "text", "vision", "robotics"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
                extra = _domain(rel)
                if extra is None:
                    continue
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
                declared = _declared(extra, project) | core
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        modules = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        modules = [node.module]
                    else:
                        continue
                    for module in modules:
                        top_name = module.split(".")[0]
                        if top_name in std or top_name in ("mmreward", "__future__") or (top_name, extra) in GUARDED:
                            continue
                        dist = _dist(PACKAGES.get(top_name, (top_name,))[0])
                        if dist not in declared and CARRIED_BY.get(dist) not in declared:
                            missing.add((rel, top_name, extra))
    assert not missing, sorted(missing)


# ------------------------------------------------------------------ the CLI: one line, the extra, before any work
def test_text_train_without_transformers_names_the_text_extra_before_any_work(tmp_path, capsys, monkeypatch):
    (tmp_path / "prefs.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    _block(monkeypatch, "transformers")
    out = tmp_path / "runs" / "rm"
    assert main(["text", "train", "--model", "whatever", "--data", str(tmp_path / "prefs.jsonl"),
                 "--out", str(out)]) == 2
    line = _one_line(capsys)
    # was: "mmreward text train: error: ModuleNotFoundError: No module named 'transformers'"
    assert line == "mmreward text train: error: transformers is not installed: pip install 'mmreward[text]'", line
    assert not (tmp_path / "runs").exists()


def test_prm_without_tokenizers_names_the_text_extra(capsys, monkeypatch, tmp_path):
    _block(monkeypatch, "tokenizers")
    assert main(["prm", "train", "--synthetic", "8", "--out", str(tmp_path / "prm"), "--max-steps", "1"]) == 2
    assert "pip install 'mmreward[text]'" in _one_line(capsys)
    assert not (tmp_path / "prm").exists()


def test_help_needs_no_extra(capsys, monkeypatch):
    """The check before a command runs must not refuse ``--help`` (nor a bare command group's usage)."""
    _block(monkeypatch, "transformers", "tokenizers", "PIL", "cv2", "fastapi", "uvicorn", "ray", "gymnasium")
    for argv in (["text", "train", "--help"], ["prm", "--help"], ["serve", "--help"], ["vision", "--help"],
                 ["robotics", "score", "--help"], ["score", "--help"], ["text"]):
        code = main(argv)
        out, err = capsys.readouterr()
        assert "usage:" in out and "not installed" not in err, (argv, err)
        assert code == (2 if argv == ["text"] else 0), argv  # a bare group prints its usage with status 2


def test_score_names_the_extra_of_the_model(text_rm, tmp_path, capsys, monkeypatch):
    """`mmreward score` serves every domain: the extra named is the model's (text for a text RM)."""
    (tmp_path / "rows.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    _block(monkeypatch, "transformers")
    assert main(["score", "--model", text_rm, "--data", str(tmp_path / "rows.jsonl")]) == 2
    line = _one_line(capsys)
    assert line.startswith("mmreward score: error: RewardModel (") and \
        line.endswith("needs transformers, which is not installed: pip install 'mmreward[text]'"), line
    assert main(["info", text_rm, "--load"]) == 2
    assert "pip install 'mmreward[text]'" in _one_line(capsys)


def test_score_images_without_pillow_names_the_vision_extra(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from mmreward.vision import synthetic as S
    from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel

    torch.manual_seed(0)
    ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=8)).save_pretrained(str(tmp_path / "m"))
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    _block(monkeypatch, "PIL")
    assert main(["score", "--model", str(tmp_path / "m"), "--prompt", "red", str(tmp_path / "a.png")]) == 2
    assert _one_line(capsys) == "mmreward score: error: pillow is not installed: pip install 'mmreward[vision]'"


def test_a_domain_import_error_raised_from_the_missing_package_names_the_extra(tmp_path, capsys, monkeypatch):
    """robotics' video reader raises "video I/O needs OpenCV: pip install opencv-python" from the missing cv2: the
    line names the extra (was: "ImportError: video I/O needs OpenCV: pip install opencv-python (No module ...)")."""
    from mmreward.robotics.reward import RND, RNDConfig

    torch.manual_seed(0)
    RND(RNDConfig(image_size=32, channels=(4, 8, 8), feature_dim=16, hidden_dim=16)).save_pretrained(str(tmp_path / "r"))
    (tmp_path / "episode.mp4").write_bytes(b"\0" * 64)
    _block(monkeypatch, "cv2")
    assert main(["score", "--model", str(tmp_path / "r"), str(tmp_path / "episode.mp4")]) == 2
    assert _one_line(capsys) == ("mmreward score: error: video I/O needs opencv-python, which is not installed: pip "
                                 "install 'mmreward[robotics]'")


def test_serve_checks_its_packages_before_loading_the_model(monkeypatch, capsys, tmp_path):
    """uvicorn was imported after the model had loaded (minutes for a 7B RM), then failed."""
    import mmreward.registry as registry

    def load(*a, **k):
        raise AssertionError("the model was loaded before the server's packages were checked")

    monkeypatch.setattr(registry, "load", load)
    _block(monkeypatch, "uvicorn")
    assert main(["serve", "--model", str(tmp_path)]) == 2
    assert _one_line(capsys) == "mmreward serve: error: uvicorn is not installed: pip install 'mmreward[serve]'"
    monkeypatch.undo()
    monkeypatch.setattr(registry, "load", load)
    _block(monkeypatch, "ray")
    assert main(["serve", "--model", str(tmp_path), "--ray"]) == 2
    assert "pip install 'mmreward[serve-ray]'" in _one_line(capsys)


def test_debug_keeps_the_traceback(monkeypatch, tmp_path):
    _block(monkeypatch, "uvicorn")
    monkeypatch.setenv("MMREWARD_DEBUG", "1")
    with pytest.raises(MissingExtraError):
        main(["serve", "--model", str(tmp_path)])


def test_top_level_help_aligns_every_command(capsys):
    assert main(["--help"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("  ")]
    starts = {len(x) - len(x[2:].split(None, 1)[1]) for x in lines}  # column where each help text begins
    assert len(lines) >= 10 and len(starts) == 1, lines  # `score-video` pushed its help one column right


# ------------------------------------------------------------------ Python: mmreward.load
def test_load_without_transformers_is_an_import_error_naming_the_extra(text_rm, monkeypatch):
    _block(monkeypatch, "transformers")
    with pytest.raises(ImportError, match=r"needs transformers, which is not installed: pip install 'mmreward\[text\]'"):
        mmreward.load(text_rm)


def test_robotics_models_load_without_text_packages(monkeypatch, tmp_path):
    from mmreward.robotics.reward import RND, RNDConfig

    torch.manual_seed(0)
    RND(RNDConfig(image_size=32, channels=(4, 8, 8), feature_dim=16, hidden_dim=16)).save_pretrained(str(tmp_path / "r"))
    _block(monkeypatch, "transformers", "tokenizers", "PIL", "cv2", "diffusers")
    assert type(mmreward.load(str(tmp_path / "r"))).__name__ == "RND"


def test_hub_id_without_huggingface_hub_names_what_to_install(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    _block(monkeypatch, "huggingface_hub")
    with pytest.raises(ImportError, match=r"fetching 'someorg/somemodel' from the hub needs huggingface_hub, which is "
                                          r"not installed: pip install 'mmreward\[text\]'"):
        mmreward.load("someorg/somemodel")  # was: CheckpointError "... ModuleNotFoundError: No module named ..."


def test_config_without_model_type_is_not_called_missing(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(mmreward.registry.LoadError) as e:
        mmreward.load(str(tmp_path))
    assert "a config.json without model_type" in str(e.value) and "no config.json" not in str(e.value)


def test_a_module_missing_inside_an_installed_package_is_left_alone():
    """An old transformers lacking a submodule is no missing extra: installing the extra would not help."""
    pytest.importorskip("transformers")
    e = ModuleNotFoundError("No module named 'transformers.models.nope'", name="transformers.models.nope")
    assert missing_extra(e) is None
    with pytest.raises(ModuleNotFoundError, match="transformers.models.nope"), needs_extra("text"):
        raise e
    inner = ModuleNotFoundError("No module named 'mmreward.nope'", name="mmreward.nope")
    assert missing_extra(inner) is None


def test_env_report_says_which_extras_are_complete(monkeypatch):
    from mmreward.env_report import collect, format_report

    _block(monkeypatch, "fastapi")
    report = collect()
    assert report["extras"]["serve"].startswith("missing ") and "fastapi" in report["extras"]["serve"]
    assert "pillow" in report["packages"] and "uvicorn" in report["packages"]
    assert "extras (pip install 'mmreward[extra]'):" in format_report(report)


def test_missing_extra_error_survives_pickling():
    """Ray replicas and DataLoader workers send errors pickled: rebuilt from its message alone it read
    "<message> is not installed: pip install <message>"."""
    import pickle

    e = MissingExtraError("transformers", "text", "text_reward_model (runs/rm)")
    back = pickle.loads(pickle.dumps(e))
    assert str(back) == str(e) and back.extra == "text" and back.name == "transformers" and isinstance(back, ImportError)


def test_a_broken_installed_package_is_not_reported_as_a_missing_extra(tmp_path, monkeypatch):
    """A module missing INSIDE an installed cv2 (a numpy ABI mismatch: No module named 'numpy._core') is that
    error: told to install the extra, a user would reinstall it and change nothing."""
    from mmreward.core.extras import MissingExtraError
    from mmreward.robotics.data import video

    (tmp_path / "cv2").mkdir()
    (tmp_path / "cv2" / "__init__.py").write_text("import numpy._no_such_core\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cv2", raising=False)
    with pytest.raises(ModuleNotFoundError) as info:
        video._cv2()
    assert not isinstance(info.value, MissingExtraError) and info.value.name == "numpy._no_such_core"
