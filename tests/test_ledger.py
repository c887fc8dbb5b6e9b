"""The credit ledger: RFC 6962 proofs, the Redis tree cache, signed heads, tampering, credit maths."""

from __future__ import annotations

import json
import math
import random
import stat
import threading

import fakeredis
import pytest

from hydra import credit, ledger, merkle, statements
from hydra.connection import connect
from hydra.ledger import LedgerError, format_entry, load_key, parse_entry, sign_new_head
from hydra.local import RedisServer
from hydra.tasks import get_task

# RFC 6962 reference data (the Certificate Transparency test vectors).
CT_LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657")] + [
    bytes.fromhex("606162636465666768696a6b6c6d6e6f")
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {
    (2, 8): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}
T0 = 1_764_000_000.0


def hexes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


# -- RFC 6962 ------------------------------------------------------------------------------------


def test_roots_match_the_rfc_6962_reference_vectors():
    tree = merkle.MemoryTree(CT_LEAVES)
    assert [merkle.root(tree, n).hex() for n in range(9)] == CT_ROOTS


def test_split_is_the_largest_power_of_two_below_n_not_the_midpoint():
    assert [merkle.split(n) for n in (2, 3, 4, 5, 6, 7, 8, 9, 1000)] == [1, 2, 2, 4, 4, 4, 4, 8, 512]


def test_inclusion_and_consistency_proofs_match_the_reference_vectors():
    tree = merkle.MemoryTree(CT_LEAVES)
    for (index, size), want in CT_INCLUSION.items():
        assert merkle.inclusion_proof(tree, index, size) == hexes(want)
        assert merkle.verify_inclusion(CT_LEAVES[index], index, size, hexes(want), bytes.fromhex(CT_ROOTS[size]))
    for (old, new), want in CT_CONSISTENCY.items():
        assert merkle.consistency_proof(tree, old, new) == hexes(want)
        old_root, new_root = bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new])
        assert merkle.verify_consistency(old, new, old_root, new_root, hexes(want))


def test_every_proof_verifies_and_every_mangled_one_fails():
    data = [f"leaf {i}".encode() for i in range(40)]
    tree = merkle.MemoryTree(data)
    roots = [merkle.root(tree, n) for n in range(41)]
    bogus = b"\xab" * 32
    for n in range(1, 41):
        for i in range(n):
            proof = merkle.inclusion_proof(tree, i, n)
            assert merkle.verify_inclusion(data[i], i, n, proof, roots[n])
            assert not merkle.verify_inclusion(data[i] + b"x", i, n, proof, roots[n])
            assert not merkle.verify_inclusion(data[i], i, n, [*proof, bogus], roots[n])
            if proof:
                assert not merkle.verify_inclusion(data[i], i, n, proof[:-1], roots[n])
                flipped = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
                assert not merkle.verify_inclusion(data[i], i, n, flipped, roots[n])
            if n > 1:
                other = (i + 1) % n
                assert data[i] == data[other] or not merkle.verify_inclusion(data[i], other, n, proof, roots[n])
        for m in range(0, n + 1):
            proof = merkle.consistency_proof(tree, m, n)
            assert merkle.verify_consistency(m, n, roots[m], roots[n], proof)
            if 0 < m < n:
                assert not merkle.verify_consistency(m, n, roots[m], roots[n - 1], proof)
                assert not merkle.verify_consistency(m, n, roots[m - 1], roots[n], proof)
                assert not merkle.verify_consistency(m, n, roots[m], roots[n], [*proof, bogus])
                assert not merkle.verify_consistency(m, n, roots[m], roots[n], proof[:-1])
    assert not merkle.verify_consistency(4, 4, roots[4], roots[5], [])
    assert not merkle.verify_inclusion(data[3], 8, 8, merkle.inclusion_proof(tree, 3, 8), roots[8])


# -- the ledger in Redis -------------------------------------------------------------------------


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def key(tmp_path):
    return load_key(tmp_path / "ledger-key.pem")


def grant(redis, volunteer: str, first: int, credit_milli: int = 1000, when: float = T0, kind: str = "grant", job="j1"):
    entry = format_entry(kind, volunteer, job, "pi", first, 8, credit_milli, f"{first:064x}", when)
    return redis.rpush(ledger.LEDGER, entry) - 1


