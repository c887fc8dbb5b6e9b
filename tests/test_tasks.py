"""The task plug-in API: registry, declared parameters, reductions, fingerprints and run_job."""

from __future__ import annotations

import json
import random

import pytest

from hydra.errors import InvalidInput
from hydra.tasks import get_task, installed, task_fingerprint
from hydra.tasks import reduce as reducing
from hydra.tasks.params import Param, parse_params
from hydra.tasks.primes.kernel import count_primes, count_primes_reference
from hydra.testing import run_job


def test_builtin_tasks_are_entry_points_with_versions_and_fingerprints():
    tasks = installed()
    assert {"pi", "mandelbrot", "primes"} <= set(tasks)
    for name, task in tasks.items():
        assert task.name == name and isinstance(task.version, str) and task.version
        fingerprint = task_fingerprint(task)
        assert len(fingerprint) == 64 and fingerprint == task_fingerprint(task)
    assert len({task_fingerprint(t) for t in tasks.values()}) == len(tasks)


def test_unknown_task_is_one_line():
    with pytest.raises(InvalidInput, match="unknown task 'nope'"):
        get_task("nope")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"below": "1"}, "at least 2"),
        ({"below": "1e16"}, "at most"),
        ({"below": "2.5"}, "whole number"),
        ({"below": True}, "whole number"),
        ({"bellow": "10"}, "unknown parameter 'bellow'"),
    ],
)
def test_declared_parameters_validate(raw, message):
    with pytest.raises(InvalidInput, match=message):
        get_task("primes").parse(raw)


def test_parsing_is_idempotent_through_json():
    for name, raw in (("pi", {"samples": "1e7"}), ("mandelbrot", {"center": "-0.7,0.1", "span": "0.5"})):
        task = get_task(name)
        parsed = task.parse(raw)
        assert task.parse(json.loads(json.dumps(parsed))) == parsed
    assert get_task("mandelbrot").parse({"width": "300"})["height"] == 300


def test_param_kinds():
    declared = (
        Param("span", "float", 1.0, "", low=0, open_low=True),
        Param("mode", "choice", "a", "", choices=("a", "b")),
        Param("c", "point", "0,0", ""),
    )
    assert parse_params(declared, {"mode": "b", "c": [1, 2]}) == {"span": 1.0, "mode": "b", "c": [1.0, 2.0]}
    for raw in ({"span": "0"}, {"span": "nan"}, {"mode": "z"}, {"c": "1"}):
        with pytest.raises(InvalidInput):
            parse_params(declared, raw)


def test_reductions_combine_in_any_order():
    kinds = reducing.kinds(("n", "gap", "at"), {"gap": "max", "at": "at:gap"})
    parts = [{"n": 3, "gap": 6, "at": 90}, {"n": 1, "gap": 8, "at": 50}, {"n": 2, "gap": 8, "at": 20}, {"n": 0}]
    results = set()
    for seed in range(20):
        random.Random(seed).shuffle(parts)
        total = reducing.initial(kinds)
        for part in parts:
            total = reducing.combine(kinds, total, part)
        results.add(json.dumps(total, sort_keys=True))
    assert results == {json.dumps({"at": 20, "gap": 8, "n": 6}, sort_keys=True)}
    with pytest.raises(ValueError):
        reducing.kinds(("a",), {"a": "at:b"})


def test_the_lua_reduction_agrees_with_python(client):
    kinds = reducing.kinds(("n", "gap", "at", "low"), {"gap": "max", "at": "at:gap", "low": "min"})
    script = client.register_script(reducing.LUA + "reduce_sums(KEYS[1], ARGV, 1) return 1")
    rng = random.Random(7)
    parts = [{"n": rng.randrange(100), "gap": rng.randrange(5), "at": rng.randrange(2**52), "low": rng.randrange(9)}]
    parts += [{**parts[0], "at": parts[0]["at"] + 1}] + [
        {"n": rng.randrange(100), "gap": rng.randrange(5), "at": rng.randrange(2**52), "low": rng.randrange(9)}
        for _ in range(30)
    ]
    expected = reducing.initial(kinds)
    for part in parts:
        expected = reducing.combine(kinds, expected, part)
    rng.shuffle(parts)
    for part in parts:
        script(keys=["job"], args=reducing.lua_args(kinds, part))
    stored = {k.decode()[4:]: int(v) for k, v in client.hgetall("job").items()}
    assert stored == expected


@pytest.mark.parametrize("below", [2, 3, 4, 5, 6, 100, 1000, 65537, 10**6 + 3])
def test_prime_counts_match_a_plain_sieve(below):
    count, _, _, gap, start = count_primes(0, below, below)
    assert (count, gap, start) == count_primes_reference(below)


def test_primes_any_cut_gives_the_same_answer():
    below = 3 * 10**6 + 17
    expected = count_primes_reference(below)
    rng = random.Random(1)
    for _ in range(10):
        cuts = sorted(rng.sample(range(1, below), 6))
        parts = [count_primes(a, b, below) for a, b in zip([0, *cuts], [*cuts, below], strict=True)]
        gap = max(p[3] for p in parts)
        assert (sum(p[0] for p in parts), gap, min(p[4] for p in parts if p[3] == gap)) == expected


@pytest.mark.parametrize("chunk_units", [1, 7, 60])
def test_pi_of_ten_to_the_ninth(chunk_units):
    result = run_job("primes", {"below": "1e9"}, chunk_units=chunk_units, shuffle=chunk_units)
    assert result["primes"] == 50_847_534  # OEIS A006880
    assert (result["max_gap"], result["gap_start"]) == (282, 436_273_009)  # OEIS A002386 / A005250


def test_primes_checks_refuse_impossible_sums():
    task = get_task("primes")
    params = task.parse({"below": "1e8"})
    task.check_sums(params, 0, 1, {"primes": 1_000, "max_gap": 10, "gap_start": 5})
    for bad in (
        {"primes": 10**8, "max_gap": 0, "gap_start": 0},
        {"primes": 5, "max_gap": 7, "gap_start": 11},
        {"primes": 5, "max_gap": 4, "gap_start": 1 << 30},
        {"primes": 5, "max_gap": 0, "gap_start": 3},
        {"primes": 5},
        {"primes": 5.0, "max_gap": 0, "gap_start": 0},
    ):
        with pytest.raises(InvalidInput):
            task.check_sums(params, 0, 1, bad)


def test_pi_checks_refuse_more_inside_than_samples():
    task = get_task("pi")
    params = task.parse({"samples": "1000"})
    with pytest.raises(InvalidInput):
        task.check_sums(params, 0, 1, {"inside": 1001})


def test_run_job_writes_the_declared_files(tmp_path):
    result = run_job(
        "mandelbrot", {"width": 40, "height": 30, "max_iter": 50}, chunk_units=4, outputs={"out": tmp_path / "m.png"}
    )
    assert result["pixels"] == 1200 and (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    assert result["chunks"] == 8


@pytest.mark.skipif("collatz" not in installed(), reason="pip install -e examples/hydra-collatz")
def test_the_guide_example_is_right():
    one = run_job("collatz", {"below": "1e6"}, chunk_units=1000)
    many = run_job("collatz", {"below": "1e6"}, chunk_units=1, shuffle=3)
    assert one["steps"] == many["steps"] == 131_434_272
    assert (many["longest"], many["longest_at"]) == (524, 837_799)
