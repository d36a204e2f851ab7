"""The dashboard's Flask-SocketIO application: pages, JSON API, metrics, live socket.

It reads Redis only -- it can run anywhere the cluster's Redis URL reaches, several at a
time, and never talks to workers or the scheduler. ``create_app(config)`` is the factory;
``rdist dashboard`` serves it (``rdist.web.serve``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
)
from flask_socketio import SocketIO, join_room

from rdist import adapt
from rdist.config import Config, ConfigError, load_config
from rdist.store import RedisStore, connect
from rdist.store.connection import ConnectionErrors
from rdist.web import metrics, queries
from rdist.web.census import TaskCensus
from rdist.web.live import LiveFeed, status_snapshot, workers_snapshot
from rdist.web.routes import more_api

COOKIE = "rdist_dashboard"
#: Pages of the navigation bar: (endpoint, title).
PAGES = (
    ("pages.status", "Status"),
    ("pages.workers", "Workers"),
    ("pages.system", "System"),
    ("pages.tasks", "Tasks"),
    ("pages.graph", "Graph"),
    ("pages.clients", "Clients"),
    ("pages.profile", "Profile"),
    ("pages.events", "Events"),
    ("pages.deadletters", "Dead letters"),
)
OPEN_ENDPOINTS = frozenset({"pages.health", "pages.login", "static"})


@dataclass
class Dashboard:
    """What the request handlers share, kept in ``app.extensions["rdist"]``."""

    store: RedisStore
    census: TaskCensus
    feed: LiveFeed
    socketio: SocketIO
    token: str | None
    interval: float

    def session_value(self) -> str:
        """The cookie value: derived from the token, so the cookie never holds the token."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"rdist-dashboard-session", hashlib.sha256).hexdigest()

    def authorized(self, token: str | None, cookie: str | None) -> bool:
        if not self.token:
            return True
        if token and hmac.compare_digest(token.encode(), self.token.encode()):
            return True
        return bool(cookie) and hmac.compare_digest(str(cookie), self.session_value())

    def close(self) -> None:
        self.feed.stop()
        self.store.close()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve cluster internals on a reachable interface without a token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"the dashboard binds {host!r}, which other machines can reach: set "
            "RDIST_DASHBOARD_TOKEN (or dashboard.token) to a secret, or bind 127.0.0.1"
        )


def create_app(config: Config | None = None, store: RedisStore | None = None) -> Flask:
    """A dashboard for the cluster that ``config`` names (``redis.url``, ``redis.cluster``)."""
    config = config or load_config()
    settings = config.section("dashboard")
    check_exposure(str(settings["host"]), settings.get("token"))
    if store is None:
        url = config.get("redis.url")
        if not url:
            raise ConfigError(
                "the dashboard needs the cluster's Redis URL: set RDIST_REDIS_URL "
                "(or REDIS_URL) or pass --redis-url"
            )
        store = connect(url, str(config.get("redis.cluster")))
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep states in lifecycle order
    socketio = SocketIO(app, async_mode="threading")
    census = TaskCensus()
    interval = float(settings["interval"])
    feed = LiveFeed(store, socketio, census, interval)
    dashboard = Dashboard(store, census, feed, socketio, settings.get("token") or None, interval)
    app.extensions["rdist"] = dashboard
    app.register_blueprint(pages)
    app.register_blueprint(api, url_prefix="/api")
    app.register_blueprint(more_api, url_prefix="/api")
    app.before_request(_require_token)
    app.after_request(_security_headers)
    _socket_handlers(socketio, dashboard)
    return app


def _dashboard() -> Dashboard:
    return current_app.extensions["rdist"]  # type: ignore[no-any-return]