def test_format_entry_writes_the_contract_bytes_and_parse_reads_them_back():
    raw = format_entry("grant", "alice", "0123456789ab", "pi", 0, 8, 1234, "ab" * 32, 1764000000.123)
    assert raw == (
        b'{"kind":"grant","volunteer":"alice","job":"0123456789ab","task":"pi","first":0,"count":8,'
        b'"credit":1234,"digest":"' + b"ab" * 32 + b'","time":1764000000.123}'
    )
    entry = parse_entry(raw)
    assert (entry.volunteer, entry.credit, entry.time, entry.signed_credit) == ("alice", 1234, 1764000000.123, 1234)
    for bad in (b"{}", b"[1]", raw.replace(b'"grant"', b'"steal"'), raw.replace(b":1234", b":-1"), b"nope"):
        with pytest.raises(LedgerError):
            parse_entry(bad)


def test_entries_as_the_accept_script_writes_them_are_read_without_a_json_parser(monkeypatch):
    """The monitor parses every entry it signs: those the ACCEPT script wrote (any name, digest,
    time) take the fast path; the JSON parser is left for anything written otherwise."""
    entries = [
        format_entry(kind, name, "0123456789ab", "mandelbrot", i, 1 + i, 10**i, f"{i:064x}", T0 + i / 7)
        for i, (kind, name) in enumerate([("grant", "alice"), ("reverse", "bob.smith-2"), ("grant", "carol_3")])
    ]
    expected = [ledger.parse_entry_json(raw) for raw in entries]
    monkeypatch.setattr(ledger, "parse_entry_json", lambda raw: pytest.fail("read with the JSON parser"))
    assert [parse_entry(raw) for raw in entries] == expected


def test_incremental_tree_cache_matches_an_in_memory_tree_at_every_size(fake, key):
    rng = random.Random(5)
    memory = merkle.MemoryTree()
    size = 0
    while size < 300:
        for _ in range(rng.choice([1, 1, 2, 3, 15, 16, 17, 40])):
            grant(fake, rng.choice(["alice", "bob", "carol"]), size, rng.randint(1, 5000))
            memory.append(fake.lindex(ledger.LEDGER, size))
            size += 1
        head = sign_new_head(fake, key)
        assert head is not None and head.size == size
        assert head.root == merkle.root(memory, size).hex()
        tree = ledger.RedisTree(fake, size)
        for i in rng.sample(range(size), min(size, 5)):
            assert merkle.inclusion_proof(tree, i, size) == merkle.inclusion_proof(memory, i, size)
        old = rng.randint(0, size)
        assert merkle.consistency_proof(tree, old, size) == merkle.consistency_proof(memory, old, size)
    assert sign_new_head(fake, key) is None  # nothing new: no head
    # The cache holds two hashes per 16 entries, not one per entry.
    cached = sum(len(fake.get(ledger.level_key(k)) or b"") for k in range(ledger.BASE_LEVEL, 20))
    assert cached <= 2 * 32 * size // 16


def test_a_pass_folds_at_most_a_batch_and_the_next_pass_goes_on(fake, key):
    for i in range(50):
        grant(fake, "alice", i)
    assert sign_new_head(fake, key, batch=20).size == 20
    assert sign_new_head(fake, key, batch=20).size == 40
    assert sign_new_head(fake, key, batch=20).size == 50
    assert [h.size for h in ledger.heads(fake)] == [20, 40, 50]


def test_signed_heads_verify_with_the_public_key_only(fake, key, tmp_path):
    grant(fake, "alice", 0)
    head = sign_new_head(fake, key)
    public = ledger.load_public_key(ledger.public_pem(key))
    head.check(public)
    other = load_key(tmp_path / "other.pem").public_key()
    with pytest.raises(LedgerError, match="another key"):
        head.check(other)
    forged = ledger.SignedHead(head.size + 1, head.timestamp, head.root, head.signature, head.key)
    with pytest.raises(LedgerError, match="signature"):
        forged.check(public)


def test_the_key_is_created_once_with_mode_0600(tmp_path):
    path = tmp_path / "keys" / "ledger.pem"
    first = load_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ledger.fingerprint(load_key(path).public_key()) == ledger.fingerprint(first.public_key())
    with pytest.raises(LedgerError, match="no ledger key"):
        load_key(tmp_path / "absent.pem", create=False)
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(LedgerError, match="not an unencrypted PEM"):
        load_key(tmp_path / "junk.pem")


# -- statements and tampering --------------------------------------------------------------------


