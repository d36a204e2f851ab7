"""Sentinel and Redis Cluster URLs: parsed, refused with a fix, secrets never shown (pure)."""

from __future__ import annotations

import pytest

from rdist.store import connect, health, topology
from rdist.store.keys import Keys


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    target = topology.parse(
        "redis+sentinel://app:s3cret@10.0.0.1:26379,[::1]:26380/mymaster/2"
        "?sentinel_password=sp&ssl_ca_certs=/ca.pem"
    )

    assert target.kind == "sentinel" and not target.tls
    assert target.hosts == (("10.0.0.1", 26379), ("::1", 26380))
    assert (target.service, target.db) == ("mymaster", 2)
    assert (target.username, target.password) == ("app", "s3cret")
    assert target.option("sentinel_password") == "sp"
    assert "s3cret" not in repr(target)


def test_a_sentinel_url_without_a_database_uses_zero_and_a_lone_token_is_a_password() -> None:
    target = topology.parse("rediss+sentinel://tok%40en@h:1/svc")

    assert target.tls and target.db == 0 and target.service == "svc"
    assert (target.username, target.password) == (None, "tok@en")


def test_a_cluster_url_names_its_seed_nodes() -> None:
    target = topology.parse("redis+cluster://:pw@a:7000,b:7001,c:7002")

    assert target.kind == "cluster"
    assert target.hosts == (("a", 7000), ("b", 7001), ("c", 7002))
    assert (target.username, target.password, target.db) == (None, "pw", 0)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://:s3cret@h:1", "names the Sentinel service"),
        ("redis+sentinel://:s3cret@/svc/0", "at least one host"),
        ("redis+sentinel://:s3cret@h:port/svc/0", "host:port"),
        ("redis+sentinel://:s3cret@h:1/svc/zero", "one number"),
        ("redis+cluster://:s3cret@h:1/3", "database 0 only"),
    ],
)
def test_a_malformed_url_is_refused_at_once_naming_the_problem_not_the_secret(
    url: str, problem: str
) -> None:
    with pytest.raises(health.RedisConfigError) as info:
        connect(url)

    assert problem in str(info.value)
    assert "s3cret" not in str(info.value) and "***@" in str(info.value)
    assert health.classify(info.value) == health.PERMANENT


def test_opening_a_sentinel_or_cluster_store_sends_nothing_and_hides_the_password() -> None:
    for url in (
        "redis+sentinel://:s3cret@127.0.0.1:1,127.0.0.1:2/svc/0",
        "redis+cluster://:s3cret@127.0.0.1:1",
    ):
        store = connect(url, "prod")  # nothing listens on port 1: nothing was tried

        assert "s3cret" not in repr(store) and "***@127.0.0.1:1" in repr(store)
        store.close()


def test_an_unknown_scheme_lists_the_sentinel_and_cluster_forms() -> None:
    with pytest.raises(health.RedisConfigError) as info:
        connect("sentinel://h:1/svc")

    assert "redis+sentinel://" in str(info.value) and "redis+cluster://" in str(info.value)


def test_every_key_of_a_cluster_carries_its_hash_tag() -> None:
    keys = Keys("prod")
    names = [
        keys.sched,
        keys.worker_stream("tcp://1.2.3.4:5"),
        keys.client_stream("c1"),
        keys.tasks,
        keys.specs,
        keys.funcs,
        keys.results,
        keys.meta,
        keys.lease,
        keys.transfer("r", "k"),
        keys.semaphore("s"),
        keys.queue("q"),
        keys.variable("v"),
        keys.event("e"),
        keys.plugins("worker"),
        keys.nanny_stream("n"),
    ]

    assert all(name.startswith("rdist:{prod}:") for name in names)


@pytest.mark.parametrize(
    "url", ["redis+sentinel://:s3cret@127.0.0.1:1/svc/0", "redis+cluster://:s3cret@127.0.0.1:1"]
)
def test_nothing_answering_is_a_transient_failure_retried_until_the_deadline(url: str) -> None:
    store = connect(url, "prod")
    try:
        with pytest.raises(health.RedisUnreachable) as info:
            store.check(0.3)
    finally:
        store.close()

    assert "s3cret" not in str(info.value) and "***@127.0.0.1:1" in str(info.value)
