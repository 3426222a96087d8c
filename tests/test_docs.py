"""The user docs cannot drift from the code: every ``mmreward …`` command line in their shell blocks, and
every ``python benchmarks/….py`` line (blocks and inline), parses with the command's real parser (flags exist, choices are valid, required flags given), and
every python block is valid Python whose ``mmreward`` imports resolve (module and names).

Commands are parsed, not run (the docs' commands train for minutes to hours and read user data);
README.md's commands run for real in ``test_readme.py``."""
from __future__ import annotations

import argparse
import ast
import contextlib
import glob
import importlib
import io
import os
import re
import runpy
import shlex
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [os.path.join(ROOT, "robotics", "README.md")]
SHELL = ("bash", "sh", "shell", "console", "")


def _blocks(path: str) -> list[tuple[str, str, int]]:
    """(language, dedented body, first line number) of every fenced block, list items' too."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = []
    for m in re.finditer(r"^([ \t]*)```(\w*)[ \t]*\n(.*?)^[ \t]*```", text, flags=re.S | re.M):
        line = text.count("\n", 0, m.start()) + 2
        out.append((m.group(2), textwrap.dedent(m.group(3)), line))
    return out


def _commands() -> list[tuple[str, str]]:
    """(where, command) for every ``mmreward`` line of a shell block; ``\\`` continuations joined,
    comments and a leading ``$ `` prompt dropped."""
    out = []
    for path in DOCS:
        name = os.path.relpath(path, ROOT)
        for lang, body, first in _blocks(path):
            if lang not in SHELL:
                continue
            logical, start, variables = "", None, {}
            for i, raw in enumerate(body.splitlines()):
                line = raw.rstrip()
                if start is None:
                    start = first + i
                if line.endswith("\\"):
                    logical += line[:-1] + " "
                    continue
                logical += line
                cmd = logical.strip()
                cmd = cmd[2:] if cmd.startswith("$ ") else cmd
                words = shlex.split(re.sub(r"^export ", "", cmd)) if re.match(r"(export )?\w+=", cmd) else []
                if words and all(re.match(r"\w+=", w) for w in words):  # COMMON="--flag v …" K=x R=y, used
                    # below as $COMMON: the shell splits the unquoted value into words again
                    variables.update(w.split("=", 1) for w in words)
                cmd = re.sub(r"\$\{?(\w+)\}?(?!\w)", lambda m: variables.get(m.group(1), m.group(0)), cmd)
                bench = re.match(r"(?:\S*/)?python3? (benchmarks/\w+\.py(?:\s.*)?)$", cmd)
                if bench:
                    cmd = bench.group(1)
                # `mmreward text eval ...  # see …` points at another page: not a command to check
                if (bench or cmd.startswith("mmreward ")) and not re.fullmatch(r"mmreward [\w -]+ \.\.\.(\s+#.*)?", cmd):
                    variants = _variants(cmd)
                    out += [(f"{name}:{start}" + (f"/{k}" if len(variants) > 1 else ""), v)
                            for k, v in enumerate(variants)]
                logical, start = "", None
        with open(path, encoding="utf-8") as f:  # `Rerun: python benchmarks/x.py --flag` in the prose
            for m in re.finditer(r"`(?:\S*/)?python3? (benchmarks/\w+\.py[^`]*)`", f.read()):
                out.append((f"{name}:inline", m.group(1)))
    return out


def _variants(command: str) -> list[str]:
    """One command per alternative of each ``(A | B)`` group of a synopsis."""
    m = re.search(r"\(([^()]*\|[^()]*)\)", command)
    if not m:
        return [command]
    return [v for alt in m.group(1).split("|")
            for v in _variants(command[:m.start()] + alt.strip() + command[m.end():])]


def _python_blocks() -> list[tuple[str, str]]:
    return [(f"{os.path.relpath(p, ROOT)}:{line}", body)
            for p in DOCS for lang, body, line in _blocks(p) if lang == "python"]


class _Parsed(BaseException):
    """Raised once the command's parser accepted its arguments (a BaseException so that no
    ``except Exception`` on the way turns it into an error line)."""


def _synopsis_to_example(command: str) -> str:
    """A usage line as the docs write synopses, made concrete: ``[--flag V]`` is given, of ``x|y``
    the first is taken, a ``...`` word is dropped (``(A | B)`` groups are expanded by ``_variants``)."""
    command = re.sub(r"\[(-[^\[\]]*)\]", r"\1", command)  # [--flag V] -> --flag V
    command = re.sub(r"(?<=\s)([\w.-]+)(\|[\w.-]+)+(?=\s|$)", r"\1", command)  # bce|mse -> bce
    return re.sub(r"(?<=\s)\.\.\.(?=\s|$)", " ", command)


def _split(command: str) -> list[str]:
    words = shlex.split(_synopsis_to_example(command), comments=True)
    # the shell would expand `$(...)` / `$VAR`; the parser only needs a word in their place
    return [re.sub(r"\$\(.*?\)|\$\{?\w+\}?", "1", w) for w in words]


COMMANDS = _commands()


def test_docs_have_commands_and_code():
    assert len(COMMANDS) >= 40, len(COMMANDS)  # the regex still finds the docs' commands
    assert sum(c.startswith("benchmarks/") for _, c in COMMANDS) >= 10
    assert len(_python_blocks()) >= 15


@pytest.mark.parametrize("where,command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_doc_command_parses(where, command, monkeypatch):
    from mmreward.cli import main

    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        result = original(self, args, namespace)
        raise _Parsed(result)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    words = _split(command)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            if words[0].startswith("benchmarks/"):  # the script's own parser, as `python script.py` runs it
                monkeypatch.setattr(sys, "argv", words)
                monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
                try:
                    runpy.run_path(os.path.join(ROOT, words[0]), run_name="__main__")
                    status = 0
                except SystemExit as e:
                    status = e.code
            else:
                status = main(words[1:])
        except _Parsed:
            return
    pytest.fail(f"{where}: `{command}` was not accepted (exit {status}): {err.getvalue().strip()}")


@pytest.mark.parametrize("where,body", _python_blocks(), ids=[w for w, _ in _python_blocks()])
def test_doc_python_block_imports_resolve(where, body):
    try:
        tree = ast.parse(body)
    except SyntaxError as e:
        pytest.fail(f"{where}: not valid Python ({e}); a block that is not code belongs in a ```text fence")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mmreward":
                    importlib.import_module(alias.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "mmreward":
            import mmreward

            assert hasattr(mmreward, node.attr), f"{where}: mmreward.{node.attr} does not exist"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mmreward":
            module = importlib.import_module(node.module)
            for alias in node.names:
                if alias.name == "*" or hasattr(module, alias.name):
                    continue
                try:  # a submodule: `from mmreward.text import prm`
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:
                    pytest.fail(f"{where}: `from {node.module} import {alias.name}`: no such name")
