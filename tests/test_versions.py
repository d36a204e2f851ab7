"""client.get_versions(): client, scheduler and workers report their versions, and
check=True names what differs (dask's get_versions)."""

from __future__ import annotations

import json

import pytest

from rdist import Client, versions


def test_every_process_reports_python_and_the_required_packages(c: Client) -> None:
    answer = c.get_versions(check=True)
    assert set(answer) == {"scheduler", "workers", "client"}
    assert set(answer["workers"]) == set(c.scheduler_info()["workers"])
    for report in [answer["scheduler"], answer["client"], *answer["workers"].values()]:
        assert report["packages"]["python"] and report["packages"]["rdist"]
        assert set(versions.REQUIRED) <= set(report["packages"])
        assert report["host"]["python-bits"] == 64


def test_a_mismatched_package_is_named_with_who_has_which(c: Client) -> None:
    stored = c.store.meta.scheduler_versions()
    assert stored is not None
    stored["packages"]["cloudpickle"] = "0.0.1"
    c.store.redis.hset(c.store.keys.meta, "versions", json.dumps(stored))
    assert c.get_versions(check=False)["scheduler"]["packages"]["cloudpickle"] == "0.0.1"
    with pytest.raises(ValueError, match=r"cloudpickle: .*scheduler: 0\.0\.1"):
        c.get_versions(check=True)


def test_python_patch_releases_do_not_count_as_a_mismatch() -> None:
    mine = versions.get_versions()
    other = json.loads(json.dumps(mine))
    major, minor, _ = mine["packages"]["python"].split(".")
    other["packages"]["python"] = f"{major}.{minor}.99"
    assert versions.mismatches({"client": mine, "scheduler": other, "workers": {}}) == {}
    other["packages"]["python"] = f"{major}.{int(minor) + 1}.0"
    assert "python" in versions.mismatches({"client": mine, "scheduler": other, "workers": {}})


def test_extra_packages_are_reported_and_checked() -> None:
    mine = versions.get_versions(["definitely-not-installed-pkg"])
    assert mine["packages"]["definitely-not-installed-pkg"] is None
