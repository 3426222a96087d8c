"""Atomic files and folders: a save either lands whole or not at all, whatever kills the process.

* :func:`atomic_write` — one file: written under a temporary name in the same folder, flushed,
  fsynced, then renamed over the target.
* :func:`atomic_folder` — a whole folder (a model, a training snapshot): written as a hidden sibling
  ``.<name>.<pid>.<random>.tmp``, every file fsynced, a manifest of each file's size and SHA-256
  stored, then swapped into place. On Linux the swap is one ``renameat2(RENAME_EXCHANGE)``: the
  target path always names either the old folder or the new one. Elsewhere it is two renames, and a
  crash between them leaves the old folder as ``.<name>.<pid>.<random>.old``, which
  :func:`recover_folder` puts back.

Files and folders get the permissions the process umask allows (``0o666 & ~umask`` /
``0o777 & ~umask``), as ``open()`` and ``mkdir()`` would give them. Leftovers of a killed writer
(``.<name>.<pid>.*.tmp`` whose process is gone) are removed by the next write to the same target.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from typing import Callable, Iterator, Optional


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or does not match what is being loaded."""


MANIFEST_NAME = "manifest.json"


def local_path_only(path: str) -> bool:
    """Whether ``path`` (not found on disk) can only have meant a local path — ``./x``, ``/x``, ``~/x``,
    ``a/b/c`` — and not a hub id (``name`` or ``org/name``): then "does not exist" is the error to give,
    not the hub's "Repo id must be in the form ..." about a malformed id. A trailing separator or white space
    (``runs/``, ``my runs/rm``) makes a folder path too: hub ids have neither."""
    return (path.startswith((".", "/", "~")) or path.endswith("/") or path.count("/") > 1
            or any(c.isspace() for c in path) or (os.sep != "/" and os.sep in path))


# ------------------------------------------------------------------ permissions
def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``/proc``), else by the
    classic set-and-restore."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    return 0o777 & ~current_umask()


# ------------------------------------------------------------------ temporary names
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.(?P<kind>tmp|old)$")


