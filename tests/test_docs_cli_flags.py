"""Every ``--flag`` the docs put on an ``mmreward …`` command exists for that subcommand, and a flag with
choices is given a valid one.

``test_docs.py`` parses the docs' shell blocks with the real parsers; this file covers what it cannot parse
whole: README.md, inline code in the prose (`` `mmreward robotics fit-stats … --skip-step 19` ``, wrapped
over lines), usage lines in any fenced block, and synopses with placeholders (``FOLDER``, ``METHOD``, ``…``).
Only the flags and the values of choice flags are checked, so a command missing a required flag or naming a
placeholder still says whether the flags it does name are real.

Each command's parser is the one it builds when it runs: ``parse_known_args`` is intercepted (its first
call hands back the parser and stops the command), so no model, data or simulator is touched, and hidden
aliases (``--backbone``, ``--max-steps`` of robotics, ``--output-dir``) count as they do for a user."""
from __future__ import annotations

import argparse
import contextlib
import glob
import io
import os
import re
import shlex
from typing import Optional

import pytest

from helpers import one_line_error as _one_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))

_FENCE = re.compile(r"^([ \t]*)```(\w*)[^\n]*\n(.*?)^[ \t]*```", flags=re.S | re.M)
_PLACEHOLDER = re.compile(r"[<>…$]|\.\.\.|^[A-Z][A-Z0-9_]*$|^\{.*\}$")  # <X>, …, $VAR, FOLDER, {a,b}
# shell words that end one command and start another (a pipe, a list, a redirection)
_COMMAND_END = {"|", "||", "&&", ";", ">", ">>", "<", "2>", "2>&1", "&"}


# ------------------------------------------------------------------ extraction
def _logical_lines(body: str) -> list[tuple[int, str]]:
    """(offset of the first line, line) with ``\\`` continuations joined."""
    out, logical, start = [], "", None
    for i, raw in enumerate(body.splitlines()):
        line = raw.rstrip()
        start = i if start is None else start
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        out.append((start, logical + line))
        logical, start = "", None
    if logical:
        out.append((start, logical))
    return out


def _commands_in_line(line: str) -> list[str]:
    """The ``mmreward …`` commands of one shell line: after a ``$ `` prompt, ``VAR=value`` assignments,
    ``&&`` / ``;`` / ``|``, or as ``-m mmreward.cli`` of ``python`` / ``torchrun`` / ``accelerate launch``."""
    line = re.sub(r"(?:^|\s)-m mmreward\.cli(?=\s)", " mmreward", line)
    starts = [m.start(1) for m in re.finditer(r"(?:^|&&|\|\||;|\||^\s*\$)\s*(?:\w+=\S*\s+)*(mmreward\s)", line)]
    starts += [m.start(1) for m in re.finditer(r"(?:python3?|torchrun|accelerate launch)\b[^|;&]*?\s(mmreward\s)", line)
               if m.start(1) not in starts]
    return [line[s:] for s in sorted(set(starts))]


def extract(path: str, text: Optional[str] = None) -> list[tuple[str, str]]:
    """(where, command) for every ``mmreward …`` command of a markdown file: in fenced blocks (any language,
    but python's only in comments) and in inline code (which may wrap over lines)."""
    if text is None:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    name = os.path.relpath(path, ROOT)
    out = []
    for m in _FENCE.finditer(text):
        first = text.count("\n", 0, m.start(3)) + 1
        for offset, line in _logical_lines(m.group(3)):
            if m.group(2) == "python":  # `# or: mmreward …` in a comment; code is test_docs.py's
                line = line.partition("#")[2].strip().removeprefix("or:")
            for command in _commands_in_line(line.strip()):
                out.append((f"{name}:{first + offset}", command))
    prose = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)  # line numbers stay right
    for m in re.finditer(r"(?<!`)`(mmreward [^`]+)`(?!`)", prose):
        out.append((f"{name}:{prose.count(chr(10), 0, m.start()) + 1}", " ".join(m.group(1).split())))
    return out


# the command group a page's short forms (`train-rl --model adroit-64`) belong to first
PAGE_GROUP = {"adroit.md": "robotics", "diffusion_reward.md": "robotics", "visual_rl.md": "robotics",
              "prm.md": "prm", "generative.md": "text", "text.md": "text", "text_recipes.md": "text",
              "vision.md": "vision", "vision_vlm.md": "vision"}


