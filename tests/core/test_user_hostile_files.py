"""Folders and files a service's users upload, crafted or broken: a manifest listing paths outside the folder,
links out of a saved folder, deeply nested JSON, a pickle where safetensors belong. Each is one error naming
the file, before anything outside the folder is read and without unpickling anything."""
import json
import os
import struct
from dataclasses import dataclass

import pytest
import torch

import mmreward
from mmreward.core import checkpoint as ck
from mmreward.core import folders as F
from mmreward.core.folders import CheckpointError
from mmreward.core.model import Pretrained
from mmreward.core.weights import read_json, read_weight_file, weight_file_problem
from mmreward.registry import MODEL_TYPES


@dataclass
class HostileConfig:
    width: int = 2


class Hostile(Pretrained, torch.nn.Module):
    model_type = "hostile_tiny"
    config_class = HostileConfig

    def __init__(self, config=None):
        super().__init__()
        self.config = config or HostileConfig()
        self.lin = torch.nn.Linear(self.config.width, 1)


@pytest.fixture
def saved(tmp_path):
    MODEL_TYPES["hostile_tiny"] = f"{__name__}:Hostile"
    folder = tmp_path / "m"
    Hostile().save_pretrained(str(folder))
    yield folder
    MODEL_TYPES.pop("hostile_tiny", None)


def _edit_manifest(folder, edit):
    path = folder / "manifest.json"
    body = json.loads(path.read_text())
    edit(body["files"])
    path.write_text(json.dumps(body))


@pytest.mark.parametrize("entry", ["../secret", "/SECRET", "a/../../secret", "./config.json"])
def test_a_manifest_path_outside_the_folder_is_refused_before_that_file_is_read(saved, tmp_path, monkeypatch, entry):
    secret = tmp_path / "secret"
    secret.write_text("x" * 1234)
    _edit_manifest(saved, lambda files: files.update({entry.replace("/SECRET", str(secret)): {"bytes": 1}}))
    hashed = []
    monkeypatch.setattr(F, "file_sha256", lambda p: hashed.append(p) or "0" * 64)
    monkeypatch.setenv("MMREWARD_VERIFY_CHECKSUMS", "1")
    with pytest.raises(CheckpointError, match=r"manifest\.json: entry .* not a plain relative path inside the folder") as e:
        mmreward.load(str(saved))
    assert "1234" not in str(e.value) and hashed == []  # the outside file's size is not told, nor its bytes read


@pytest.mark.parametrize("entry,message", [(5, "must be an object"), ({"bytes": "7"}, "not a file size"),
                                           ({"bytes": True}, "not a file size"),
                                           ({"bytes": 1, "sha256": ["x"]}, "not 64 hex digits")])
def test_a_malformed_manifest_entry_is_named_not_an_attribute_error(saved, entry, message):
    _edit_manifest(saved, lambda files: files.update({"config.json": entry}))
    with pytest.raises(CheckpointError, match=f"entry 'config.json' .*{message}"):
        F.verify_folder(str(saved))


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_a_link_out_of_a_saved_folder_is_named_not_followed(saved, tmp_path, name):
    other = tmp_path / "other"
    Hostile().save_pretrained(str(other))  # another user's model, same sizes: the manifest would pass
    os.remove(saved / name)
    os.symlink(other / name, saved / name)
    with pytest.raises(CheckpointError, match=f"{name} is a link to .*other.*outside the saved folder"):
        mmreward.load(str(saved))


def test_links_a_saved_folder_may_have_still_load(saved, tmp_path):
    (tmp_path / "latest").symlink_to(saved)  # the folder itself a link
    assert isinstance(mmreward.load(str(tmp_path / "latest")), Hostile)
    repo = tmp_path / "models--org--rm"  # a hub-cache snapshot: files linked to the repo's blobs
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc"
    snap.mkdir(parents=True)
    for name in os.listdir(saved):
        os.replace(saved / name, repo / "blobs" / name)
        os.symlink(os.path.join("..", "..", "blobs", name), snap / name)
    assert isinstance(mmreward.load(str(snap)), Hostile)


