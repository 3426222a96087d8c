"""``--help`` shows each flag's default: whitespace defaults (a step separator "\\n\\n") were printed
literally (argparse folded them into "(default: )", a raw formatter into blank lines), and a "%" in a
default crashed argparse's help."""
import argparse
import dataclasses
from typing import Optional

from mmreward.core.cli_config import add_config_options


@dataclasses.dataclass
class _Config:
    step_separator: str = dataclasses.field(default="\n\n", metadata={"help": "text between steps"})
    indent: str = dataclasses.field(default="  ", metadata={"help": "indent"})
    tab: Optional[str] = dataclasses.field(default="\t", metadata={"help": "tab"})
    seps: list = dataclasses.field(default_factory=lambda: ["\n", "a"], metadata={"help": "separators"})
    template: str = dataclasses.field(default="top 10%", metadata={"help": "template"})
    name: str = dataclasses.field(default="plain name", metadata={"help": "a name"})


def _help_lines():
    parser = argparse.ArgumentParser(prog="x", formatter_class=lambda prog: argparse.HelpFormatter(prog, width=400,
                                                                                                max_help_position=60))
    add_config_options(parser, _Config)
    return parser.format_help().splitlines()


def test_whitespace_and_percent_defaults_show_on_the_flags_line():
    lines = _help_lines()
    defaults = [line for line in lines if "(default:" in line]
    assert len(defaults) == 6 and all(line.startswith("  --") for line in defaults), lines
    by_flag = {line.split()[0]: line for line in lines if line.strip().startswith("--")}
    assert by_flag["--step-separator"].endswith(r"(default: '\n\n')")
    assert by_flag["--indent"].endswith(r"(default: '\x20\x20')")  # argparse folds runs of spaces
    assert r"(default: '\t')" in by_flag["--tab"]
    assert by_flag["--seps"].endswith(r"(default: '\n',a)")
    assert by_flag["--template"].endswith("(default: top 10%)")
    assert by_flag["--name"].endswith("(default: plain name)")  # ordinary strings as they are


def test_the_serve_help_shows_its_step_separator_on_one_line(monkeypatch):
    from mmreward.serve.cli import build_parser

    monkeypatch.setenv("COLUMNS", "400")  # no wrapping: one line per flag

    text = build_parser().format_help()
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  --step-separator"))
    assert lines[at + 1].endswith(r"(default: '\n\n')"), text  # was "(default: )": argparse folds whitespace


def test_what_none_means_is_said_once_and_truly():
    """Optional flags got "; 'none' for none" appended even where their help already said what none means
    ("(None: off)"), and --api-key's none is not "no key" but the environment's key."""
    import re as _re

    from mmreward.serve.cli import build_parser

    text = " ".join(build_parser().format_help().split())
    api = text[text.index("--api-key API_KEY require"):][:260]
    assert "'none' for none" not in api and "MMREWARD_SERVE_API_KEY, else no key" in api
    for flag in ("--max-padding MAX_PADDING", "--refine-clip REFINE_CLIP", "--max-replicas MAX_REPLICAS"):
        entry = text[text.index(flag):][:400]
        following = _re.search(r" --[a-z]", entry[len(flag):])
        entry = entry[:following.start() + len(flag)] if following else entry
        assert "'none' for none" not in entry, entry
