"""``hydra credit`` as a user runs it, and the leaderboard's JSON route."""

from __future__ import annotations

import csv
import io
import json

import pytest
from conftest import run_cli

from hydra import ledger
from hydra.ledger import format_entry

T0 = 1_764_000_000.0


@pytest.fixture
def signed(client, redis_server, tmp_path):
    """A ledger of 20 grants and one reversal, signed by the CLI with a key of its own."""
    for i in range(20):
        who = ("alice", "bob")[i % 2]
        client.rpush(ledger.LEDGER, format_entry("grant", who, "job1", "pi", 8 * i, 8, 500 + i, f"{i:064x}", T0 + i))
    client.rpush(ledger.LEDGER, format_entry("reverse", "bob", "job1", "pi", 8, 8, 501, f"{1:064x}", T0 + 99))
    env = {"HYDRA_LEDGER_KEY": str(tmp_path / "operator.pem"), "HYDRA_REDIS_URL": redis_server.url}
    sign = run_cli("credit", "sign", env=env)
    assert sign.returncode == 0, sign.stderr
    assert "signed the head of 21 entries" in sign.stdout
    public = tmp_path / "operator.pub"
    assert run_cli("credit", "public-key", "--out", str(public), env=env).returncode == 0
    return env, public


def test_the_leaderboard_shows_credit_chunks_and_reversals(signed):
    env, _ = signed
    out = run_cli("credit", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].split()[:4] == ["1", "alice", "5.090", "10"]  # 500+502+…+518 milli-credits
    assert lines[2].split()[:4] == ["2", "bob", "4.599", "9"] and lines[2].split()[-1] == "1"
    rows = json.loads(run_cli("credit", "--json", env=env).stdout)
    assert [r["volunteer"] for r in rows] == ["alice", "bob"] and rows[1]["reversals"] == 1


def test_a_statement_verifies_offline_and_a_tampered_ledger_does_not(signed, client, tmp_path):
    env, public = signed
    statement = tmp_path / "bob.json"
    assert run_cli("credit", "statement", "bob", "--out", str(statement), env=env).returncode == 0
    offline = {"HYDRA_REDIS_URL": "redis://127.0.0.1:1/0"}  # verify needs no Redis
    ok = run_cli("credit", "verify", str(statement), "--public-key", str(public), env=offline)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: 11 entries of bob, 4.599 credits")

    stored = json.loads(client.lindex(ledger.LEDGER, 3))
    stored["credit"] = 50_000  # bob quietly grants himself more
    client.lset(ledger.LEDGER, 3, json.dumps(stored, separators=(",", ":")))
    forged = tmp_path / "forged.json"
    assert run_cli("credit", "statement", "bob", "--out", str(forged), env=env).returncode == 0
    bad = run_cli("credit", "verify", str(forged), "--public-key", str(public), env=offline)
    assert bad.returncode != 0 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "not in the signed ledger" in bad.stderr


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text: text.replace('"size": 21', '"size": 22'), "signature"),
        (lambda text: "not json", "not JSON"),
        (lambda text: json.dumps({"hello": 1}), "neither"),
    ],
)
def test_verify_says_in_one_line_what_is_wrong(signed, tmp_path, damage, message):
    env, public = signed
    statement = tmp_path / "alice.json"
    run_cli("credit", "statement", "alice", "--out", str(statement), env=env)
    statement.write_text(damage(statement.read_text()))
    out = run_cli("credit", "verify", str(statement), "--public-key", str(public))
    assert out.returncode != 0 and out.stderr.count("\n") == 1 and message in out.stderr


def test_verify_with_another_operators_key_fails(signed, tmp_path):
    env, _ = signed
    statement = tmp_path / "alice.json"
    run_cli("credit", "statement", "alice", "--out", str(statement), env=env)
    other = tmp_path / "other.pub"
    run_cli("credit", "public-key", "--out", str(other), env={"HYDRA_LEDGER_KEY": str(tmp_path / "other.pem")})
    out = run_cli("credit", "verify", str(statement), "--public-key", str(other))
    assert out.returncode != 0 and "another key" in out.stderr
    missing = run_cli("credit", "verify", str(tmp_path / "nope.json"), "--public-key", str(other))
    assert missing.returncode != 0 and missing.stderr.count("\n") == 1 and "cannot read" in missing.stderr


def test_exports_and_consistency_proofs(signed, client, tmp_path):
    env, public = signed
    rows = list(csv.DictReader(io.StringIO(run_cli("credit", "export", "--format", "csv", env=env).stdout)))
    assert len(rows) == 21 and rows[20]["kind"] == "reverse" and rows[20]["credit_milli"] == "501"
    body = json.loads(run_cli("credit", "export", "--format", "json", "--volunteer", "alice", env=env).stdout)
    assert len(body["entries"]) == 10 and body["head"]["size"] == 21

    client.rpush(ledger.LEDGER, format_entry("grant", "carol", "job2", "pi", 0, 8, 7, "ab" * 32, T0 + 200))
    assert run_cli("credit", "sign", env=env).returncode == 0
    proof = tmp_path / "consistency.json"
    assert run_cli("credit", "consistency", "21", "--out", str(proof), env=env).returncode == 0
    out = run_cli("credit", "verify", str(proof), "--public-key", str(public))
    assert out.returncode == 0 and "22 entries extends the one of 21" in out.stdout
    none = run_cli("credit", "consistency", "5", env=env)
    assert none.returncode != 0 and "no signed tree head of size 5" in none.stderr


def test_the_json_route_serves_the_leaderboard(signed, redis_server):
    from hydra_web.app import create_app

    app = create_app({"REDIS_URL": redis_server.url, "MESSAGE_QUEUE": False})
    body = app.test_client().get("/api/credit?top=1").get_json()
    assert [r["volunteer"] for r in body["top"]] == ["alice"] and body["volunteers"] == 2
    assert body["head"]["size"] == 21
    assert app.test_client().get("/api/credit?top=x").status_code == 400
    page = app.test_client().get("/").get_data(as_text=True)
    assert 'id="credit"' in page and "credit.js" in page
