"""Transitional: kernels now live in their task packages (``hydra.tasks.<name>``).

Only :mod:`hydra.kernels.cuda` remains, for ``hydra.worker.pick_device``; delete this package once
the worker imports :func:`hydra.devices.cuda_available`.
"""