# -- access control ----------------------------------------------------------------------------
def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def _require_token() -> Any:
    dash = _dashboard()
    if not dash.token or request.endpoint in OPEN_ENDPOINTS:
        return None
    given = request.args.get("token") or _bearer()
    if not dash.authorized(given, request.cookies.get(COOKIE)):
        if request.path.startswith(("/api/", "/metrics")):
            return Response(
                "unauthorized: send the dashboard token (RDIST_DASHBOARD_TOKEN) "
                "as 'Authorization: Bearer <token>'\n",
                401,
                mimetype="text/plain",
            )
        return _login_page(request.full_path.rstrip("?"), failed=bool(given))
    if request.args.get("token"):  # a link with the token: set a cookie, drop it from the URL
        args = urlencode([(k, v) for k, v in request.args.items(multi=True) if k != "token"])
        return _logged_in(request.path + ("?" + args if args else ""))
    return None


def same_site_path(target: str | None) -> str:
    r"""``target`` when it is a path on this dashboard, else ``"/"``: the only places a
    login may send the browser back to. Browsers drop tabs and newlines anywhere in a URL
    and read ``\`` as ``/``, so ``/\t/evil.example`` and ``/\evil.example`` are
    ``//evil.example`` to them -- another host. Hence: one leading slash, then no second
    slash or backslash, no control character anywhere, no scheme or host."""
    if not target or not target.startswith("/") or target[1:2] in ("/", "\\"):
        return "/"
    if "\\" in target or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _login_page(next_path: str, failed: bool) -> Response:
    html = render_template("login.html", pages=PAGES, failed=failed, next_path=next_path)
    return Response(html, 401)


def _logged_in(next_path: str) -> Any:
    """Redirect with the session cookie. Secure behind an HTTPS proxy too (Heroku's router)."""
    response = redirect(same_site_path(next_path))
    https = request.is_secure or request.headers.get("X-Forwarded-Proto", "") == "https"
    response.set_cookie(
        COOKIE, _dashboard().session_value(), httponly=True, samesite="Strict", secure=https
    )
    return response


