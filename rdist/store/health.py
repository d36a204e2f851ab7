"""Can we use Redis, and what to do when we cannot: classified failures and retries.

A failure to talk to Redis is one of two kinds, and each is handled once, here:

- **permanent** -- a malformed URL or an unknown scheme, a password or ACL user Redis
  refuses, a TLS certificate that fails verification, a database index that does not
  exist. Trying again changes nothing: :func:`classify` says so, and the caller raises
  :class:`RedisConfigError` at once. Its message names the URL (password masked), what
  failed and the fix (``?ssl_ca_certs=``, ``RDIST_REDIS_SSL_CERT_REQS``, the password).
- **transient** -- refused, reset, timed out, Redis loading its dataset, a replica that is
  read-only during a fail-over, a host name that does not resolve yet (a service still
  starting). Every loop that retries goes through one :class:`Backoff`: exponential,
  capped, with jitter (many workers must not hammer a Redis that comes back all at the
  same instant), and its log says how long it has been failing -- a line when it starts,
  one every :data:`REPORT_SECONDS` while it lasts, one when it is over.

:func:`wait_until_reachable` is the start-up check every role makes (``Client()``, the
CLI roles), within a deadline; :func:`wait_for_scheduler` waits for the leader lease.

A role process (``rdist scheduler``/``worker``/``dashboard``) exits with
:data:`EXIT_CONFIG` on a permanent error, even one met later in a loop (a password
rotated under a running worker): :func:`exit_on_permanent_errors`. The nanny does not
restart a worker that exited so.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from rdist.config import ConfigError, mask_url

log = logging.getLogger("rdist.store")

#: Exit status of a role process that cannot work with its configuration (sysexits'
#: EX_CONFIG): its supervisor -- the nanny, systemd, Kubernetes -- should not retry it.
EXIT_CONFIG = 78
PERMANENT, TRANSIENT = "permanent", "transient"
#: Backoff: the first delay, the cap, and how often a lasting failure is logged again.
FIRST_DELAY = 0.05
MAX_DELAY = 5.0
REPORT_SECONDS = 10.0
SCHEMES = (
    "redis://",
    "rediss://",
    "unix://",
    "redis+sentinel://",
    "rediss+sentinel://",
    "redis+cluster://",
    "rediss+cluster://",
)

_AUTH_ERRORS = (
    redis.AuthenticationError,
    redis.exceptions.AuthorizationError,
    redis.exceptions.AuthenticationWrongNumberOfArgsError,
    redis.exceptions.NoPermissionError,
)
#: Transient by nature although their base class (``ResponseError``) is not retried.
_TRANSIENT_REPLIES = (
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)


class RedisConfigError(ConfigError):
    """Redis cannot be used as configured; retrying would not help. The message names the
    URL (password masked), what failed and what to change."""

    def __init__(self, url: str, problem: str, hint: str) -> None:
        self.url = mask_url(url)
        self.problem = problem
        self.hint = hint
        super().__init__(f"cannot use Redis at {self.url}: {problem}. {hint}".strip())


class RedisUnreachable(TimeoutError):
    """Redis did not answer within a deadline (transient failures that outlasted it)."""

    def __init__(self, url: str, seconds: float, last: BaseException | None) -> None:
        self.url = mask_url(url)
        cause = f" (last error: {_mask_text(str(last), url)})" if last is not None else ""
        super().__init__(
            f"Redis at {self.url} did not answer within {seconds:.3g} s{cause}. Is "
            "redis-server running and reachable from here, on this host and port? "
            "A rediss:// URL needs a server speaking TLS (and redis:// one that does not)"
        )


class NoScheduler(TimeoutError):
    """Redis answers, but no scheduler held the cluster's leader lease in time."""

    def __init__(self, url: str, cluster: str, seconds: float) -> None:
        self.url = mask_url(url)
        self.cluster = cluster
        super().__init__(
            f"no scheduler of cluster {cluster!r} is running on Redis at {self.url} "
            f"(nobody took the leader lease within {seconds:.3g} s): start one with "
            f"`rdist scheduler --cluster {cluster}` (the Redis URL from RDIST_REDIS_URL "
            "or --redis-url), or check the cluster name (RDIST_CLUSTER)"
        )


def _mask_text(text: str, url: str) -> str:
    """A message that may quote the URL, with its secrets masked."""
    return text.replace(url, mask_url(url)) if url else text


