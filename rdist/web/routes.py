"""The pages and JSON endpoints beyond Status/Workers/Tasks/Events: history, system, one
worker (with call stacks on request), the task graph, clients, dead letters (requeue).

Registered by :func:`rdist.web.app.create_app` on the same ``/api`` prefix; the token
check of ``app.py`` guards them all. The one endpoint that changes anything (requeue)
takes only a JSON POST from this dashboard's own pages: a cross-site form cannot send
JSON without a preflight, the session cookie is ``SameSite=Strict``, and the Origin, when
the browser sends one, must be this host.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, jsonify, request

from rdist.web import explore

more_api = Blueprint("more_api", __name__)


def _dash() -> Any:
    return current_app.extensions["rdist"]


def _float_arg(name: str, default: float) -> float:
    try:
        return float(request.args.get(name, default))
    except ValueError:
        return default


@more_api.route("/history")
def api_history() -> Response:
    """The retained time series (``since``: only points after that epoch second)."""
    dash = _dash()
    workers = request.args.get("workers", "1") != "0"
    return jsonify(dash.feed.history.to_json(since=_float_arg("since", 0.0), workers=workers))


@more_api.route("/worker")
def api_worker() -> tuple[Response, int]:
    address = request.args.get("address")
    if not address:
        return jsonify(error="query parameter 'address' is required"), 400
    detail = explore.worker_detail(_dash().store, address)
    if detail["info"] is None and not detail["runs"]:
        return jsonify(error=f"no worker {address!r}: unknown, or gone"), 404
    return jsonify(detail), 200


@more_api.route("/worker/logs")
def api_worker_logs() -> tuple[Response, int]:
    address = request.args.get("address")
    if not address:
        return jsonify(error="query parameter 'address' is required"), 400
    return jsonify(explore.worker_logs(_dash().store, address)), 200


@more_api.route("/worker/stacks", methods=["POST"])
def api_request_stacks() -> tuple[Response, int]:
    refused = _refuse_cross_site()
    if refused is not None:
        return refused
    address = str((request.get_json(silent=True) or {}).get("address") or "")
    store = _dash().store
    if not address or not store.workers.exists(address):
        return jsonify(error=f"no worker {address!r} to ask"), 404
    return jsonify(id=explore.request_stacks(store, address)), 202


@more_api.route("/worker/stacks")
def api_read_stacks() -> tuple[Response, int]:
    request_id = request.args.get("id", "")
    if not request_id.startswith("dash-"):
        return jsonify(error="query parameter 'id' must be a stacks request id"), 400
    answer = explore.read_stacks(_dash().store, request_id)
    if answer is None:
        return jsonify(pending=True), 202
    return jsonify(answer), 200


@more_api.route("/profile")
def api_profile() -> Response:
    window = min(max(_float_arg("window", 600.0), 1.0), 24 * 3600.0)
    group = request.args.get("group") or None
    worker = request.args.get("worker") or None
    return jsonify(explore.profile(_dash().store, group, worker, window))


@more_api.route("/graph")
def api_graph() -> Response:
    return jsonify(explore.graph(_dash().store))


@more_api.route("/clients")
def api_clients() -> Response:
    dash = _dash()
    return jsonify(explore.clients(dash.store, dash.census, dash.interval))


@more_api.route("/deadletters")
def api_dead_letters() -> tuple[Response, int]:
    before = request.args.get("before") or None
    if before is not None and not _is_stream_id(before):
        return jsonify(error="query parameter 'before' must be a stream id"), 400
    try:
        limit = int(request.args.get("limit", 100))
    except ValueError:
        return jsonify(error="query parameter 'limit' must be an integer"), 400
    return jsonify(explore.dead_letters_page(_dash().store, before, limit)), 200


@more_api.route("/deadletters/requeue", methods=["POST"])
def api_requeue() -> tuple[Response, int]:
    refused = _refuse_cross_site()
    if refused is not None:
        return refused
    letter_id = str((request.get_json(silent=True) or {}).get("id") or "")
    if not _is_stream_id(letter_id):
        return jsonify(error="send {'id': <dead letter id>}"), 400
    try:
        return jsonify(explore.requeue(_dash().store, letter_id)), 200
    except explore.RequeueRefused as exc:
        return jsonify(error=str(exc)), 409


def _refuse_cross_site() -> tuple[Response, int] | None:
    if not request.is_json:
        return jsonify(error="send JSON (Content-Type: application/json)"), 415
    origin = request.headers.get("Origin")
    if origin and urlsplit(origin).netloc != request.host:
        return jsonify(error="cross-site requests may not change the cluster"), 403
    return None


def _is_stream_id(text: str) -> bool:
    ms, _, seq = text.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit())
