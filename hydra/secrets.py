"""Refuse the placeholder secrets of ``.env.example``: a deployment must set its own.

``hydra web`` and ``hydra monitor`` (the compose services that hold secrets) call
:func:`check_secrets` at start and stop with one line if ``REDIS_PASSWORD`` or ``HYDRA_WEB_TOKEN``
is still the example's value.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from hydra.errors import InvalidInput

# The values in .env.example; tests/test_deploy.py checks that they match the file.
PLACEHOLDERS = frozenset({"change-me", "change-me-too"})


def check_secrets(redis_url: str, web_token: str = "") -> None:
    """Raise :class:`InvalidInput` if the Redis password or the page's token is a placeholder."""
    try:
        password = urlsplit(redis_url).password
    except ValueError:
        password = None
    if password is not None and unquote(password) in PLACEHOLDERS:
        raise InvalidInput("REDIS_PASSWORD is still the placeholder from .env.example: set a long random one in .env")
    if web_token in PLACEHOLDERS:
        raise InvalidInput("HYDRA_WEB_TOKEN is still the placeholder from .env.example: set a long random one in .env")
