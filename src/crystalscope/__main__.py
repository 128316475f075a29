"""``python -m crystalscope``: the command line."""

from crystalscope.cli.main import run

run()
