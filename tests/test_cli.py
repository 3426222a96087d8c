import subprocess
import sys

from mmreward import cli


def test_help_lists_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "env" in out and "ops" in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_env_and_ops_commands_run():
    out = subprocess.run([sys.executable, "-m", "mmreward.cli", "env"], capture_output=True, text=True, check=True).stdout
    assert "backends:" in out
    out = subprocess.run([sys.executable, "-m", "mmreward.cli", "ops"], capture_output=True, text=True, check=True).stdout
    assert out.strip()
