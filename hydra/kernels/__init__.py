"""Numba kernels: pure functions of their arguments, shared by CPU and GPU workers.

Nothing here talks to Redis; the task modules in ``hydra.tasks`` wrap these.
"""