def _tmp_name(target: str, kind: str = "tmp") -> str:
    folder, name = os.path.split(os.path.abspath(target))
    return os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(target: str) -> list[str]:
    """Delete ``.tmp`` leftovers of ``target`` written by processes that no longer run."""
    folder, name = os.path.split(os.path.abspath(target))
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        m = _TMP_RE.match(entry)
        if not m or m["name"] != name or m["kind"] != "tmp" or _pid_alive(int(m["pid"])):
            continue
        path = os.path.join(folder, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
        removed.append(path)
    return removed


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------ one file
def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync it, give it the umask's permissions, then rename it to ``path``."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    remove_orphans(path)
    tmp = _tmp_name(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


# ------------------------------------------------------------------ manifests
def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _walk_files(folder: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            out.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return out


def build_manifest(folder: str, checksums: bool = True) -> dict:
    """``{relative path: {"bytes": n, "sha256": hex}}`` of every file under ``folder`` but the manifest."""
    files = {}
    for rel in _walk_files(folder):
        if rel == MANIFEST_NAME:
            continue
        path = os.path.join(folder, rel)
        entry = {"bytes": os.path.getsize(path)}
        if checksums:
            entry["sha256"] = file_sha256(path)
        files[rel] = entry
    return {"format_version": 1, "files": files}


MAX_MANIFEST_BYTES = 64 << 20  # a manifest of 100 000 files is about 15 MB; an uploaded folder may hold gigabytes


def read_manifest(folder: str) -> Optional[dict]:
    path = os.path.join(folder, MANIFEST_NAME)
    if not os.path.exists(path):
        return None
    if os.path.isfile(path) and os.path.getsize(path) > MAX_MANIFEST_BYTES:  # json.load would read it whole
        raise CheckpointError(f"{path} is {os.path.getsize(path)} bytes, more than any manifest mmreward writes "
                              f"({MAX_MANIFEST_BYTES} bytes at most): not reading the folder")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: a crafted file of deeply nested arrays
        raise CheckpointError(f"corrupt {MANIFEST_NAME} in {folder}: {str(e)[:200]}") from e
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise CheckpointError(f"{folder}/{MANIFEST_NAME} is not a manifest")
    for rel, entry in data["files"].items():
        problem = _manifest_entry_problem(rel, entry)
        if problem:
            raise CheckpointError(f"{path}: entry {rel[:200]!r} {problem}: the manifest was edited or not written "
                                  "by mmreward; not reading the folder")
    return data


def _manifest_entry_problem(rel: str, entry: object) -> Optional[str]:
    """Why one ``files`` entry of a manifest cannot be one mmreward wrote, or None. Its path must stay inside
    the folder: a ``../`` or absolute path would have loading stat (and, with checksums, read whole) a file
    elsewhere on the machine, and the size error would tell an uploader that file's size."""
    parts = rel.split("/")
    if (not rel or (os.sep != "/" and os.sep in rel) or "\0" in rel or rel.startswith("/") or os.path.isabs(rel)
            or any(p in ("", ".", "..") for p in parts)):
        return "is not a plain relative path inside the folder"
    if not isinstance(entry, dict):
        return f"must be an object with the file's bytes, got {type(entry).__name__}"
    size = entry.get("bytes")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return f"records bytes={size!r}, not a file size"
    if "sha256" in entry and not (isinstance(entry["sha256"], str) and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])):
        return "records a sha256 that is not 64 hex digits"
    return None


def verify_folder(folder: str, checksums: Optional[bool] = None) -> Optional[dict]:
    """Check every file the folder's manifest lists: present, the recorded size and (``checksums``,
    default from ``MMREWARD_VERIFY_CHECKSUMS=1``) the recorded SHA-256. Folders without a manifest
    (older saves, published layouts) pass. Returns the manifest or None."""
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    if checksums is None:
        checksums = os.environ.get("MMREWARD_VERIFY_CHECKSUMS", "0") == "1"
    root = os.path.realpath(folder)
    # a hub-cache snapshot (``<repo>/snapshots/<rev>``) links its files to ``<repo>/blobs``: that is inside the repo
    blobs = (os.path.join(os.path.dirname(os.path.dirname(root)), "blobs")
             if os.path.basename(os.path.dirname(root)) == "snapshots" else None)
    for rel, entry in manifest["files"].items():
        path = os.path.join(folder, rel)
        real = os.path.realpath(path)
        if not _inside(real, root) and not (blobs and _inside(real, blobs)):
            # save_pretrained never writes links: one reaching out of the folder was added afterwards, and
            # following it would read (and score with) a file of someone else's, e.g. an uploaded folder's
            raise CheckpointError(f"{path} is a link to {real}, outside the saved folder {folder}: mmreward does not "
                                  "follow links out of a folder it saved; copy the file itself in (cp -L)")
        if not os.path.isfile(path):
            raise CheckpointError(f"{folder} is incomplete: {rel} is missing")
        size = os.path.getsize(path)
        if size != entry.get("bytes"):
            raise CheckpointError(f"{path} has {size} bytes but the manifest records {entry.get('bytes')}: "
                                  "truncated, edited after saving or from another save (a file edited on purpose "
                                  f"needs its entry in {MANIFEST_NAME} updated, or the manifest removed)")
        if checksums and "sha256" in entry and file_sha256(path) != entry["sha256"]:
            raise CheckpointError(f"{path} does not match its SHA-256 in the manifest: the file is corrupt")
    return manifest


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# ------------------------------------------------------------------ whole folders
_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False where the OS cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD = -100
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"renameat2({a!r}, {b!r}) failed: {os.strerror(err)}")


def replace_folder(src: str, dst: str) -> None:
    """Put folder ``src`` at ``dst`` (replacing a folder there) so that ``dst`` is never half-written."""
    parent = os.path.dirname(os.path.abspath(dst))
    if not os.path.lexists(dst):
        os.rename(src, dst)
    elif not os.path.isdir(dst) or os.path.islink(dst):
        raise CheckpointError(f"{dst} exists and is not a folder: not replacing it")
    elif _exchange(src, dst):
        shutil.rmtree(src)  # now the old folder
    else:
        old = _tmp_name(dst, "old")
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(parent)


def recover_folder(target: str) -> bool:
    """If ``target`` is missing because a two-rename swap was cut between its renames, move the
    old folder back. Returns whether anything was recovered."""
    if os.path.lexists(target):
        return False
    folder, name = os.path.split(os.path.abspath(target))
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return False
    for entry in entries:
        m = _TMP_RE.match(entry)
        if m and m["name"] == name and m["kind"] == "old":
            os.rename(os.path.join(folder, entry), target)
            return True
    return False


def _fsync_tree(folder: str) -> None:
    for root, dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(root)


def _chmod_tree(folder: str) -> None:
    fmode, dmode = file_mode(), dir_mode()
    for root, dirs, files in os.walk(folder):
        os.chmod(root, dmode)
        for name in files:
            os.chmod(os.path.join(root, name), fmode)


