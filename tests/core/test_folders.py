"""core.folders: a folder lands whole or not at all, its manifest catches damage, files get the
umask's permissions, and leftovers of killed writers go away."""
import os
import stat
import subprocess
import sys

import pytest

from mmreward.core import folders as F


def _write(folder, name, data: bytes):
    os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def test_atomic_folder_replaces_the_whole_folder_and_writes_a_manifest(tmp_path):
    target = tmp_path / "m"
    with F.atomic_folder(str(target)) as tmp:
        _write(tmp, "a.bin", b"old")
        _write(tmp, "sub/b.bin", b"x" * 10)
    assert F.verify_folder(str(target), checksums=True)["files"]["sub/b.bin"]["bytes"] == 10
    with F.atomic_folder(str(target)) as tmp:
        _write(tmp, "a.bin", b"new!")
    assert sorted(os.listdir(target)) == ["a.bin", "manifest.json"]  # nothing of the old folder is left
    assert (target / "a.bin").read_bytes() == b"new!"
    assert [e for e in os.listdir(tmp_path) if e != "m"] == []  # no temporaries


def test_an_exception_inside_leaves_the_old_folder(tmp_path):
    target = tmp_path / "m"
    with F.atomic_folder(str(target)) as tmp:
        _write(tmp, "a.bin", b"good")
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with F.atomic_folder(str(target)) as tmp:
                _write(tmp, "a.bin", b"half")
                raise exc
    assert (target / "a.bin").read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["m"]


def test_keep_carries_entries_of_the_old_folder(tmp_path):
    target = tmp_path / "run"
    with F.atomic_folder(str(target), manifest=False) as tmp:
        _write(tmp, "metrics.csv", b"step\n1\n")
        _write(tmp, "model.bin", b"v1")
    with F.atomic_folder(str(target), manifest=False, keep=lambda rel: rel == "metrics.csv") as tmp:
        _write(tmp, "model.bin", b"v2")
    assert (target / "metrics.csv").read_bytes() == b"step\n1\n" and (target / "model.bin").read_bytes() == b"v2"


def test_manifest_names_the_damaged_file(tmp_path):
    target = tmp_path / "m"
    with F.atomic_folder(str(target)) as tmp:
        _write(tmp, "w.bin", b"0123456789")
    (target / "w.bin").write_bytes(b"01234")
    with pytest.raises(F.CheckpointError, match="w.bin has 5 bytes.*records 10"):
        F.verify_folder(str(target))
    (target / "w.bin").write_bytes(b"0123456780")  # same size, one byte flipped
    F.verify_folder(str(target))  # sizes only by default
    with pytest.raises(F.CheckpointError, match="SHA-256"):
        F.verify_folder(str(target), checksums=True)
    os.unlink(target / "w.bin")
    with pytest.raises(F.CheckpointError, match="incomplete: w.bin is missing"):
        F.verify_folder(str(target))


def test_files_and_folders_respect_the_umask(tmp_path):
    code = ("import os, sys; from mmreward.core import folders as F\n"
            "os.umask(0o027)\n"
            "F.atomic_write_text(sys.argv[1] + '/f.txt', 'x')\n"
            "with F.atomic_folder(sys.argv[1] + '/d') as t:\n"
            "    open(t + '/w', 'w').write('y')\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert stat.S_IMODE(os.stat(tmp_path / "f.txt").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(tmp_path / "d" / "w").st_mode) == 0o640
    assert F.current_umask() == os.umask(os.umask(0o022))  # reading it changes nothing


def test_leftovers_of_a_killed_writer_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    orphan_file = tmp_path / f".f.txt.{dead}.0123abcd.tmp"
    orphan_dir = tmp_path / f".m.{dead}.89abcdef.tmp"
    live = tmp_path / f".f.txt.{os.getpid()}.0123abcd.tmp"
    orphan_file.write_text("half")
    orphan_dir.mkdir()
    live.write_text("in progress")
    F.atomic_write_text(str(tmp_path / "f.txt"), "done")
    with F.atomic_folder(str(tmp_path / "m")) as tmp:
        _write(tmp, "a", b"1")
    assert not orphan_file.exists() and not orphan_dir.exists() and live.exists()


def test_a_swap_cut_between_two_renames_is_recovered(tmp_path):
    target = tmp_path / "m"
    with F.atomic_folder(str(target)) as tmp:
        _write(tmp, "a.bin", b"old")
    os.rename(target, tmp_path / f".m.{os.getpid()}.0badc0de.old")  # as if killed after the first rename
    assert F.recover_folder(str(target)) and (target / "a.bin").read_bytes() == b"old"


def test_replace_folder_refuses_a_file_target(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").write_text("a file")
    with pytest.raises(F.CheckpointError, match="not a folder"):
        F.replace_folder(str(tmp_path / "src"), str(tmp_path / "dst"))


def test_a_save_never_replaces_the_working_folder_or_a_folder_of_other_files(tmp_path, monkeypatch):
    """save_pretrained("") swapped a model in place of the working folder and deleted it (a whole
    repository was lost this way); a folder of the user's files was replaced just the same."""
    work = tmp_path / "project" / "src"
    _write(str(work), "code.py", b"print(1)")
    monkeypatch.chdir(work)
    for target in ("", "  ", ".", str(work), str(work.parent)):  # ("/" too, not tried here: a test must not risk it)
        with pytest.raises(ValueError, match="non-empty string|working folder"):
            with F.atomic_folder(target) as tmp:
                _write(tmp, "a.bin", b"model")
    notes = tmp_path / "notes"
    _write(str(notes), "todo.txt", b"keep me")
    with pytest.raises(F.CheckpointError, match=r"holds files this library did not save \(todo.txt\)"):
        with F.atomic_folder(str(notes)) as tmp:
            _write(tmp, "a.bin", b"model")
    assert (work / "code.py").read_bytes() == b"print(1)" and (notes / "todo.txt").read_bytes() == b"keep me"
    assert sorted(os.listdir(tmp_path)) == ["notes", "project"]  # no temporaries left
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (empty, empty):  # an empty folder, then the folder it saved, are replaced
        with F.atomic_folder(target) as tmp:
            _write(tmp, "a.bin", b"model")
    assert sorted(os.listdir(empty)) == ["a.bin", "manifest.json"]


def test_a_file_link_or_path_inside_a_file_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    written = []
    for target, message in ((tmp_path / "a-file", "exists and is not a folder"),
                            (tmp_path / "link", r"is not a folder \(a link\)"),
                            (tmp_path / "a-file" / "sub" / "m", "a-file is a file, not a folder")):
        with pytest.raises(F.CheckpointError, match=message):
            with F.atomic_folder(str(target)) as tmp:
                written.append(tmp)  # never reached: refused before the model is written
    assert written == [] and sorted(os.listdir(tmp_path)) == ["a-file", "link", "real"]
