"""Loading edge cases of the model contract: checkpoints a diverged run saved (NaN weights), folders copied
in part (``mmreward info`` without ``--load``)."""
import json
import os
from dataclasses import dataclass

import pytest
import torch

import mmreward
from mmreward.core.folders import CheckpointError
from mmreward.core.model import Pretrained, check_finite_weights
from mmreward.registry import MODEL_TYPES


@dataclass
class EdgeConfig:
    width: int = 3
    clip: float = 1.0


class Edge(Pretrained, torch.nn.Module):
    model_type = "edge_tiny"
    config_class = EdgeConfig

    def __init__(self, config=None):
        super().__init__()
        self.config = config or EdgeConfig()
        self.lin = torch.nn.Linear(self.config.width, 2)
        self.out = torch.nn.Linear(2, 1)
        self.register_buffer("mask", torch.zeros(2))


@pytest.fixture
def registered():
    MODEL_TYPES["edge_tiny"] = f"{__name__}:Edge"
    yield
    MODEL_TYPES.pop("edge_tiny", None)


def _save_with(folder, **tensors):
    m = Edge()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    for key, (index, value) in tensors.items():
        state[key].view(-1)[index] = value
    m.save_pretrained(str(folder), state_dict=state)
    return m


@pytest.mark.parametrize("key,value,what", [("out.weight", float("nan"), "NaN"), ("lin.bias", float("inf"), "inf"),
                                             ("out.bias", float("-inf"), "inf")])
def test_non_finite_parameters_are_refused_naming_folder_and_key(tmp_path, registered, key, value, what):
    _save_with(tmp_path / "m", **{key: (0, value)})
    for load in (lambda: Edge.from_pretrained(str(tmp_path / "m")), lambda: mmreward.load(str(tmp_path / "m")),
                 lambda: Edge.from_pretrained(str(tmp_path / "m"), dtype="bf16")):
        with pytest.raises(CheckpointError, match=rf"{tmp_path / 'm'}: weight '{key}' holds {what}.*diverged"):
            load()


def test_nan_is_reported_at_the_first_offending_key(tmp_path):
    _save_with(tmp_path / "m", **{"out.weight": (1, float("nan")), "lin.weight": (4, float("nan"))})
    with pytest.raises(CheckpointError, match="weight 'lin.weight' holds NaN"):
        Edge.from_pretrained(str(tmp_path / "m"))


def test_inf_in_a_buffer_loads_nan_in_a_buffer_does_not(tmp_path):
    _save_with(tmp_path / "inf", mask=(0, float("-inf")))
    m = Edge.from_pretrained(str(tmp_path / "inf"))
    assert m.mask[0] == float("-inf")
    _save_with(tmp_path / "nan", mask=(1, float("nan")))
    with pytest.raises(CheckpointError, match="buffer 'mask' holds NaN"):
        Edge.from_pretrained(str(tmp_path / "nan"))


def test_finite_check_leaves_healthy_models_and_nan_only_mode():
    m = Edge()
    check_finite_weights(m, "x")
    with torch.no_grad():
        m.lin.weight[0, 0] = float("inf")  # a large weight cast to fp16 becomes inf: not a diverged run
    check_finite_weights(m, "x", nan_only=True)
    with pytest.raises(CheckpointError, match="'lin.weight' holds inf"):
        check_finite_weights(m, "x")