def check_replaceable(target: str, foreign: bool = True) -> str:
    """``target`` as an absolute path when a saved folder may replace it, else an error: saving swaps a
    new folder in place of the old one and deletes the old one, so the path must name a new folder, an
    empty one or one this library saved (its ``manifest.json``) — never the working folder, one holding
    it, or (``foreign``) a folder of other files (``save_pretrained(".")`` or ``("")`` would delete the
    working folder)."""
    target = os.fspath(target) if isinstance(target, os.PathLike) else target
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"folder path must be a non-empty string, got {target!r}")
    path = os.path.abspath(target)
    try:
        cwd = os.getcwd()
    except OSError:  # the working folder itself was removed: nothing to protect there
        cwd = None
    if cwd is not None and (path == cwd or cwd.startswith(path.rstrip(os.sep) + os.sep) or path == os.sep):
        raise ValueError(f"{target!r} is the working folder or holds it ({cwd}): saving there would replace it; "
                         "name a new folder")
    if os.path.islink(path):  # before any writing
        # the swap would put a real folder in the link's place; the folder it points to would be left as it was
        real = os.path.realpath(path)
        raise CheckpointError(f"{path} is not a folder (a link): it points to {real}; saving swaps in a whole new "
                              f"folder, which would replace the link, not what it points to: not replacing it; name "
                              f"{real} itself or a new folder")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise CheckpointError(f"{path} exists and is not a folder: not replacing it; name a folder")
    above = os.path.dirname(path)
    while not os.path.lexists(above):
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        raise CheckpointError(f"cannot save into {path}: {above} is a file, not a folder")
    if foreign and os.path.isdir(path):
        entries = [e for e in os.listdir(path) if not _TMP_RE.match(e)]
        if entries and MANIFEST_NAME not in entries:
            shown = ", ".join(sorted(entries)[:5]) + (" …" if len(entries) > 5 else "")
            saved = sorted(e for e in entries if os.path.isfile(os.path.join(path, e, MANIFEST_NAME)))
            hint = (f" (a training run's folder? its saved model folder is {os.path.join(path, saved[0])}: name "
                    "that to replace the model)" if saved else "")
            raise CheckpointError(f"{path} holds files this library did not save ({shown}): saving a folder there "
                                  f"would replace all of them; name a new or empty folder{hint}")
    return path


@contextlib.contextmanager
def atomic_folder(target: str, *, manifest: bool = True, checksums: bool = True,
                  keep: Callable[[str], bool] = lambda rel: False) -> Iterator[str]:
    """Yield an empty temporary folder; when the block ends without an exception, write its
    manifest (``manifest.json``: every file's size and SHA-256), fsync everything and swap it into
    ``target`` in one step. On an exception (Ctrl-C included) the temporary folder is removed and
    ``target`` is untouched.

    ``keep(relative path) -> bool`` names entries of an existing ``target`` to carry over into the
    new folder (e.g. a run's logs next to a model); anything else in the old folder is replaced.
    ``target`` is checked first (:func:`check_replaceable`): never the working folder, nor a folder of
    files this library did not save (a folder written without a manifest is its caller's to check)."""
    target = check_replaceable(target, foreign=manifest)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    recover_folder(target)
    remove_orphans(target)
    tmp = _tmp_name(target)
    os.mkdir(tmp)
    try:
        yield tmp
        if os.path.isdir(target):
            for entry in os.listdir(target):
                if keep(entry) and not os.path.lexists(os.path.join(tmp, entry)):
                    src = os.path.join(target, entry)
                    if os.path.isdir(src):
                        shutil.copytree(src, os.path.join(tmp, entry), copy_function=_link_or_copy)
                    else:
                        _link_or_copy(src, os.path.join(tmp, entry))
        if manifest:
            body = build_manifest(tmp, checksums=checksums)
            with open(os.path.join(tmp, MANIFEST_NAME), "w", encoding="utf-8") as f:
                json.dump(body, f, indent=1, sort_keys=True)
                f.write("\n")
        _chmod_tree(tmp)
        _fsync_tree(tmp)
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


__all__ = ["CheckpointError", "MANIFEST_NAME", "atomic_folder", "atomic_write", "atomic_write_text", "build_manifest",
           "current_umask", "dir_mode", "file_mode", "read_manifest", "recover_folder", "remove_orphans",
           "replace_folder", "verify_folder"]
