"""Classified Redis failures, one backoff, and URL secrets masked (issue 11, items 4 and 5).

Pure: no Redis, no sleeping -- the backoff takes its clock and randomness from the test.
"""

from __future__ import annotations

import logging
import ssl

import pytest
import redis

from rdist.config import mask_url
from rdist.store import connect, health

# -- masking ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@host:6379/0", "redis://***@host:6379/0"),
        ("redis://:s3cret@host:6379/0", "redis://***@host:6379/0"),
        ("rediss://tokenonly@host:6380/0", "rediss://***@host:6380/0"),
        ("redis://host:6379/0?password=s3cret", "redis://host:6379/0?password=***"),
        (
            "redis://host/0?db=1&sentinel_password=s3cret&x=1",
            "redis://host/0?db=1&sentinel_password=***&x=1",
        ),
        ("redis://host/0?TOKEN=s3cret", "redis://host/0?TOKEN=***"),
        ("redis://u:pa/ss#w@rd@host:1/0", "redis://***@host:1/0"),
        ("unix:///run/redis.sock?password=s3cret", "unix:///run/redis.sock?password=***"),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_mask_url_hides_every_secret_form(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert "s3cret" not in mask_url(url) and "rd@" not in mask_url(url)


def test_a_config_error_names_the_url_masked_and_a_fix() -> None:
    url = "redis://:s3cret@host:6379/0"
    error = health.config_error(url, redis.AuthenticationError(f"invalid password for {url}"))

    text = str(error)
    assert "s3cret" not in text and "redis://***@host:6379/0" in text
    assert "refused the credentials" in text and "password in the URL" in text


def test_unreachable_and_no_scheduler_messages_mask_the_url_and_say_what_to_do() -> None:
    url = "redis://:s3cret@127.0.0.1:1/0"
    unreachable = health.RedisUnreachable(url, 2.0, ConnectionRefusedError(f"refused {url}"))
    missing = health.NoScheduler(url, "prod", 5.0)

    for error in (unreachable, missing):
        assert "s3cret" not in str(error) and "***@127.0.0.1:1" in str(error)
        assert isinstance(error, TimeoutError)
    assert "redis-server running" in str(unreachable)
    assert "rdist scheduler --cluster prod" in str(missing)


# -- classification ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        redis.AuthenticationError("invalid password"),
        redis.exceptions.NoPermissionError("NOPERM"),
        redis.ResponseError("ERR DB index is out of range"),
        redis.ConnectionError("Error 1 connecting: [SSL: CERTIFICATE_VERIFY_FAILED]"),
        ValueError("Redis URL must specify one of the following schemes"),
        health.RedisConfigError("redis://h", "x", "y"),
    ],
)
def test_permanent_failures_are_not_retried(exc: BaseException) -> None:
    assert health.classify(exc) == health.PERMANENT


def test_a_tls_verification_error_in_the_cause_chain_is_permanent_with_the_tls_fix() -> None:
    wrapped = redis.ConnectionError("Error connecting")
    wrapped.__cause__ = ssl.SSLCertVerificationError("certificate verify failed")

    assert health.classify(wrapped) == health.PERMANENT
    text = str(health.config_error("rediss://h:6380/0", wrapped))
    assert "ssl_ca_certs=" in text and "RDIST_REDIS_SSL_CERT_REQS" in text


@pytest.mark.parametrize(
    "exc",
    [
        redis.ConnectionError("Connection refused"),
        redis.TimeoutError("Timeout connecting"),
        ConnectionResetError("reset"),
        redis.exceptions.BusyLoadingError("LOADING"),
        redis.exceptions.ReadOnlyError("READONLY"),
        redis.exceptions.TryAgainError("TRYAGAIN"),
    ],
)
def test_transient_failures_are_retried(exc: BaseException) -> None:
    assert health.classify(exc) == health.TRANSIENT


def test_a_url_of_an_unknown_scheme_or_none_is_refused_before_connecting() -> None:
    with pytest.raises(health.RedisConfigError, match="unknown scheme 'http'"):
        connect("http://user:s3cret@host:6379/0")
    with pytest.raises(health.RedisConfigError, match="no Redis URL"):
        connect("")
    with pytest.raises(health.RedisConfigError) as raised:
        connect("redis://:s3cret@host:notaport/0")
    assert "s3cret" not in str(raised.value)


# -- backoff -----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() -> None:
    clock = Clock()
    top = health.Backoff("w", first=0.1, cap=1.0, clock=clock, rand=lambda: 1.0)
    bottom = health.Backoff("w", first=0.1, cap=1.0, clock=clock, rand=lambda: 0.0)
    refused = redis.ConnectionError("refused")

    highs = [top.failed(refused) for _ in range(7)]
    lows = [bottom.failed(refused) for _ in range(7)]

    assert highs == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert lows == pytest.approx([h / 2 for h in highs])


def test_backoff_logs_the_start_how_long_it_lasts_and_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    url = "redis://:s3cret@host:6379/0"
    backoff = health.Backoff("worker w1", url, report_every=10.0, clock=clock, rand=lambda: 0.5)
    refused = redis.ConnectionError(f"Error 111 connecting to {url}")
    caplog.set_level(logging.WARNING, logger="rdist.store")

    for _ in range(50):  # 25 s of failures, one every half second
        backoff.failed(refused)
        clock.now += 0.5
    backoff.succeeded()

    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4  # the start, two "still" lines (10 s, 20 s), the end
    assert "retrying with backoff" in lines[0]
    assert "unavailable for 10 s" in lines[1] and "unavailable for 20 s" in lines[2]
    assert "reachable again after 25.0 s (50 failed attempts)" in lines[3]
    assert not any("s3cret" in line for line in lines)
    assert backoff.attempts == 0 and backoff.failing_for == 0.0


def test_backoff_raises_a_permanent_error_and_tells_the_process_handler() -> None:
    seen: list[health.RedisConfigError] = []
    health.exit_on_permanent_errors(seen.append)
    try:
        backoff = health.Backoff("w", "redis://:bad@h:1/0")
        with pytest.raises(health.RedisConfigError, match="credentials"):
            backoff.failed(redis.AuthenticationError("WRONGPASS"))
    finally:
        health.exit_on_permanent_errors(None)
    assert len(seen) == 1 and "bad" not in str(seen[0])


def test_the_start_check_gives_up_at_its_deadline_and_at_once_on_a_permanent_error() -> None:
    def refused() -> None:
        raise redis.ConnectionError("refused")

    def wrong_password() -> None:
        raise redis.AuthenticationError("WRONGPASS")

    import time

    started = time.monotonic()
    with pytest.raises(health.RedisUnreachable, match="within 0.3 s"):
        health.wait_until_reachable(refused, "redis://h:1/0", 0.3)
    assert time.monotonic() - started < 2
    with pytest.raises(health.RedisConfigError):
        health.wait_until_reachable(wrong_password, "redis://h:1/0", 60)


def test_waiting_for_a_scheduler_ends_with_the_lease_or_no_scheduler() -> None:
    tokens = iter([None, None, "leader-1"])
    assert health.wait_for_scheduler(lambda: next(tokens), lambda s: None, "u", "c", 5) == (
        "leader-1"
    )
    with pytest.raises(health.NoScheduler):
        health.wait_for_scheduler(lambda: None, lambda s: None, "u", "c", 0.05)
