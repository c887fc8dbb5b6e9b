"""``hydra credit``: the leaderboard, statements with proofs, offline verification, exports.

Registered in :mod:`hydra.cli` by :func:`add_parser` and :func:`run` (the ledger and its
cryptography are imported only when the command runs). Only ``verify`` works
without Redis: it needs the document and the operator's public key, nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import redis as redis_lib

from hydra.connection import check_reachable, connect
from hydra.errors import InvalidInput
from hydra.settings import Settings


def add_parser(commands: Any) -> None:
    """Add ``credit`` and its actions to the ``hydra`` subcommands."""
    credit = commands.add_parser("credit", help="volunteers' credit: leaderboard, statements, proofs, exports")
    actions = credit.add_subparsers(dest="action", parser_class=type(credit))
    credit.add_argument("--json", action="store_true", help="the leaderboard as JSON")
    credit.add_argument("--top", type=int, default=50, help="rows of the leaderboard (default 50)")
    statement = actions.add_parser("statement", help="a volunteer's entries with inclusion proofs and the signed head")
    statement.add_argument("name", help="the volunteer (its name or ACL user)")
    statement.add_argument("--out", help="write here instead of standard output")
    verify = actions.add_parser("verify", help="check a statement or consistency proof offline")
    verify.add_argument("file", help="a statement or consistency document")
    verify.add_argument("--public-key", required=True, help="the operator's public key (PEM)")
    export = actions.add_parser("export", help="every signed entry for whoever pays, as JSON or CSV")
    export.add_argument("--format", choices=["json", "csv"], default="json", help="output format")
    export.add_argument("--volunteer", help="only this volunteer's entries")
    export.add_argument("--out", help="write here instead of standard output")
    consistency = actions.add_parser("consistency", help="proof that a newer signed head extends an older one")
    consistency.add_argument("old", type=int, help="size of the older signed head")
    consistency.add_argument("new", type=int, nargs="?", help="size of the newer one (default: the latest)")
    consistency.add_argument("--out", help="write here instead of standard output")
    actions.add_parser("heads", help="the signed tree heads")
    public = actions.add_parser("public-key", help="print the operator's public key (creates the key if absent)")
    public.add_argument("--out", help="write here instead of standard output")
    actions.add_parser("sign", help="sign a head over new entries now (the monitor's signer does this as they come)")


def run(args: argparse.Namespace) -> int:
    from hydra.ledger import load_key, public_pem

    action = args.action or "board"
    if action == "verify":
        return _verify(args)
    if action == "public-key":
        return _write(public_pem(load_key(_settings(args).ledger_key or None)).decode(), args.out)
    client = _client(args)
    if action == "board":
        return _board(client, args)
    if action == "statement":
        from hydra.statements import build_statement

        return _write(json.dumps(build_statement(client, args.name), indent=1) + "\n", args.out)
    if action == "export":
        from hydra.credit import export

        return _write(export(client, args.format, args.volunteer), args.out)
    if action == "consistency":
        from hydra.statements import build_consistency

        return _write(json.dumps(build_consistency(client, args.old, args.new), indent=1) + "\n", args.out)
    if action == "heads":
        from hydra.ledger import heads

        for head in heads(client):
            print(f"{head.size:>10}  {head.timestamp}  {head.root}")
        return 0
    from hydra.credit import monitor_pass

    head = monitor_pass(client, load_key(_settings(args).ledger_key or None))
    print(f"signed the head of {head.size} entries" if head else "no new entries to sign")
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(redis_url=args.redis_url, tls_insecure=args.tls_insecure)


def _client(args: argparse.Namespace) -> redis_lib.Redis:
    settings = _settings(args)
    probe = connect(settings.redis_url, retry=False, tls_insecure=settings.tls_insecure)
    try:
        check_reachable(probe, settings.redis_url)
    finally:
        probe.close()
    return connect(settings.redis_url, tls_insecure=settings.tls_insecure)


def _board(client: redis_lib.Redis, args: argparse.Namespace) -> int:
    from hydra.credit import leaderboard

    if args.top < 1:
        raise InvalidInput(f"--top must be at least 1, got {args.top}")
    rows = leaderboard(client)[: args.top]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no credit granted yet")
        return 0
    width = max(9, *(len(r["volunteer"]) for r in rows))
    print(f"{'#':>3}  {'volunteer':<{width}}  {'credit':>14}  {'chunks':>8}  {'RAC/day':>12}  reversals")
    for rank, r in enumerate(rows, 1):
        print(
            f"{rank:>3}  {r['volunteer']:<{width}}  {r['credit']:>14,.3f}  {r['chunks']:>8}  {r['rac']:>12,.3f}  "
            f"{r['reversals']}"
        )
    return 0


def _read(path: str, what: str) -> bytes:
    from hydra.ledger import LedgerError

    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise LedgerError(f"cannot read {what} {path}: {exc.strerror}") from None


def _verify(args: argparse.Namespace) -> int:
    from hydra.ledger import load_public_key
    from hydra.statements import verify_document

    public = load_public_key(_read(args.public_key, "the public key"))
    print(verify_document(_read(args.file, "the document"), public))
    return 0


def _write(text: str, out: str | None) -> int:
    if not out:
        sys.stdout.write(text)
        return 0
    try:
        Path(out).write_text(text)
    except OSError as exc:
        raise InvalidInput(f"cannot write {out}: {exc.strerror}") from None
    print(f"wrote {out}", file=sys.stderr)
    return 0
