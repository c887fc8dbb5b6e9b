"""Hydra: volunteer computing on Redis and rq.

A job is a record in Redis plus chunk descriptors on the rq queue ``hydra``; volunteers run
``rq worker hydra`` with :class:`hydra.worker.HydraWorker` and execute numba kernels on each chunk.
"""

__version__ = "0.1.0"