def _tls_failure(exc: BaseException) -> BaseException | None:
    """The SSL error behind a redis-py connection error, if that is what it was."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        current = current.__cause__ or current.__context__
    text = str(exc)
    return exc if "CERTIFICATE_VERIFY_FAILED" in text or "WRONG_VERSION_NUMBER" in text else None


def classify(exc: BaseException) -> str:
    """PERMANENT or TRANSIENT: whether trying again could ever succeed (pure)."""
    if isinstance(exc, RedisConfigError) or isinstance(exc, _AUTH_ERRORS):
        return PERMANENT
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError)):
        return PERMANENT if _tls_failure(exc) is not None else TRANSIENT
    if isinstance(exc, _TRANSIENT_REPLIES):
        return TRANSIENT
    if isinstance(exc, redis.ResponseError):
        # a reply refusing what we asked (an unknown database, a disabled command):
        # the same request gets the same answer
        return PERMANENT
    if isinstance(exc, (ValueError, TypeError)):  # redis-py parsing the URL
        return PERMANENT
    return TRANSIENT


def config_error(url: str, exc: BaseException) -> RedisConfigError:
    """The :class:`RedisConfigError` for a permanent failure, with the fix for its kind."""
    if isinstance(exc, RedisConfigError):
        return exc
    text = _mask_text(str(exc), url)
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return RedisConfigError(
            url,
            f"the Redis user may not run what rdist needs ({text})",
            "Grant the ACL user the commands and keys rdist uses (e.g. "
            "`ACL SETUSER <user> on >pass ~rdist:* &* +@all`), or use another user.",
        )
    if isinstance(exc, _AUTH_ERRORS):
        return RedisConfigError(
            url,
            f"Redis refused the credentials ({text})",
            "Put the right password in the URL (redis://:PASSWORD@host:port/0, or "
            "redis://USER:PASSWORD@... for an ACL user); percent-encode special characters.",
        )
    if _tls_failure(exc) is not None:
        return RedisConfigError(
            url,
            f"the TLS handshake failed ({text})",
            "If the server uses a certificate of your own CA, name it: "
            "rediss://host:port/0?ssl_ca_certs=/path/to/ca.pem; for a self-signed one "
            "(Heroku Redis) set RDIST_REDIS_SSL_CERT_REQS=none. If the server does not "
            "speak TLS, use redis:// instead of rediss://.",
        )
    if isinstance(exc, redis.ResponseError):
        return RedisConfigError(
            url,
            f"Redis refused the connection's set-up ({text})",
            "Check the database number in the URL (redis://host:port/<db>, 0 to 15 by default).",
        )
    return RedisConfigError(
        url,
        f"the URL is not usable ({text})",
        "A Redis URL looks like redis://[:password@]host:port/0, rediss://... for TLS, "
        "unix:///path/to/redis.sock, redis+sentinel://host:port,host:port/<service>/0 "
        "or redis+cluster://host:port,host:port.",
    )


def check_url(url: str) -> None:
    """Refuse an empty URL or one of an unknown scheme, before any connection is tried."""
    if not url or not isinstance(url, str):
        raise RedisConfigError(
            str(url),
            "no Redis URL",
            "Pass one (--redis-url, Client('redis://...')) or set RDIST_REDIS_URL / REDIS_URL.",
        )
    if not url.startswith((*SCHEMES, "fakeredis://")):
        scheme = url.partition("://")[0] if "://" in url else url
        raise RedisConfigError(
            url,
            f"unknown scheme {scheme!r}",
            f"Use one of {', '.join(SCHEMES)} (e.g. redis://host:6379/0).",
        )


# -- retrying --------------------------------------------------------------------------------


class Backoff:
    """The retries of one loop: capped exponential delays with jitter, and a log that
    says how long Redis has been failing rather than a line per attempt.

    ``failed(exc)`` classifies the error: a permanent one raises :class:`RedisConfigError`
    (after the process-wide handler, see :func:`exit_on_permanent_errors`); a transient one
    returns how long to wait before the next try. ``succeeded()`` ends a failing spell.
    Clock and randomness come from the caller, so the schedule is tested without sleeping.
    """

    def __init__(
        self,
        what: str,
        url: str = "",
        logger: logging.Logger | None = None,
        first: float = FIRST_DELAY,
        cap: float = MAX_DELAY,
        report_every: float = REPORT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.what = what  #: who retries, for the log ("worker tcp://...: stream")
        self.url = url
        self._log = logger or log
        self._first, self._cap, self._report_every = first, cap, report_every
        self._clock, self._rand = clock, rand
        self.attempts = 0  #: failures in the current spell
        self.since: float | None = None  #: when the current spell began
        self._next_report = 0.0

    @property
    def failing_for(self) -> float:
        return 0.0 if self.since is None else self._clock() - self.since

    def delay(self) -> float:
        """The wait after the current failure: doubling from ``first`` up to ``cap``, each
        drawn from its upper half (jitter that still backs off)."""
        ceiling = min(self._cap, self._first * 2 ** max(0, self.attempts - 1))
        return float(ceiling * (0.5 + 0.5 * self._rand()))

    def failed(self, exc: BaseException) -> float:
        """Account for one failure; the seconds to wait, or RedisConfigError."""
        if classify(exc) == PERMANENT:
            error = config_error(self.url, exc)
            _on_permanent(error)
            raise error from None
        now = self._clock()
        self.attempts += 1
        reason = _mask_text(str(exc), self.url) or type(exc).__name__
        if self.since is None:
            self.since = now
            self._next_report = now + self._report_every
            self._log.warning(
                "%s: redis unavailable (%s); retrying with backoff (at most %g s apart)",
                self.what,
                reason,
                self._cap,
            )
        elif now >= self._next_report:
            self._next_report = now + self._report_every
            self._log.warning(
                "%s: redis unavailable for %.0f s (%d attempts; %s); still retrying",
                self.what,
                now - self.since,
                self.attempts,
                reason,
            )
        return self.delay()

    def wait(self, exc: BaseException, stop: threading.Event | None = None) -> bool:
        """``failed(exc)`` then sleep its delay (cut short by ``stop``); True if stopped."""
        seconds = self.failed(exc)
        if stop is None:
            time.sleep(seconds)
            return False
        return stop.wait(seconds)

    def succeeded(self) -> None:
        """Redis answered: a failing spell (if any) is over, and the next starts afresh."""
        if self.since is None:
            return
        self._log.warning(
            "%s: redis reachable again after %.1f s (%d failed attempts)",
            self.what,
            self._clock() - self.since,
            self.attempts,
        )
        self.since, self.attempts = None, 0


_permanent_handler: Callable[[RedisConfigError], None] | None = None


def _on_permanent(error: RedisConfigError) -> None:
    if _permanent_handler is not None:
        _permanent_handler(error)


def exit_on_permanent_errors(handler: Callable[[RedisConfigError], None] | None) -> None:
    """In a role process: what to do when any loop meets a permanent error (the CLI logs it
    and exits with :data:`EXIT_CONFIG`). A library user's process keeps the default: the
    error is raised to the loop, which stops."""
    global _permanent_handler
    _permanent_handler = handler


# -- start-up checks -------------------------------------------------------------------------


def wait_until_reachable(
    ping: Callable[[], Any], url: str, timeout: float, what: str = "rdist"
) -> None:
    """Call ``ping()`` until it answers: a permanent failure raises RedisConfigError at once,
    transient ones are retried with backoff until ``timeout`` s, then RedisUnreachable."""
    deadline = time.monotonic() + timeout
    backoff = Backoff(what, url, report_every=max(REPORT_SECONDS, timeout))
    while True:
        try:
            ping()
            return
        except Exception as exc:
            if classify(exc) == PERMANENT:
                raise config_error(url, exc) from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RedisUnreachable(url, timeout, exc) from None
            time.sleep(min(remaining, backoff.failed(exc)))


def wait_for_scheduler(
    holder: Callable[[], str | None],
    wait_for_news: Callable[[float], None],
    url: str,
    cluster: str,
    timeout: float,
) -> str:
    """The token of the scheduler holding the leader lease, waiting up to ``timeout`` s
    for one to take it; ``wait_for_news(seconds)`` blocks until something may have changed
    (an entry on the events stream, where a scheduler announces itself)."""
    deadline = time.monotonic() + timeout
    while True:
        token = holder()
        if token:
            return token
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NoScheduler(url, cluster, timeout)
        wait_for_news(min(remaining, 1.0))