def test_info_without_load_reports_a_missing_weights_file(tmp_path, registered, capsys):
    from mmreward.cli import main

    folder = tmp_path / "copy"
    Edge().save_pretrained(str(folder))
    os.remove(folder / "manifest.json")  # a manual copy: no manifest lists the files
    assert main(["info", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reads_as"] == "edge_tiny"
    os.remove(folder / "model.safetensors")
    assert main(["info", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no model.safetensors" in err and str(folder) in err
    os.symlink(tmp_path / "gone.safetensors", folder / "model.safetensors")  # a hub blob that never arrived
    assert main(["info", str(folder)]) == 2
    assert "which does not exist" in capsys.readouterr().err


def test_info_json_is_strict_json_with_an_infinite_config_value(tmp_path, registered, capsys):
    from mmreward.cli import main

    Edge(EdgeConfig(clip=float("inf"))).save_pretrained(str(tmp_path / "m"))
    assert main(["info", str(tmp_path / "m"), "--load", "--json"]) == 0
    info = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert info["config"] == {"width": 3, "clip": None}


def test_info_of_a_hub_id_without_load_does_not_ask_for_the_weights_it_did_not_fetch(tmp_path, registered, capsys,
                                                                                     monkeypatch):
    import shutil

    import huggingface_hub

    from mmreward.cli import main

    saved = tmp_path / "saved"
    Edge().save_pretrained(str(saved))
    fetched = []

    def snapshot_download(repo_id, allow_patterns=None, **kw):  # the hub cache, offline: JSON only without --load
        folder = tmp_path / f"snapshot{len(fetched)}"
        shutil.copytree(saved, folder)
        if "*.safetensors" not in allow_patterns:
            os.remove(folder / "model.safetensors")
        fetched.append(allow_patterns)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.chdir(tmp_path)
    assert main(["info", "org/edge", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["reads_as"] == "edge_tiny" and info["manifest"].startswith("not checked")
    assert main(["info", "org/edge", "--load", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == 11
    os.remove(saved / "manifest.json")
    assert main(["info", "org/edge"]) == 0


def test_buffers_a_model_computes_itself_are_not_checked():
    m = Edge()
    m.register_buffer("table", torch.tensor([float("nan"), 0.0]), persistent=False)  # not in the checkpoint
    check_finite_weights(m, "x")


def test_resaving_keeps_files_a_user_added_to_the_saved_folder(tmp_path):
    from mmreward.core.folders import read_manifest, verify_folder

    folder = tmp_path / "m"
    Edge().save_pretrained(str(folder))
    (folder / "README.md").write_text("eval: 0.93\n")  # added by hand after saving
    (folder / "evals").mkdir()
    (folder / "evals" / "rewardbench.json").write_text("{}")
    (folder / "extra.safetensors").write_bytes(b"x")
    manifest = read_manifest(str(folder))
    manifest["files"]["extra.safetensors"] = {"bytes": 1}  # a file the previous save wrote, this one does not
    (folder / "manifest.json").write_text(json.dumps(manifest))
    m = Edge(EdgeConfig(width=5))
    m.save_pretrained(str(folder))  # e.g. training resumed into the same folder
    assert (folder / "README.md").read_text() == "eval: 0.93\n" and (folder / "evals" / "rewardbench.json").exists()
    assert not (folder / "extra.safetensors").exists()
    verify_folder(str(folder), checksums=True)  # the kept files are in the new manifest
    assert Edge.from_pretrained(str(folder)).config.width == 5



def test_a_load_option_the_model_does_not_take_is_named(tmp_path, registered):
    """`mmreward.load(folder, foo=1)` on a model with the default loader (image scorers, VLM RMs, Diffusion
    Reward) ended in a TypeError from inside ``_load`` ("got an unexpected keyword argument 'foo'")."""
    Edge().save_pretrained(str(tmp_path / "m"))
    for load in (mmreward.load, Edge.from_pretrained):
        with pytest.raises(ValueError, match=r"^foo= is not an option of 'edge_tiny' models \(Edge\); they take no "
                                             r"options besides device / dtype$"):
            load(tmp_path / "m", foo=1)
    assert isinstance(mmreward.load(tmp_path / "m"), Edge)


@pytest.mark.parametrize("repo_files, fetched", [
    (["ImageReward.pt", "med_config.json"], {"ImageReward.pt"}),                              # a .pt checkpoint
    (["config.json", "pytorch_model.bin", "training_args.bin"], {"pytorch_model.bin", "training_args.bin"}),
    (["config.json", "model.safetensors", "pytorch_model.bin"], set()),                       # one copy is enough
    (["model.safetensors", "aesthetic.pth", "checkpoint-9/optimizer.pt", "original/consolidated.00.pth"],
     {"aesthetic.pth"}),                                                                     # top level only
    (None, set()),                                                                           # listing failed
])
def test_a_hub_id_fetches_the_weight_files_its_repository_has(monkeypatch, repo_files, fetched):
    """`mmreward.load("THUDM/ImageReward")` fetched JSON and *.safetensors only: ImageReward.pt, HPSv2's
    *_compressed.pt, the aesthetic MLP's .pth and .bin-only repositories arrived without their weights."""
    import huggingface_hub

    from mmreward.registry import resolve_folder

    asked = []

    def list_repo_files(repo_id, **kw):
        if repo_files is None:
            raise OSError("offline")
        return repo_files

    monkeypatch.setattr(huggingface_hub, "list_repo_files", list_repo_files)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, allow_patterns=None, **kw:
                        asked.append(allow_patterns) or "/snapshot")
    assert resolve_folder("org/scorer") == "/snapshot"
    assert "*.safetensors" in asked[0] and {p for p in asked[0] if not p.startswith("*")} == fetched
    assert not any(p.endswith((".pt", ".pth", ".bin")) for p in asked[0] if p.startswith("*"))
    assert resolve_folder("org/scorer", weights=False) == "/snapshot"
    assert "*.safetensors" not in asked[1] and all(p.startswith("*") for p in asked[1])


def test_a_file_that_is_no_torch_save_file_is_named(tmp_path):
    """An error page saved as `ImageReward.pt` got torch's "… use _use_new_zipfile_serialization=True" advice
    (save it again another way), which cannot help; a legacy (pre-zip) torch file still reads."""
    from mmreward.core.weights import read_torch_state

    page = tmp_path / "ImageReward.pt"
    page.write_text("<html><body>404 Not Found</body></html>")
    with pytest.raises(CheckpointError, match=r"ImageReward.pt is not a torch.save file \(it begins b'<html><body>404"):
        read_torch_state(str(page))
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.arange(3.0)}, legacy, _use_new_zipfile_serialization=False)
    assert read_torch_state(str(legacy))["w"].tolist() == [0.0, 1.0, 2.0]
    (tmp_path / "lfs.pt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    with pytest.raises(CheckpointError, match="Git LFS pointer"):
        read_torch_state(str(tmp_path / "lfs.pt"))


def test_a_torch_file_that_cannot_be_read_is_not_called_a_web_page(tmp_path):
    """A truncated zip checkpoint and a legacy torch file that pickles an object are torch files: the error
    says what is wrong with them (truncated, not tensors only), not "not a torch.save file"."""
    import datetime

    from mmreward.core.weights import read_torch_state

    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(64.0)}, good)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:200])
    torch.save({"w": torch.zeros(2), "o": datetime.date(2020, 1, 1)}, tmp_path / "legacy.pt",
               _use_new_zipfile_serialization=False)
    for name in ("cut.pt", "legacy.pt"):
        with pytest.raises(CheckpointError, match=r"cannot read .* as a tensors-only torch file") as info:
            read_torch_state(str(tmp_path / name))
        assert "not a torch.save file" not in str(info.value)