def _ledger_with_three_volunteers(redis, key):
    for i in range(37):
        grant(redis, ["alice", "bob", "carol"][i % 3], 8 * i, 100 + i, T0 + i)
    credit.monitor_pass(redis, key)


def test_a_statement_verifies_offline_and_says_what_it_proves(fake, key):
    _ledger_with_three_volunteers(fake, key)
    doc = statements.build_statement(fake, "bob")
    assert [item["index"] for item in doc["entries"]] == list(range(1, 37, 3))
    assert doc["totals"] == {
        "credit_milli": sum(100 + i for i in range(1, 37, 3)),
        "chunks": 12,
        "grants": 12,
        "reversals": 0,
    }
    line = statements.verify_document(json.dumps(doc), key.public_key())
    assert line.startswith("ok: 12 entries of bob")


@pytest.mark.parametrize("field", ledger.ENTRY_FIELDS)
def test_editing_any_field_of_a_stored_entry_makes_verify_fail(fake, key, field):
    _ledger_with_three_volunteers(fake, key)
    index = 4  # bob's second entry, inside a cached 16-leaf block
    stored = json.loads(fake.lindex(ledger.LEDGER, index))
    changed = {
        "kind": "reverse",
        "volunteer": "bob",
        "job": "j2",
        "task": "mandelbrot",
        "first": stored["first"] + 1,
        "count": stored["count"] + 1,
        "credit": stored["credit"] * 10,
        "digest": "f" * 64,
        "time": stored["time"] + 1,
    }
    if field == "volunteer":  # claim alice's entry 3 for bob
        index = 3
        stored = json.loads(fake.lindex(ledger.LEDGER, index))
    stored[field] = changed[field]
    edited = json.dumps(stored, separators=(",", ":")).encode()
    fake.lset(ledger.LEDGER, index, edited)
    doc = statements.build_statement(fake, "bob") if field != "volunteer" else _claimed(fake, index, key)
    with pytest.raises(LedgerError, match="is not in the signed ledger") as caught:
        statements.verify_document(json.dumps(doc), key.public_key())
    assert "\n" not in str(caught.value)


def _claimed(redis, index, key):
    """Bob's statement with alice's edited entry slipped in (the editor also edits the index list)."""
    redis.rpush(ledger.by_volunteer_key("bob"), index)
    return statements.build_statement(redis, "bob")


def test_editing_an_entry_after_the_last_cached_block_also_fails(fake, key):
    _ledger_with_three_volunteers(fake, key)  # 37 entries: 32 cached, 5 recomputed from entries
    stored = json.loads(fake.lindex(ledger.LEDGER, 34))
    stored["credit"] += 1
    fake.lset(ledger.LEDGER, 34, json.dumps(stored, separators=(",", ":")))
    with pytest.raises(LedgerError, match="not in the signed ledger"):
        statements.verify_document(json.dumps(statements.build_statement(fake, "bob")), key.public_key())


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["entries"][0].update(entry=d["entries"][0]["entry"].replace('"credit":101', '"credit":9101')),
        lambda d: d["entries"][0].update(index=d["entries"][0]["index"] + 1),
        lambda d: d["entries"][0]["proof"].reverse(),
        lambda d: d["entries"][0]["proof"].pop(),
        lambda d: d["head"].update(size=d["head"]["size"] + 1),
        lambda d: d["head"].update(root="00" * 32),
        lambda d: d["totals"].update(credit_milli=d["totals"]["credit_milli"] + 1),
        lambda d: d.update(volunteer="alice"),
        lambda d: d["entries"].append(d["entries"][0]),
        lambda d: d["entries"].pop(),  # the stated totals no longer add up
    ],
)
def test_editing_the_statement_file_makes_verify_fail(fake, key, edit):
    _ledger_with_three_volunteers(fake, key)
    doc = statements.build_statement(fake, "bob")
    edit(doc)
    with pytest.raises(LedgerError):
        statements.verify_document(json.dumps(doc), key.public_key())


