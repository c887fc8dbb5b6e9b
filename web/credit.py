"""The leaderboard's JSON route (``/api/credit``); the page renders it with ``static/credit.js``.

The same body reaches the page live as the ``credit`` event, emitted by the monitor with
:func:`hydra.credit.credit_event` when a pass signs a new ledger head. Both show the signed
standings, read from the top of the board: a request costs the same at 100 volunteers or 100,000
(the whole board with its unsigned entries, ``hydra credit``'s view, took 0.87 s at 100,000).
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from hydra.credit import TOP, credit_event

bp = Blueprint("credit", __name__)
MAX_TOP = 200


@bp.get("/api/credit")
def api_credit():
    try:
        top = min(MAX_TOP, max(1, int(request.args.get("top", TOP))))
    except ValueError:
        return jsonify({"error": "top must be a whole number"}), 400
    return jsonify(credit_event(current_app.extensions["hydra_redis"], top=top, unsigned=False))
