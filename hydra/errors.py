"""One exception hierarchy; every message is fit to show a user on one line."""


class HydraError(Exception):
    """Base of every error Hydra raises on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class InvalidInput(HydraError):
    """A job parameter, CLI argument or form field is out of bounds or malformed."""

    exit_code = 2


class NoSuchJob(HydraError):
    exit_code = 3


class RedisUnavailable(HydraError):
    exit_code = 4


class MalformedRecord(HydraError):
    """A record in Redis that Hydra did not write that way; set aside, never fatal."""

    exit_code = 6


class JobFailed(HydraError):
    exit_code = 5


class JobNotFinished(HydraError):
    """The job is still queued or running: no result yet, and nothing is wrong."""

    exit_code = 6
