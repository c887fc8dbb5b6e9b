"""Transitional alias of :func:`hydra.devices.cuda_available` (see :mod:`hydra.kernels`)."""

from hydra.devices import cuda_available

__all__ = ["cuda_available"]