def test_a_reversal_shows_in_the_statement_and_subtracts(fake, key):
    grant(fake, "mallory", 0, 700)
    grant(fake, "mallory", 8, 300)
    credit.monitor_pass(fake, key)
    grant(fake, "mallory", 0, 700, T0 + 60, kind="reverse")
    credit.monitor_pass(fake, key)
    doc = statements.build_statement(fake, "mallory")
    assert doc["totals"] == {"credit_milli": 300, "chunks": 1, "grants": 2, "reversals": 1}
    assert "ok: 3 entries of mallory, 0.3 credits" in statements.verify_document(json.dumps(doc), key.public_key())
    # Dropping the grant a reversal refers to is noticed, whatever the totals say.
    doc["entries"].pop(0)
    doc["totals"] = {"credit_milli": -400, "chunks": 0, "grants": 1, "reversals": 1}
    with pytest.raises(LedgerError, match="reverses no grant"):
        statements.verify_document(json.dumps(doc), key.public_key())


def test_consistency_between_signed_heads_and_a_rewrite_is_caught(fake, key):
    for i in range(21):
        grant(fake, "alice", 8 * i)
    old = sign_new_head(fake, key)
    for i in range(21, 50):
        grant(fake, "bob", 8 * i)
    sign_new_head(fake, key)
    doc = statements.build_consistency(fake, old.size)
    assert "extends the one of 21" in statements.verify_document(json.dumps(doc), key.public_key())
    # An operator who rewrites history and signs again cannot prove the new head extends the old.
    memory = merkle.MemoryTree(fake.lrange(ledger.LEDGER, 0, -1))
    rewritten = merkle.MemoryTree([b"rewritten", *fake.lrange(ledger.LEDGER, 1, -1)])
    forged = ledger.sign_head(key, 50, merkle.root(rewritten, 50))
    doc["new"] = forged.to_json()
    doc["proof"] = [p.hex() for p in merkle.consistency_proof(memory, 21, 50)]
    with pytest.raises(LedgerError, match="rewritten"):
        statements.verify_document(json.dumps(doc), key.public_key())


# -- credit --------------------------------------------------------------------------------------


def test_chunk_credit_is_additive_so_chunk_sizes_never_change_the_total():
    rng = random.Random(1)
    for name, raw in (("pi", {"samples": "3e9"}), ("mandelbrot", {"width": 300, "max_iter": 500})):
        task = get_task(name)
        params = task.parse(raw)
        plan = task.plan(params)
        total = credit.job_credit(task, params, plan.data, plan.units_total)
        assert total > 0
        for _ in range(5):
            cuts = sorted(rng.sample(range(1, plan.units_total), 12))
            bounds = [0, *cuts, plan.units_total]
            parts = [
                credit.chunk_credit(task, params, plan.data, a, b - a) for a, b in zip(bounds, bounds[1:], strict=False)
            ]
            assert sum(parts) == total
    pi = get_task("pi")
    params = pi.parse({"samples": "1e10"})
    assert credit.job_credit(pi, params, b"", pi.plan(params).units_total) == 1000  # 10^10 samples = 1 credit


