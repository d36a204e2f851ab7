"""The ``rdist`` console script run as a user would: subprocesses, environment, signals."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from rdist import Client

pytestmark = [pytest.mark.cli, pytest.mark.usefixtures("subprocess_pythonpath")]

URL_VARS = ("RDIST_REDIS_URL", "REDIS_URL", "RDIST_CLUSTER")


def square(x: int) -> int:
    return x * x


def rdist_script() -> str:
    """The console script installed next to this interpreter (what a user's shell runs)."""
    candidate = Path(sys.executable).parent / "rdist"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("rdist")
    if found is None:
        pytest.skip("the rdist console script is not installed (pip install -e .)")
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Redis URL or cluster name, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in URL_VARS}
    env.update(extra)
    return env


class Processes:
    """Every subprocess a test starts; all are killed at teardown, whatever happened."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[subprocess.Popen[Any], Path]] = []

    def start(self, *args: str, env: dict[str, str], stdout: Any = None) -> subprocess.Popen[Any]:
        log = self.logdir / f"{len(self.procs)}-{args[0]}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                [rdist_script(), *args],
                env=env,
                stderr=fh,
                stdout=stdout if stdout is not None else fh,
                text=stdout is not None,
                start_new_session=True,
            )
        self.procs.append((proc, log))
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}"
            for _, log in self.procs
        )

    def kill_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: children too
                except ProcessLookupError:
                    pass
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.kill_all()


def terminate_and_check(
    procs: Processes, *running: subprocess.Popen[Any], within: float = 8.0
) -> None:
    """SIGTERM each process; each must exit with code 0 within ``within`` seconds."""
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + within
    for proc in running:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{proc.args[1]} did not exit within {within} s of SIGTERM\n{procs.logs()}")
        assert proc.returncode == 0, f"{proc.args[1]} exited with {proc.returncode}\n{procs.logs()}"


def lines_of(stream: IO[str]) -> queue.Queue[str | None]:
    """Lines of a pipe, read in a thread, so a test can wait for one with a timeout."""
    out: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            out.put(line)
        out.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return out


def wait_for_line(lines: queue.Queue[str | None], pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no line matching {pattern!r} within {timeout} s; got {seen}")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            raise AssertionError(f"output ended without a line matching {pattern!r}; got {seen}")
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match


# -- help and usage -------------------------------------------------------------------------


def test_help_of_every_command_exits_zero() -> None:
    commands = [[], ["scheduler"], ["worker"], ["local"], ["demo"]]
    running = [
        subprocess.Popen(
            [rdist_script(), *cmd, "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        for cmd in commands
    ]
    try:
        outputs = [p.communicate(timeout=30) for p in running]
    finally:
        for p in running:
            if p.poll() is None:
                p.kill()
                p.wait()
    for cmd, proc, (out, err) in zip(commands, running, outputs):
        assert proc.returncode == 0, (cmd, err)
        assert "Usage:" in out, cmd
    assert all(name in outputs[0][0] for name in ("scheduler", "worker", "local", "demo"))
    assert "--redis-url" in outputs[2][0] and "--nthreads" in outputs[2][0]
    assert "--memory-limit" in outputs[2][0] and "--resources" in outputs[2][0]


def test_worker_without_any_redis_url_fails_with_a_usage_error() -> None:
    proc = subprocess.run(
        [rdist_script(), "worker"], capture_output=True, text=True, env=clean_env(), timeout=30
    )

    assert proc.returncode == 2
    assert "no Redis URL" in proc.stderr
    assert "RDIST_REDIS_URL" in proc.stderr and "Traceback" not in proc.stderr


# -- scheduler and workers as separate commands ---------------------------------------------


@pytest.mark.parametrize("url_var", ["RDIST_REDIS_URL", "REDIS_URL"])
def test_scheduler_and_workers_from_the_environment_serve_a_client(
    procs: Processes, redis_url: str, url_var: str
) -> None:
    cluster = f"cli-{uuid.uuid4().hex}"
    env = clean_env(**{url_var: redis_url, "RDIST_CLUSTER": cluster})
    scheduler = procs.start("scheduler", env=env)
    workers = [
        procs.start("worker", "--nthreads", "2", "--name", f"w{i}", env=env) for i in range(2)
    ]

    with Client(redis_url, cluster_name=cluster, timeout=30) as client:
        try:
            client.wait_for_workers(2, timeout=20)
        except TimeoutError:
            pytest.fail(f"workers did not join\n{procs.logs()}")
        info = client.scheduler_info()["workers"]
        assert sorted(w["name"] for w in info.values()) == ["w0", "w1"]
        assert set(client.nthreads().values()) == {2}
        futures = client.map(square, range(200))
        total = client.submit(sum, futures)
        assert total.result(timeout=30) == sum(i * i for i in range(200))

    terminate_and_check(procs, *workers, scheduler)


# -- a whole local cluster in one command ---------------------------------------------------


def test_local_prints_its_url_and_serves_a_client_until_sigterm(procs: Processes) -> None:
    proc = procs.start("local", "--workers", "2", env=clean_env(), stdout=subprocess.PIPE)
    lines = lines_of(proc.stdout)

    match = wait_for_line(lines, r"RDIST_REDIS_URL=(\S+) RDIST_CLUSTER=(\S+)", timeout=30)

    url, cluster = match.group(1), match.group(2)
    assert url.startswith("unix://")  # no URL given: an embedded Redis on a unix socket
    socket_dir = Path(url[len("unix://") :]).parent
    with Client(url, cluster_name=cluster, timeout=30) as client:
        client.wait_for_workers(2, timeout=20)
        assert len(client.scheduler_info()["workers"]) == 2
        assert client.gather(client.map(square, range(50))) == [i * i for i in range(50)]
    terminate_and_check(procs, proc, within=15)
    assert not socket_dir.exists(), "the embedded Redis directory outlived `rdist local`"


def test_demo_runs_and_reports_ok() -> None:
    proc = subprocess.run(
        [rdist_script(), "demo"], capture_output=True, text=True, env=clean_env(), timeout=60
    )

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sum of squares of 0..999 = 332833500" in proc.stdout
    assert "demo finished: OK" in proc.stdout
