"""The single function rq runs for a chunk ticket of the pre-redesign core: ``hydra.entry.run_chunk``.

It lives apart from :mod:`hydra.tasks` so that tasks never import the worker. The trust-boundary
core (workers reading their own inbox) does not need it; delete it with the ticket queue.
"""

from __future__ import annotations

from typing import Any


def run_chunk(descriptor: Any) -> str:
    """Claim, compute and report the chunk (see :mod:`hydra.worker`)."""
    from hydra.worker import current_runner

    return current_runner().run(descriptor)