def test_deeply_nested_json_is_a_corrupt_file_not_a_recursion_error(saved, tmp_path):
    deep = '{"model_type": "hostile_tiny", "x": ' + "[" * 200_000 + "]" * 200_000 + "}"
    path = tmp_path / "deep.json"
    path.write_text(deep)
    with pytest.raises(CheckpointError, match="corrupt .*deep.json"):
        read_json(str(path))
    with pytest.raises(CheckpointError, match="corrupt JSON in .*deep.json"):
        ck._read_json(str(path))
    (saved / "manifest.json").write_text('{"files": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(CheckpointError, match="corrupt manifest.json"):
        mmreward.load(str(saved))


def test_a_pickle_named_safetensors_is_named_and_never_unpickled(saved, tmp_path, monkeypatch):
    import pickle

    marker = tmp_path / "ran"
    payload = b"\x80\x04cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    zipped = tmp_path / "zipped.safetensors"
    with open(zipped, "wb") as f:
        f.write(b"PK\x03\x04\x00\x00\x08\x00" + b"\0" * 40)  # what torch.save writes
    for path in (saved / "model.safetensors", zipped):
        if path != zipped:
            path.write_bytes(payload)
        for read in (read_weight_file, ck._load_tensors):
            with pytest.raises(CheckpointError, match=f"{path.name} is a pickle / torch.save file, not safetensors"):
                read(str(path))
    _edit_manifest(saved, lambda files: files["model.safetensors"].update(bytes=len(payload)))
    with pytest.raises(CheckpointError, match="is a pickle / torch.save file"):
        mmreward.load(str(saved))
    assert not marker.exists()


def test_a_real_safetensors_header_of_length_0x80_is_not_taken_for_a_pickle(tmp_path):
    header = json.dumps({"__metadata__": {"k": "v"}}).encode()
    header += b" " * (0x280 - len(header))  # a header length whose first byte is 0x80, as a pickle's is
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    assert weight_file_problem(str(path)) is None and read_weight_file(str(path)) == {}


def test_info_names_a_manifest_reaching_outside_in_one_line(saved, capsys):
    from mmreward.cli import main

    _edit_manifest(saved, lambda files: files.update({"../../../etc/passwd": {"bytes": 1}}))
    assert main(["info", str(saved)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a plain relative path inside the folder" in err[0] and "passwd" in err[0], err


def _run_with_snapshots(folder, steps, seed):
    snaps = ck.Snapshots(str(folder), keep=5)
    for step in steps:
        snaps.save(step, {"step": step, "w": torch.full((2,), float(seed))})
    return snaps


def test_a_snapshot_copied_in_under_another_step_is_set_aside_not_resumed(tmp_path):
    import shutil

    mine = _run_with_snapshots(tmp_path / "mine", (10, 20), seed=1)
    other = _run_with_snapshots(tmp_path / "other", (10,), seed=2)
    shutil.copytree(other.path(10), mine.path(30))  # an uploaded run folder with a snapshot of another run
    with pytest.warns(UserWarning, match=r"checkpoint-00000030 .*holds the state of step 10, not of step 30"):
        step, _, state = mine.load_latest()
    assert step == 20 and state["w"].tolist() == [1.0, 1.0]
    assert os.path.isdir(str(mine.path(30)) + ".unreadable")  # kept, never deleted


def test_a_snapshot_linked_into_another_run_is_set_aside_and_the_other_run_untouched(tmp_path):
    mine = _run_with_snapshots(tmp_path / "mine", (10,), seed=1)
    other = _run_with_snapshots(tmp_path / "other", (10, 30), seed=2)
    os.symlink(other.path(30), mine.path(30))
    with pytest.warns(UserWarning, match=r"checkpoint-00000030 is a link to .*other.*never a link"):
        step, _, state = mine.load_latest()
    assert step == 10 and state["w"].tolist() == [1.0, 1.0]
    assert [s for s, _ in other.list()] == [30, 10] and os.path.islink(str(mine.path(30)) + ".unreadable")


def test_deeply_nested_data_rows_are_a_data_error_naming_the_line(tmp_path):
    """mmreward score --data deep.jsonl exited 1 with 'unexpected error: maximum recursion depth'."""
    from mmreward.core.data import DataError, read_records

    (tmp_path / "deep.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"x": ' + "[" * 100000 + "]" * 100000 + "}\n")
    with pytest.raises(DataError, match=r"deep.jsonl: line 2 \(row 1\) is nested too deeply"):
        read_records(str(tmp_path / "deep.jsonl"))
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(DataError, match=r"deep.json: nested too deeply"):
        read_records(str(tmp_path / "deep.json"))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.float8_e4m3fn])
def test_complex_or_8_bit_float_weights_are_not_loaded_as_float32(tmp_path, dtype):
    """An F8_E4M3 or C64 tensor where the model holds float32 loaded silently (complex: the imaginary part dropped)."""
    from torch import nn

    from mmreward.core.folders import CheckpointError
    from mmreward.core.model import load_state_strict

    net = nn.Linear(3, 2)
    state = {k: v.to(dtype) for k, v in net.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"weight is (complex64|float8_e4m3fn), the model expects a floating-point"):
        load_state_strict(net, state, str(tmp_path))
