"""``python -m mmreward.serve ...`` = ``mmreward serve ...``."""
import sys

from mmreward.core.cli_config import run_cli
from mmreward.serve.cli import main

sys.exit(run_cli("mmreward serve", main, sys.argv[1:]))