def _security_headers(response: Response) -> Response:
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def _socket_handlers(socketio: SocketIO, dash: Dashboard) -> None:
    """Socket.IO connects carry the cookie (same origin) or ``auth={"token": ...}``."""

    def on_connect(auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not dash.authorized(token, request.cookies.get(COOKIE)):
            raise ConnectionRefusedError("unauthorized: the dashboard token is missing or wrong")

    def on_subscribe(topics: Any) -> list[str]:
        wanted = dash.feed.subscribe(request.sid, [str(t) for t in (topics or [])])  # type: ignore[attr-defined]
        for topic in wanted:
            join_room(topic)
        return wanted

    def on_disconnect(*_: Any) -> None:
        dash.feed.drop(request.sid)  # type: ignore[attr-defined]

    socketio.on_event("connect", on_connect)
    socketio.on_event("subscribe", on_subscribe)
    socketio.on_event("disconnect", on_disconnect)


# -- pages ---------------------------------------------------------------------------------------
pages = Blueprint("pages", __name__)


def _page(template: str, active: str) -> Callable[[], str]:
    def view() -> str:
        dash = _dashboard()
        return render_template(
            template,
            pages=PAGES,
            active=active,
            cluster=dash.store.keys.cluster,
            interval=dash.interval,
        )

    view.__name__ = active.split(".")[1]
    return view


pages.add_url_rule("/", view_func=_page("status.html", "pages.status"))
pages.add_url_rule("/workers", view_func=_page("workers.html", "pages.workers"))
pages.add_url_rule("/tasks", view_func=_page("tasks.html", "pages.tasks"))
pages.add_url_rule("/events", view_func=_page("events.html", "pages.events"))
pages.add_url_rule("/system", view_func=_page("system.html", "pages.system"))
pages.add_url_rule("/graph", view_func=_page("graph.html", "pages.graph"))
pages.add_url_rule("/clients", view_func=_page("clients.html", "pages.clients"))
pages.add_url_rule("/deadletters", view_func=_page("deadletters.html", "pages.deadletters"))
pages.add_url_rule("/worker", view_func=_page("worker.html", "pages.worker"))
pages.add_url_rule("/profile", view_func=_page("profile.html", "pages.profile"))


@pages.route("/login", methods=["POST"])
def login() -> Any:
    """The login form posts here, so the token never appears in a URL or an access log."""
    dash = _dashboard()
    next_path = same_site_path(request.form.get("next"))  # only ever back into this dashboard
    if not dash.authorized(request.form.get("token"), None):
        return _login_page(next_path, failed=True)
    return _logged_in(next_path)


@pages.route("/health")
def health() -> tuple[Response, int]:
    """Liveness for load balancers: open without a token, and it says nothing sensitive."""
    try:
        _dashboard().store.ping()
    except ConnectionErrors as exc:
        return jsonify(status="unavailable", redis=f"unreachable: {type(exc).__name__}"), 503
    return jsonify(status="ok", redis="ok"), 200


@pages.route("/metrics")
def metrics_view() -> Response:
    dash = _dashboard()
    census = dash.census.snapshot(dash.store, max_age=dash.interval)
    try:
        info = dash.store.memory_info()
    except Exception:  # fakeredis and restricted Redis services may refuse INFO
        info = None
    text = metrics.render(census, queries.workers(dash.store), queries.task_rate(dash.store), info)
    text += adapt.exposition(adapt.status(dash.store, census)["adaptive_target"])  # (h-client)
    return Response(text, mimetype=None, content_type=metrics.CONTENT_TYPE)


# -- JSON API ------------------------------------------------------------------------------------
api = Blueprint("api", __name__)


def _int_arg(name: str, default: int) -> int:
    try:
        return int(request.args.get(name, default))
    except ValueError:
        raise _BadRequest(f"query parameter {name!r} must be an integer") from None


class _BadRequest(ValueError):
    pass


@api.errorhandler(_BadRequest)
def _bad_request(exc: _BadRequest) -> tuple[Response, int]:
    return jsonify(error=str(exc)), 400


def _redis_down(exc: Exception) -> tuple[Response, int]:
    return jsonify(error=f"redis unavailable: {exc}"), 503


for _error in ConnectionErrors:
    api.register_error_handler(_error, _redis_down)


@api.route("/status")
def api_status() -> Response:
    dash = _dashboard()
    return jsonify(
        status_snapshot(dash.store, dash.census, dash.interval, history=dash.feed.history)
    )


@api.route("/adaptive")
def api_adaptive() -> Response:
    """The adaptive target (workers the work wants) and its inputs (see rdist.adapt)."""
    dash = _dashboard()
    return jsonify(adapt.status(dash.store, dash.census.snapshot(dash.store, dash.interval)))


@api.route("/workers")
def api_workers() -> Response:
    dash = _dashboard()
    return jsonify(workers_snapshot(dash.store, dash.census, dash.interval))


@api.route("/tasks")
def api_tasks() -> Response:
    state = request.args.get("state") or None
    if state is not None and state not in queries.STATES + ("forgotten",):
        raise _BadRequest(f"unknown state {state!r}; one of {', '.join(queries.STATES)}")
    page = queries.tasks_page(
        _dashboard().store,
        cursor=_int_arg("cursor", 0),
        limit=_int_arg("limit", 50),
        state=state,
        query=request.args.get("q") or None,
    )
    return jsonify(page)


@api.route("/task")
def api_task() -> tuple[Response, int]:
    key = request.args.get("key")
    if not key:
        raise _BadRequest("query parameter 'key' is required")
    detail = queries.task_detail(_dashboard().store, key)
    if detail is None:
        return jsonify(error=f"no task {key!r}: unknown, or forgotten since nobody wants it"), 404
    return jsonify(detail), 200


@api.route("/runs")
def api_runs() -> Response:
    window = min(max(_int_arg("window", 60), 1), 3600)
    runs, transfers = queries.recent_activity(_dashboard().store, window)
    return jsonify(runs=runs, transfers=transfers, window=window)


@api.route("/events")
def api_events() -> Response:
    before = request.args.get("before") or None
    if before is not None and not _is_stream_id(before):
        raise _BadRequest("query parameter 'before' must be a stream id like 1700000000000-0")
    return jsonify(queries.events_page(_dashboard().store, before, _int_arg("limit", 100)))


def _is_stream_id(text: str) -> bool:
    ms, _, seq = text.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit())