def extract_short(path: str, text: Optional[str] = None) -> list[tuple[str, str]]:
    """(where, subcommand words + flags) of inline code that names a subcommand without ``mmreward``:
    `` `train-rl --model adroit-64` ``, `` `prm score / eval --step-separator …` ``, and python comments'
    ``# or: score / train-rl --motion-scale 4``. Which command group it is resolves in :func:`short_candidates`."""
    if text is None:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    name = os.path.relpath(path, ROOT)
    spans = []
    for m in _FENCE.finditer(text):
        if m.group(2) == "python":
            first = text.count("\n", 0, m.start(3)) + 1
            spans += [(first + i, line.partition("#")[2].strip().removeprefix("or:").strip())
                      for i, line in enumerate(m.group(3).splitlines()) if "#" in line]
    prose = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    spans += [(prose.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split()))
              for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", prose)]
    pattern = re.compile(r"(?:[a-z][\w-]* (?:/ )?)+--\S.*")  # words (alternatives split by /), then a flag
    return [(f"{name}:{line}", span) for line, span in spans
            if pattern.fullmatch(span) and not span.startswith("mmreward ") and _is_subcommand(span.split()[0])]


def _variants(command: str) -> list[str]:
    """One command per alternative of each ``(A | B)`` group of a synopsis."""
    m = re.search(r"\(([^()]*\|[^()]*)\)", command)
    if not m:
        return [command]
    return [v for alt in m.group(1).split("|")
            for v in _variants(command[:m.start()] + alt.strip() + command[m.end():])]


