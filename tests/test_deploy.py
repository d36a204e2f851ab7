"""Deployment files (Procfile, app.json, docker/) and the commands they run.

No Docker engine or Heroku here: the files are parsed, and every command they run is
checked against the real CLI -- parsed by click exactly as the process would parse it, and
``rdist <cmd> --help`` run as a subprocess.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from rdist.cli import main
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker" / "docker-compose.yml"


def rdist_command(argv: list[str]) -> click.Command:
    """The CLI command ``argv`` would run; its options must parse (unknown ones raise)."""
    assert argv and argv[0] in main.commands, f"{argv[0]!r} is not an rdist command"
    command = main.commands[argv[0]]
    command.make_context(argv[0], list(argv[1:]), resilient_parsing=False)
    return command


def help_works(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rdist", name, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))


# -- Heroku ---------------------------------------------------------------------------------
def test_procfile_runs_dashboard_on_port_and_scheduler_and_worker() -> None:
    types = {name.strip(): command.strip() for name, command in procfile().items()}
    assert set(types) == {"web", "scheduler", "worker"}
    assert "$PORT" in types["web"] and "--host 0.0.0.0" in types["web"]
    for command in types.values():
        argv = shlex.split(command.replace("$PORT", "5000"))
        assert argv[0] == "rdist"
        rdist_command(argv[1:])
        assert "--redis-url" not in argv  # configured from REDIS_URL, as Heroku sets it


def test_app_json_deploys_in_one_step_with_heroku_redis() -> None:
    app = json.loads((ROOT / "app.json").read_text())
    assert any(addon["plan"].startswith("heroku-redis") for addon in app["addons"])
    env = app["env"]
    assert env["RDIST_DASHBOARD_TOKEN"]["generator"] == "secret"
    assert env["RDIST_REDIS_SSL_CERT_REQS"]["value"] == "none"
    assert set(app["formation"]) <= {name.strip() for name in procfile()}
    requirements = (ROOT / "requirements.txt").read_text().split()
    assert "." in requirements  # the buildpack installs the project itself


# -- docker ---------------------------------------------------------------------------------
def test_compose_file_runs_a_whole_cluster() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"redis", "scheduler", "worker-1", "worker-2", "dashboard"}
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--maxmemory-policy noeviction" in redis_command
    assert services["redis"]["volumes"], "redis data must outlive the container"
    for name in ("scheduler", "worker-1", "worker-2", "dashboard"):
        service = services[name]
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        assert service["environment"]["RDIST_REDIS_URL"].startswith("redis://redis:")
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        rdist_command(service["command"])
    assert services["dashboard"]["environment"]["RDIST_DASHBOARD_TOKEN"].startswith("${")
    assert any(str(p).endswith(":8787") for p in services["dashboard"]["ports"])
    contacts = {
        s["command"][s["command"].index("--contact-host") + 1]
        for n, s in services.items()
        if n.startswith("worker")
    }
    assert contacts == {"worker-1", "worker-2"}  # peers reach each other by service name


def test_dockerfile_builds_one_image_with_the_rdist_entry_point() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    instructions = [
        line.split(None, 1)
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#") and not line.startswith(" ")
    ]
    keywords = [parts[0] for parts in instructions]
    assert keywords[0] == "FROM" and "python:3" in instructions[0][1]
    entry = next(parts[1] for parts in instructions if parts[0] == "ENTRYPOINT")
    assert json.loads(entry) == ["rdist"]
    assert "pip install ." in text and "USER" in keywords
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored


@pytest.mark.cli
def test_every_command_the_deploy_files_run_exists_in_the_cli() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    names = {
        s["command"][0] for s in compose["services"].values() if s["command"][0] != "redis-server"
    }
    names |= {shlex.split(c)[1] for c in procfile().values()}
    assert names == {"scheduler", "worker", "dashboard"}
    for name in sorted(names):
        help_works(name)


# -- the dashboard process -------------------------------------------------------------------
def run_dashboard(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rdist", "dashboard", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.cli
def test_dashboard_serves_on_dollar_port_and_stops_promptly_on_sigterm(redis_url: str) -> None:
    port = free_port()
    proc = run_dashboard(
        {"RDIST_REDIS_URL": redis_url, "PORT": str(port), "RDIST_CLUSTER": "deploy"}
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert f"127.0.0.1:{port}" in line, proc.stderr.read()  # type: ignore[union-attr]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            assert json.load(response)["status"] == "ok"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5  # well within Heroku's 30 s
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.cli
def test_dashboard_refuses_a_public_interface_without_a_token(redis_url: str) -> None:
    env = {"RDIST_REDIS_URL": redis_url, "RDIST_DASHBOARD_TOKEN": ""}
    proc = run_dashboard(env, "--host", "0.0.0.0", "--port", str(free_port()))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "RDIST_DASHBOARD_TOKEN" in err


@pytest.mark.cli
def test_config_command_prints_layers_in_order(tmp_path: Path) -> None:
    config_file = tmp_path / "rdist.yaml"
    config_file.write_text(
        "scheduler:\n  worker_ttl: 12\ndashboard:\n  port: 9000\n  interval: 2\n"
    )
    env = {
        **os.environ,
        "RDIST_CONFIG": str(config_file),
        "RDIST_DASHBOARD__PORT": "9100",
        "RDIST_DASHBOARD_TOKEN": "top-secret",
        "REDIS_URL": "rediss://:pw@example.com:6380",
    }
    env.pop("RDIST_REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "rdist", "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"worker_ttl: 12.0  # file {config_file}" in out
    assert "port: 9100  # env" in out and f"interval: 2.0  # file {config_file}" in out
    assert "top-secret" not in out and "pw@" not in out
    parsed: dict[str, Any] = yaml.safe_load(out)
    assert parsed["redis"]["url"] == "rediss://***@example.com:6380"