def test_rac_has_a_half_life_of_seven_days_and_converges_to_the_daily_rate():
    day = credit.DAY
    one = credit.Standing("alice")
    one.add(parse_entry(format_entry("grant", "alice", "j", "pi", 0, 1, 7000, "d", T0)))
    assert one.rac_at(T0) == pytest.approx(7 * math.log(2) / 7)
    assert one.rac_at(T0 + 7 * day) == pytest.approx(one.rac_at(T0) / 2)
    steady = credit.Standing("bob")
    for hour in range(24 * 70):  # 10 credits a day for 10 weeks, in hourly grants
        steady.add(parse_entry(format_entry("grant", "bob", "j", "pi", hour, 1, 10_000 // 24, "d", T0 + hour * 3600)))
    assert steady.rac_at(T0 + 70 * day) == pytest.approx(10_000 // 24 * 24 / 1000, rel=0.01)
    # Reversals subtract from credit, chunks and RAC alike; entries out of time order are fine.
    late = parse_entry(format_entry("reverse", "alice", "j", "pi", 0, 1, 7000, "d", T0 - 60))
    one.add(late)
    assert (one.credit, one.chunks, one.reversals) == (0, 0, 1)
    assert abs(one.rac_at(T0 + day)) < 1e-4


def test_the_board_in_redis_equals_one_recomputed_from_the_entries(fake, key):
    rng = random.Random(3)
    for round_ in range(6):
        for _ in range(rng.randint(1, 30)):
            grant(fake, rng.choice("abcde"), 0, rng.randint(1, 999), T0 + rng.uniform(0, 86400 * round_))
        credit.monitor_pass(fake, key)
    grant(fake, "a", 0, 5, T0)  # not folded yet: the board reads it anyway
    entries = [parse_entry(raw) for raw in fake.lrange(ledger.LEDGER, 0, -1)]
    expected = credit.ranked(credit.fold({}, entries), now=T0 + 10 * 86400)
    got = credit.ranked(credit.board(fake), now=T0 + 10 * 86400)
    assert [(r["volunteer"], r["credit"], r["chunks"]) for r in got] == [
        (r["volunteer"], r["credit"], r["chunks"]) for r in expected
    ]
    assert [r["rac"] for r in got] == pytest.approx([r["rac"] for r in expected], rel=1e-9)
    event = credit.credit_event(fake, top=2)
    assert len(event["top"]) == 2 and event["volunteers"] == 5 and event["head"]["size"] == len(entries) - 1


def test_exports_list_every_signed_entry_in_json_and_csv(fake, key):
    _ledger_with_three_volunteers(fake, key)
    grant(fake, "alice", 999)  # not under a signed head: not exported
    body = json.loads(credit.export(fake, "json"))
    assert len(body["entries"]) == 37 and body["head"]["size"] == 37
    assert body["entries"][5]["credit"] == pytest.approx(0.105) and body["entries"][5]["credit_milli"] == 105
    lines = credit.export(fake, "csv", volunteer="carol").splitlines()
    assert lines[0].startswith("index,kind,volunteer") and len(lines) == 1 + 12
    assert all(",carol," in line for line in lines[1:])


# -- exactly once, restarts ----------------------------------------------------------------------


def test_concurrent_monitors_fold_each_entry_exactly_once(client, key):
    stop = threading.Event()

    def monitor():
        c = connect(_url(client))
        while not stop.is_set():
            credit.monitor_pass(c, key)
        c.close()

    threads = [threading.Thread(target=monitor) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(400):
            grant(client, f"v{i % 4}", i, 10)
    finally:
        stop.set()
        for t in threads:
            t.join()
    credit.monitor_pass(client, key)
    board = credit.board(client)
    assert {name: s.credit for name, s in board.items()} == {f"v{i}": 1000 for i in range(4)}
    assert sum(client.llen(ledger.by_volunteer_key(f"v{i}")) for i in range(4)) == 400
    sizes = [h.size for h in ledger.heads(client)]
    assert sizes == sorted(set(sizes)) and sizes[-1] == 400


def _url(client) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/0"


def test_the_ledger_survives_a_redis_restart_and_a_crash(tmp_path, key):
    server = RedisServer(tmp_path, extra=["--appendonly", "yes", "--appendfsync", "always"]).start()
    try:
        c = connect(server.url)
        _ledger_with_three_volunteers(c, key)
        head = ledger.latest_head(c)
        server.stop()  # a clean shutdown
        server.start()
        for i in range(37, 40):
            grant(c, "bob", 8 * i)
        credit.monitor_pass(c, key)
        server.proc.kill()  # and a crash: every acknowledged write is in the AOF
        server.proc.wait()
        server.start()
        assert c.llen(ledger.LEDGER) == 40
        doc = statements.build_statement(c, "bob")
        assert statements.verify_document(json.dumps(doc), key.public_key()).startswith("ok: 15 entries of bob")
        proof = statements.build_consistency(c, head.size)
        assert statements.verify_document(json.dumps(proof), key.public_key()).startswith("ok")
        assert credit.board(c)["bob"].chunks == 15
        c.close()
    finally:
        server.stop()


def test_the_signed_top_reads_the_top_of_the_board_and_ranks_as_the_whole_board_would(client, key):
    """The monitor's once-a-second credit event reads the top standings from the rank kept with the
    board, not every volunteer's: same rows (ties included), count and total as the whole board."""
    rng = random.Random(7)
    volunteers = [f"v{i:03d}" for i in range(300)]
    for round_ in range(4):
        for i in range(400):
            who = rng.choice(volunteers)
            grant(client, who, i, rng.choice([500, 1000, 1000, 2000]), T0 + round_ * 3600 + i)
        grant(client, rng.choice(volunteers), 0, 1000, T0 + round_ * 3600, kind="reverse")
        while credit.monitor_pass(client, key, batch=97):
            pass
    now = T0 + 86400

    def whole_board(top: int) -> tuple[list, int, float]:
        rows = credit.ranked(credit.board(client, unsigned_limit=0), now)
        return rows[:top], len(rows), round(sum(r["credit"] for r in rows), 3)

    def hgetalls() -> int:
        return int(client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))

    before = hgetalls()
    for top in (1, 5, 20):
        assert credit.signed_top(client, top, now) == whole_board(top)
    assert hgetalls() == before + 3, "only whole_board read the whole board"
    tied = [r["credit"] for r in whole_board(20)[0]]
    assert len(set(tied)) < len(tied), "the top holds ties (ranked by recent credit, then name)"
    event = credit.credit_event(client, top=5, unsigned=False)
    assert event["volunteers"] == whole_board(5)[1] and event["total_credit"] == whole_board(5)[2]

    # A board from before the rank existed is indexed once, then read as above.
    client.delete(ledger.RANK, ledger.TOTALS)
    assert credit.signed_top(client, 20, now) == whole_board(20)
    assert client.zcard(ledger.RANK) == client.hlen(ledger.BOARD)


def test_signing_a_slice_costs_three_round_trips_whatever_the_ledger_s_size(client, key, monkeypatch):
    """The cached nodes a new head needs (one per set bit of the size, and the siblings of new
    upper nodes) are read in one round trip with the standings the slice moves, not one GETRANGE
    each, and everything is written in one more: a slice of 32 entries costs a ledger of 300
    entries what it costs one of 20,000 (3 round trips; 8 under WATCH), and the head is the one
    recomputed from all."""
    import redis.connection

    trips: list[int] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self, *args, **kwargs):
        trips[-1] += 1
        return send(self, *args, **kwargs)

    counts = []
    for size in (300, 20_000):
        client.flushdb()
        entries = [
            format_entry("grant", f"v{i % 50}", "j1", "pi", i, 8, 1000, f"{i:064x}", T0 + i) for i in range(size)
        ]
        client.rpush(ledger.LEDGER, *entries)
        while credit.monitor_pass(client, key, batch=4096):
            pass
        grant(client, "late", 0)
        for i in range(31):
            grant(client, f"v{i}", size + i)
        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
        trips.append(0)
        head = credit.monitor_pass(client, key, batch=32)
        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", send)
        counts.append(trips[-1])
        memory = merkle.MemoryTree(client.lrange(ledger.LEDGER, 0, -1))
        assert head is not None and head.size == size + 32 and head.root == merkle.root(memory, size + 32).hex()
    assert counts == [3, 3], counts


def test_a_slice_of_thousands_of_volunteers_is_written_whole(client, key):
    """A slice touching more standings than Lua can unpack in one command (8,000 values) is written
    in pieces inside the same compare-and-set: every volunteer is on the board, ranked, and indexed."""
    entries = [format_entry("grant", f"v{i:05d}", "j1", "pi", i, 8, 1000, f"{i:064x}", T0 + i) for i in range(6000)]
    client.rpush(ledger.LEDGER, *entries)
    head = credit.monitor_pass(client, key, batch=6000)
    assert head is not None and head.size == 6000
    assert client.hlen(ledger.BOARD) == client.zcard(ledger.RANK) == 6000
    assert int(client.hget(ledger.TOTALS, "credit")) == 6000 * 1000
    assert client.lrange(ledger.by_volunteer_key("v05999"), 0, -1) == [b"5999"]
    memory = merkle.MemoryTree(entries)
    assert head.root == merkle.root(memory, 6000).hex()


def test_a_slice_another_monitor_signed_first_changes_nothing(client, key):
    """Two monitors read the same slice; the one that writes second finds the folded size moved and
    writes nothing (no second head, no credit counted twice), and says what is left to fold."""
    for i in range(40):
        grant(client, f"v{i % 3}", i, 10)
    first = ledger.sign_slice(client, key, prepare=credit.board_fold, batch=32)
    assert first.head is not None and first.head.size == 32 and first.left == 8
    eval_ = client.eval
    calls = []

    def sign_behind_its_back(script, *args):
        calls.append(script)
        if len(calls) == 2:  # between this monitor's reads and its write, another one signs
            credit.monitor_pass(connect(_url(client)), key)
        return eval_(script, *args)

    client.eval = sign_behind_its_back
    try:
        late = ledger.sign_slice(client, key, prepare=credit.board_fold, batch=32)
    finally:
        del client.eval
    assert late.head is None and late.left == 8
    assert [h.size for h in ledger.heads(client)] == [32, 40]
    assert sum(s.credit for s in credit.board(client, unsigned_limit=0).values()) == 40 * 10