def _words(command: str) -> list[str]:
    """Shell words of one command, synopsis brackets dropped (``[--flag V]`` → ``--flag``, ``V``); stops
    at the first word that ends the command (``| jq``, ``> out.json``, ``&&``) or starts a comment."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote of a synopsis written in prose
        words = command.split()
    out = []
    for w in words:
        if w in _COMMAND_END or w.startswith("#"):
            break
        w = w.lstrip("[(").rstrip("]),;")
        if w:
            out.append(w)
    return out


# ------------------------------------------------------------------ the commands' own parsers
class _Captured(BaseException):
    """The parser a command built, with the words it was about to parse (a BaseException so that no
    ``except Exception`` of ``run_cli`` turns it into an error line)."""

    def __init__(self, parser: argparse.ArgumentParser, args: list[str]):
        super().__init__(parser.prog)
        self.parser, self.args = parser, args


_PARSERS: dict[tuple[str, ...], Optional[tuple[argparse.ArgumentParser, list[str]]]] = {}


def command_parser(dispatch: tuple[str, ...]) -> Optional[tuple[argparse.ArgumentParser, list[str]]]:
    """(parser, words it parses) of ``mmreward *dispatch``, or None when the command stops before parsing
    (an unknown command or subcommand). ``dispatch``: the command words up to the first option."""
    if dispatch in _PARSERS:
        return _PARSERS[dispatch]
    from mmreward.cli import main

    def capture(self, args=None, namespace=None):
        raise _Captured(self, list(args or []))

    original = argparse.ArgumentParser.parse_known_args
    argparse.ArgumentParser.parse_known_args = capture  # parse_args calls it too
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            main(list(dispatch))
        found = None
    except _Captured as c:
        found = (c.parser, c.args)
    finally:
        argparse.ArgumentParser.parse_known_args = original
    _PARSERS[dispatch] = found
    return found


def _subparsers(parser: argparse.ArgumentParser) -> Optional[argparse._SubParsersAction]:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def resolve(words: list[str]) -> tuple[list[argparse.ArgumentParser], str]:
    """The parsers the flags of ``mmreward *words`` belong to and the command's name; several when a
    subcommand is a placeholder (``judge METHOD --model …``: any judge's flag counts). Raises
    AssertionError naming an unknown command."""
    dispatch = []
    for w in words[1:]:
        if w.startswith("-") or not re.fullmatch(r"[a-z][a-z0-9_-]*", w):
            break
        dispatch.append(w)
    from mmreward.cli import COMMANDS

    assert dispatch and dispatch[0] in COMMANDS, f"no command {words[1]!r} (commands: {', '.join(COMMANDS)})"
    found = command_parser(tuple(dispatch))
    name = " ".join(["mmreward"] + dispatch)
    assert found is not None, f"`{name}` is not a command: it stops before parsing its options"
    parser, args = found
    parsers = [parser]
    rest = [a for a in args if not a.startswith("-")]
    while (sub := _subparsers(parsers[0])) is not None and len(parsers) == 1:
        if rest and rest[0] in sub.choices:
            parsers = [sub.choices[rest.pop(0)]]
        else:  # a placeholder (METHOD) or none: the flag may be any subcommand's
            parsers = list({id(p): p for p in sub.choices.values()}.values())
    return parsers, name


def subcommands(group: str) -> list[str]:
    """The subcommand names of ``mmreward GROUP``."""
    if group == "text":
        from mmreward.text.cli import COMMANDS
        return list(COMMANDS)
    if group == "vision":
        from mmreward.vision.cli import SUBCOMMANDS
        return list(SUBCOMMANDS)
    found = command_parser((group,))
    sub = _subparsers(found[0]) if found else None
    return list(sub.choices) if sub else []


GROUPS = ("robotics", "prm", "text", "vision")


def _is_subcommand(word: str) -> bool:
    from mmreward.cli import COMMANDS

    return word in GROUPS or word in COMMANDS or any(word in subcommands(g) for g in GROUPS)


def short_candidates(where: str, span: str) -> list[list[str]]:
    """Full commands a short form can stand for, one list per alternative (``score / train-rl``): each
    alternative's flags must be right in at least one of its commands, the page's own group first."""
    from mmreward.cli import COMMANDS

    words = span.split()
    group = words.pop(0) if words[0] in GROUPS and len(words) > 1 and not words[1].startswith("-") else None
    alternatives = [words.pop(0)]
    while len(words) > 1 and words[0] == "/" and not words[1].startswith("-"):
        alternatives.append(words[1])
        words = words[2:]
    rest = " ".join(words)
    page = PAGE_GROUP.get(os.path.basename(where.split(":")[0]))
    out = []
    for sub in alternatives:
        groups = [group] if group else [g for g in ([page] if page else []) if sub in subcommands(g)] or \
            [g for g in GROUPS if sub in subcommands(g)]
        commands = [f"mmreward {g} {sub} {rest}" for g in groups]
        if not group and sub in COMMANDS and not (page and sub in subcommands(page)):
            commands.append(f"mmreward {sub} {rest}")
        out.append(commands)
    return out


def _option_words(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return dict(parser._option_string_actions)


def _values(words: list[str], i: int, action: argparse.Action, inline: Optional[str]) -> list[str]:
    """The words ``action``'s option at ``words[i]`` takes as its value(s)."""
    if inline is not None:
        return [inline]
    if action.nargs == 0:
        return []
    following = []
    for w in words[i + 1:]:
        if w.startswith("-") and not re.fullmatch(r"-[\d.]+(e[+-]?\d+)?|-inf", w, flags=re.I):
            break
        following.append(w)
    count = 1 if action.nargs in (None, "?") else action.nargs if isinstance(action.nargs, int) else len(following)
    return following[:count]


# `mmreward robotics … --set KEY=VALUE`: KEY is a field of the model config the command builds
SET_CONFIGS = {"mmreward robotics train-codec": ("mmreward.robotics.codec.vqgan", "VQGANConfig"),
               "mmreward robotics train-video": ("mmreward.robotics.video.vq_diffusion", "VQDiffusionConfig"),
               "mmreward robotics train-progress": ("mmreward.robotics.reward.progress", "ProgressConfig")}


def _set_problem(name: str, pair: str) -> list[str]:
    import dataclasses
    import importlib

    key = pair.partition("=")[0].replace("-", "_")
    if _PLACEHOLDER.search(key) or key == "KEY":
        return []
    module, cls = SET_CONFIGS[name]
    config = getattr(importlib.import_module(module), cls)
    names = {f.name for f in dataclasses.fields(config)}
    return [] if key in names else [f"`{name} --set {pair}`: {cls} has no field {key!r}"]


def _accepts(parser: argparse.ArgumentParser, flag: str, value: str) -> bool:
    """Whether ``parser``'s ``flag`` takes ``value`` (converted by its type, then checked against its choices)."""
    action = _option_words(parser).get(flag)
    try:
        return action is not None and parser._check_value(action, parser._get_value(action, value)) is None
    except (argparse.ArgumentError, TypeError, ValueError):
        return False


def problems(command: str) -> list[str]:
    """Why the flags of one documented command are wrong (empty when right)."""
    out = []
    for variant in _variants(command):
        words = _words(variant)
        if len(words) < 2 or words[1].startswith("-") or words[1].endswith(":"):
            continue  # `mmreward --help`, an error message quoted ("mmreward prm eval: error: …")
        if any(w.endswith(":") for w in words[1:3]):
            continue
        try:
            parsers, name = resolve(words)
        except AssertionError as e:
            out.append(str(e))
            continue
        for i, w in enumerate(words):
            if not re.match(r"--?[A-Za-z]", w) or _PLACEHOLDER.search(w.split("=")[0]):
                continue
            flag, eq, inline = w.partition("=")
            if flag.endswith("*"):  # `serve --refine-*`: the options of that prefix
                if not any(o.startswith(flag[:-1]) for p in parsers for o in _option_words(p)):
                    out.append(f"`{name}` has no option {flag}")
                continue
            actions = [a for p in parsers if (a := _option_words(p).get(flag)) is not None]
            if flag == "--set" and name in SET_CONFIGS and i + 1 < len(words):
                out += _set_problem(name, words[i + 1])
            if not actions:
                out.append(f"`{name}` has no option {flag}")
                continue
            for value in _values(words, i, actions[0], inline if eq else None):
                for choice in value.split("|"):  # a synopsis's `--loss bce|mse`: each must be valid
                    if not choice or _PLACEHOLDER.search(choice) or all(a.choices is None for a in actions):
                        continue
                    if not any(_accepts(p, flag, choice) for p in parsers):
                        choices = sorted({str(c) for a in actions for c in (a.choices or ())})
                        out.append(f"`{name} {flag} {choice}`: not a choice ({', '.join(choices)})")
    return out


DOC_COMMANDS = [c for path in DOCS for c in extract(path)]
SHORT_FORMS = [c for path in DOCS for c in extract_short(path)]


def short_problems(where: str, span: str) -> list[str]:
    """Why a short form is wrong: an alternative none of whose commands takes its flags."""
    out = []
    for commands in short_candidates(where, span):
        found = [problems(c) for c in commands]
        if not commands:
            out.append(f"`{span}`: no command")
        elif all(found):
            out += found[0]
    return out


# ------------------------------------------------------------------ tests
def test_the_extraction_finds_the_docs_commands():
    """The patterns still find the docs' commands: blocks, inline code, wrapped inline code, README."""
    where = [w for w, _ in DOC_COMMANDS]
    commands = [c for _, c in DOC_COMMANDS]
    assert len(DOC_COMMANDS) >= 120, len(DOC_COMMANDS)
    assert any(w.startswith("README.md") for w in where)
    assert "mmreward robotics fit-stats … --skip-step 19 --compute-dtype bfloat16" in commands  # inline
    assert any(c.startswith("mmreward text train-genrm --model PATH") and "--eval-data" in c for c in commands)  # wrapped
    assert any(w.startswith("docs/text.md") and c.startswith("mmreward text train --data") for w, c in DOC_COMMANDS)  # torchrun


def test_the_parsers_of_every_command_resolve():
    """Every top-level command builds its parser without running (and the nested ones are reached)."""
    from mmreward.cli import COMMANDS

    for name in COMMANDS:
        if name in ("text", "vision"):
            continue  # groups: their subcommands are below
        assert command_parser((name,)) is not None, name
    for words in (["text", "train"], ["text", "eval"], ["text", "merge"], ["text", "train-gram"], ["vision", "eval"],
                  ["vision", "train-vlm-rm"], ["vision", "colour-data"]):
        assert command_parser(tuple(words)) is not None, words
    parsers, _ = resolve(["mmreward", "text", "judge", "gram"])  # the judge's own subparser
    assert [p.prog for p in parsers] == ["mmreward text judge gram"]
    parsers, _ = resolve(["mmreward", "text", "judge", "METHOD"])  # a placeholder: every judge
    assert len(parsers) >= 6
    parsers, _ = resolve(["mmreward", "robotics", "train-video"])
    assert "--max-steps" in _option_words(parsers[0])  # a hidden alias counts


@pytest.mark.parametrize("where,command", DOC_COMMANDS, ids=[w for w, _ in DOC_COMMANDS])
def test_doc_command_flags_exist(where, command):
    found = problems(command)
    assert not found, f"{where}: `{command}`: " + "; ".join(found)


@pytest.mark.parametrize("where,span", SHORT_FORMS, ids=[w for w, _ in SHORT_FORMS])
def test_doc_short_form_flags_exist(where, span):
    """`` `train-rl --model adroit-64` `` in a page's prose: the flags exist for that subcommand."""
    found = short_problems(where, span)
    assert not found, f"{where}: `{span}`: " + "; ".join(found)


def test_short_forms_resolve_to_the_pages_group():
    assert len(SHORT_FORMS) >= 25, len(SHORT_FORMS)
    assert short_candidates("docs/adroit.md:1", "train-rl --model adroit-64") == \
        [["mmreward robotics train-rl --model adroit-64"]]
    assert short_candidates("docs/prm.md:1", "prm score / eval --step-separator x") == \
        [["mmreward prm score --step-separator x"], ["mmreward prm eval --step-separator x"]]
    assert short_problems("docs/prm.md:1", "score --problem / --no-such") == ["`mmreward prm score` has no option --no-such"]
    assert short_problems("docs/adroit.md:1", "train-expert --reward dapg --sed 1") == \
        ["`mmreward robotics train-expert` has no option --sed"]
    assert short_problems("docs/reliability.md:1", "serve --refine-*") == []
    assert short_problems("docs/reliability.md:1", "serve --refne-*") == ["`mmreward serve` has no option --refne-*"]
    assert short_problems("docs/diffusion_reward.md:1", "train-progress --set goal_conditoned=true") == \
        ["`mmreward robotics train-progress --set goal_conditoned=true`: ProgressConfig has no field 'goal_conditoned'"]


@pytest.mark.parametrize("bad,why", [
    ("mmreward robotics fit-stats … --skip-step 19 --compute-dtyp bfloat16", "has no option --compute-dtyp"),
    ("mmreward serve --model FOLDER --max-batch-size 64", "has no option --max-batch-size"),
    ("mmreward text train --model m --data d --los bt", "has no option --los"),
    ("mmreward prm train --objective bce|hinge --out runs/prm", "`mmreward prm train --objective hinge`: not a choice"),
    ("mmreward robotics fit-stats --rnd large --out m", "--rnd large`: not a choice"),
    ("mmreward robotics train-codec --data d --set num_code=256", "VQGANConfig has no field 'num_code'"),
    ("mmreward text judge METHOD --model PATH --no-such-flag", "has no option --no-such-flag"),
    ("mmreward vision train-vlm --data rows.jsonl", "is not a command"),
    ("mmreward txt train --data d", "no command 'txt'"),
])
def test_a_doc_naming_a_flag_that_does_not_exist_fails(bad, why):
    """A copy of a doc's text with a flag misspelt, removed from the CLI or given a bad choice is caught,
    in a fenced block and in inline code alike."""
    wrapped = bad.replace(" --", " \\\n  --", 1)  # a continued line
    for text in (f"```bash\n{wrapped}\n```\n", f"Run `{bad}` then.\n"):
        commands = extract(os.path.join(ROOT, "docs", "copy.md"), text)
        assert [" ".join(c.split()) for _, c in commands] == [bad], commands
        assert any(why in p for p in problems(bad)), (why, problems(bad))


@pytest.mark.parametrize("command,flag", [
    ("mmreward robotics train-rl --task metaworld/door-open-v3 --reward difusion-progress", "--reward"),
    ("mmreward robotics fit-stats --codec c --video v --reward-type relative-likelihood", "--reward-type"),
    ("mmreward robotics train-video --data d --codec c --reward-type entropi", "--reward-type"),
    ("mmreward text train --data d --loss hinge", "--loss"),
])
def test_config_fields_with_a_fixed_set_of_values_are_choice_flags(command, flag, tmp_path, capsys):
    """The docs' `--reward diffusion-progress`, `--reward-type relative_likelihood`, `--loss margin` … are checked
    against the values the command takes, and a user's typo is refused by the parser naming the flag and its
    choices, before anything is read or written (the config's own check named the field, `reward_type must
    be one of …`, and `--help` listed no values)."""
    from mmreward.cli import main

    bad = command.split()[-1]
    assert any(f"{flag} {bad}`: not a choice" in p for p in problems(command)), problems(command)
    out = tmp_path / "out"
    argv = command.split()[1:] + ["--out", str(out)]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert f"argument {flag}: invalid choice: '{bad}'" in line, line
    assert not out.exists()


def test_a_bad_flag_in_a_copy_of_a_real_page_is_found():
    """The check run over a copy of docs/diffusion_reward.md with one flag misspelt and one choice wrong
    reports both, at their lines, and nothing else."""
    path = os.path.join(ROOT, "docs", "diffusion_reward.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert "--compute-dtype bfloat16" in text and "--reward-type entropy --rnd paper" in text
    text = text.replace("--compute-dtype bfloat16", "--compute-dtyp bfloat16").replace("--rnd paper", "--rnd papers")
    found = {where: problems(c) for where, c in extract(path, text) if problems(c)}
    assert sorted(" ".join(p) for p in found.values()) == [
        "`mmreward robotics fit-stats --rnd papers`: not a choice (none, paper, small)",
        "`mmreward robotics fit-stats` has no option --compute-dtyp"], found
