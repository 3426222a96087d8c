"""``python -m mmreward …`` is the ``mmreward`` command."""
import sys

from mmreward.cli import main

sys.exit(main())
