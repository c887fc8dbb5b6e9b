"""The ``hydra`` command's entry point.

For ``hydra submit TASK … --local`` it starts the process that forks the local workers
(:func:`hydra.prefork.start_early`) before anything else is imported, so that the workers' imports
overlap the command's own; then it runs :func:`hydra.cli.main`.
"""

from __future__ import annotations

import sys


def main() -> None:
    from hydra import prefork

    prefork.start_early(sys.argv[1:])
    from hydra.cli import main as cli_main

    cli_main()
