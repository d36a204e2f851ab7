"""``Client()`` fails fast against a real Redis, with a message naming the URL (masked),
what failed and the fix; LocalCluster's processes carry no password in argv
(issue 11, items 4 and 5)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psutil
import pytest
import redis

from rdist import Client, LocalCluster
from rdist.embedded import EmbeddedRedis
from rdist.store.health import NoScheduler, RedisConfigError, RedisUnreachable
from tests.conftest import free_port

pytestmark = [pytest.mark.usefixtures("subprocess_pythonpath")]

SECRET = "s3cret-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def password_redis() -> Iterator[str]:
    server = EmbeddedRedis(port=free_port()).start()
    redis.Redis.from_url(server.url).config_set("requirepass", SECRET)
    try:
        yield f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
    finally:
        server.stop()


def test_client_of_an_unreachable_redis_raises_within_its_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(RedisUnreachable) as raised:
        Client("redis://127.0.0.1:1/0", timeout=2, set_as_default=False)
    assert 1.5 < time.monotonic() - started < 6
    assert isinstance(raised.value, TimeoutError)
    assert "redis://127.0.0.1:1/0" in str(raised.value) and "redis-server" in str(raised.value)


def test_client_with_a_wrong_password_raises_at_once_masking_it(password_redis: str) -> None:
    wrong = password_redis.replace(SECRET, "wrong-password")
    started = time.monotonic()
    with pytest.raises(RedisConfigError) as raised:
        Client(wrong, timeout=30, set_as_default=False)
    assert time.monotonic() - started < 5  # permanent: not retried until the timeout
    assert "wrong-password" not in str(raised.value) and "refused the credentials" in str(
        raised.value
    )


def test_client_over_tls_to_a_plain_server_raises_a_config_error_naming_the_fix(
    redis_url: str,
) -> None:
    tls = redis_url.replace("redis://", "rediss://")
    with pytest.raises((RedisConfigError, RedisUnreachable)) as raised:
        Client(tls, timeout=3, set_as_default=False)
    assert "rediss://" in str(raised.value) and "TLS" in str(raised.value)


def test_client_with_redis_up_but_no_scheduler_says_so(redis_url: str) -> None:
    cluster = f"empty-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    with pytest.raises(NoScheduler, match=f"rdist scheduler --cluster {cluster}"):
        Client(redis_url, cluster_name=cluster, timeout=1.5, set_as_default=False)
    assert time.monotonic() - started < 6


def test_local_cluster_processes_have_no_password_in_argv(password_redis: str) -> None:
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        redis_url=password_redis,
        name=f"argv-{uuid.uuid4().hex[:8]}",
        timeout=30,
        nanny=False,
        dashboard_address=None,
    ) as lc:
        assert SECRET not in repr(lc)
        with Client(lc, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=30)
            assert client.submit(sum, [1, 2]).result(timeout=30) == 3
            assert SECRET not in repr(client)
            children = psutil.Process().children(recursive=True)
            rdist_children = [p for p in children if "rdist" in " ".join(p.cmdline())]
            assert len(rdist_children) >= 2  # the scheduler and a worker
            for proc in rdist_children:
                assert SECRET not in " ".join(proc.cmdline()), proc.cmdline()
