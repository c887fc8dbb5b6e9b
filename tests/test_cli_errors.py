"""Every wrong invocation: one line on stderr, a non-zero exit, no traceback, Redis untouched."""

from __future__ import annotations

import pytest

from hydra.queue import SubmitOptions, submit
from tests.conftest import run_cli


def snapshot(client) -> dict:
    return {k: (client.type(k), client.dump(k)) for k in sorted(client.keys("*"))}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "pi", "--samples", "-5"], "at least 1"),
        (["submit", "pi", "--samples", "0"], "at least 1"),
        (["submit", "pi", "--samples", "abc"], "must be a number"),
        (["submit", "pi", "--samples", "1e30"], "at most"),
        (["submit", "pi", "--samples", "1.5"], "whole number"),
        (["submit", "pi", "--samples", "1e9", "--seed", "-1"], "at least 0"),
        (["submit", "pi", "--chunk-units", "0"], "at least 1"),
        (["submit", "nosuchtask"], "invalid choice"),
        (["status", "doesnotexist0"], "no job"),
        (["result", "doesnotexist0"], "no job"),
        (["cancel", "doesnotexist0"], "no job"),
        (["result", "../../etc"], "no job"),
    ],
)
def test_bad_input_is_one_line_and_leaves_redis_untouched(redis_server, client, args, message):
    existing = submit(client, "pi", {"samples": "1e7"}, SubmitOptions())
    before = snapshot(client)
    done = run_cli("--redis-url", redis_server.url, *args)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and message in done.stderr
    assert snapshot(client) == before
    assert client.exists(f"hydra:job:{existing}")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "http://example.invalid/", "redis://user:secret@127.0.0.1:1"])
def test_unreachable_or_bad_redis_url_is_one_line(url):
    done = run_cli("--redis-url", url, "status", timeout=120)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "secret" not in done.stderr


def test_bad_samples_fail_before_any_redis_is_needed():
    done = run_cli("--redis-url", "redis://127.0.0.1:1/0", "submit", "pi", "--samples", "-5")
    assert done.returncode == 2 and "--samples must be at least 1" in done.stderr
