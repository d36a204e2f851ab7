"""``python -m bench``: run the workloads on rdist, on dask.distributed and on Ray.

Each system runs in its own subprocess (``python -m bench.side``) that starts
one 2-worker x 1-thread LocalCluster (for Ray: ``ray.init(num_cpus=2)``), runs
every selected workload on it and closes it.  Isolation means a crash, hang or
import error on one side cannot lose the other side's figures; a side that
exceeds ``--timeout`` is killed together with everything it started.  Ray is
optional: by default it runs only if it is installed.
"""

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata

from .side import DEFAULT_WORKLOADS, WORKLOADS

SYSTEMS = ("dask", "rdist", "ray")  # run order
OPTIONAL = ("ray",)  # run by default only if importable; missing is not a failure
#: extra seconds on top of --timeout for Ray, whose start-up alone takes 10-20 s
RAY_STARTUP_ALLOWANCE = 60
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: How rdist's workers reach each other in the run (``--rdist-data-plane``): TCP only, as
#: between hosts (the default, and what dask uses here), or the same-host unix socket.
DATA_PLANE_LABEL = {"tcp": "TCP only", "unix": "unix socket"}

# (key, label, unit, better, getter); "ratio" is always rdist / dask, "ratio_ray"
# rdist / ray.
HIGHER, LOWER = "higher", "lower"


def _rows(args):
    return [
        ("startup", "cluster start (2 workers)", "s", LOWER, lambda r: _get(r, "startup_s")),
        (
            "map",
            "map+gather %d no-op tasks" % args.n_map,
            "tasks/s",
            HIGHER,
            lambda r: _wl(r, "map", "tasks_per_s"),
        ),
        (
            "latency",
            "submit().result() round trip, median",
            "ms",
            LOWER,
            lambda r: _wl(r, "latency", "median_ms"),
        ),
        (
            "latency",
            "submit().result() round trip, p90",
            "ms",
            LOWER,
            lambda r: _wl(r, "latency", "p90_ms"),
        ),
        (
            "chain",
            "chain of %d dependent inc" % args.chain_length,
            "tasks/s",
            HIGHER,
            lambda r: _wl(r, "chain", "tasks_per_s"),
        ),
        (
            "transfer",
            "%g MB array worker0 -> worker1 (rdist: %s)"
            % (args.transfer_mb, DATA_PLANE_LABEL[args.rdist_data_plane]),
            "MB/s",
            HIGHER,
            lambda r: _wl(r, "transfer", "mb_per_s"),
        ),
        (
            "array",
            "(x + x.T).mean(axis=0).sum(), %d^2 in %d^2 chunks"
            % (args.array_size, args.array_chunk),
            "s",
            LOWER,
            lambda r: _wl(r, "array", "seconds"),
        ),
        (
            "many",
            "%d no-op tasks, wall time" % args.n_many,
            "s",
            LOWER,
            lambda r: _wl(r, "many", "seconds"),
        ),
        (
            "many",
            "%d no-op tasks, scheduler+client peak RSS" % args.n_many,
            "MB",
            LOWER,
            lambda r: _wl(r, "many", "scheduler_client_rss_mb"),
        ),
        (
            "many",
            "%d no-op tasks, worker peak RSS (largest)" % args.n_many,
            "MB",
            LOWER,
            lambda r: _wl(r, "many", "worker_rss_mb"),
        ),
        (
            "many",
            "%d no-op tasks, redis peak RSS" % args.n_many,
            "MB",
            LOWER,
            lambda r: _wl(r, "many", "redis_rss_mb"),
        ),
        (
            "transfers",
            "500 x 1 MB arrays worker0 -> worker1",
            "MB/s",
            HIGHER,
            lambda r: _wl(r, "transfers", "mb_per_s"),
        ),
        (
            "shuffle",
            "dataframe shuffle, %d x %d rows (%s)"
            % (args.df_partitions, args.df_rows, "p2p on both: rdist's own exchange"),
            "s",
            LOWER,
            lambda r: _wl(r, "shuffle", "seconds"),
        ),
        (
            "shuffle",
            "dataframe shuffle, worker peak RSS (largest)",
            "MB",
            LOWER,
            lambda r: _wl(r, "shuffle", "worker_peak_mb"),
        ),
        (
            "groupby",
            "groupby-sum + merge, %d x %d rows" % (args.df_partitions, args.df_rows),
            "s",
            LOWER,
            lambda r: _wl(r, "groupby", "seconds"),
        ),
        (
            "rechunk",
            "rechunk %d^2 float64, 1000^2 -> (100, %d) chunks"
            % (args.rechunk_size, args.rechunk_size),
            "s",
            LOWER,
            lambda r: _wl(r, "rechunk", "seconds"),
        ),
        (
            "rechunk",
            "rechunk, worker peak RSS (largest)",
            "MB",
            LOWER,
            lambda r: _wl(r, "rechunk", "worker_peak_mb"),
        ),
        (
            "wide",
            "wide: %d roots x %g MB, pairwise sums" % (args.wide_n, args.wide_mb),
            "s",
            LOWER,
            lambda r: _wl(r, "wide", "seconds"),
        ),
        (
            "wide",
            "wide: worker peak RSS (largest)",
            "MB",
            LOWER,
            lambda r: _wl(r, "wide", "worker_peak_mb"),
        ),
        (
            "wide_array",
            "random((%d,)*2, chunks=1000).sum()" % args.wide_array_size,
            "s",
            LOWER,
            lambda r: _wl(r, "wide_array", "seconds"),
        ),
        (
            "wide_array",
            "random(...).sum(): worker peak RSS (largest)",
            "MB",
            LOWER,
            lambda r: _wl(r, "wide_array", "worker_peak_mb"),
        ),
        (
            "wide_pair",
            "(random(...) - random(...)).sum()",
            "s",
            LOWER,
            lambda r: _wl(r, "wide_pair", "seconds"),
        ),
        (
            "wide_pair",
            "(random - random).sum(): worker peak RSS (largest)",
            "MB",
            LOWER,
            lambda r: _wl(r, "wide_pair", "worker_peak_mb"),
        ),
        ("rss", "worker RSS idle (largest)", "MB", LOWER, lambda r: _wl(r, "rss", "idle_mb")),
        (
            "rss",
            "worker RSS after 100000 no-op tasks (largest)",
            "MB",
            LOWER,
            lambda r: _wl(r, "rss", "after_mb"),
        ),
    ]


def _get(result, field):
    return (result or {}).get(field)


def _wl(result, name, field):
    w = (result or {}).get("workloads", {}).get(name)
    if not w or not w.get("ok"):
        return None
    return w.get(field)


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cores():
    n = os.cpu_count()
    try:
        avail = len(os.sched_getaffinity(0))
    except AttributeError:
        avail = n
    return n, avail


def _group_members(pgid, session=False):
    """(pid, command line) of live processes in process group ``pgid`` (Linux), or with
    ``session=True`` in session ``pgid``: Ray's worker processes get process groups of
    their own but stay in the session the side started."""
    field = 3 if session else 2
    found = []
    try:
        pids = [int(x) for x in os.listdir("/proc") if x.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] == "Z" or int(fields[field]) != pgid:
                continue
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            found.append((pid, cmd[:160]))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _kill_session(sid, sig):
    """Signal the process group ``sid`` and every other process of session ``sid``;
    return whether anything was alive."""
    alive = _kill_group(sid, sig)
    for pid, _ in _group_members(sid, session=True):
        try:
            os.kill(pid, sig)
            alive = True
        except (ProcessLookupError, PermissionError):
            pass
    return alive


def run_side(system, args):
    """Run one system in a subprocess; return its result dict (never raises)."""
    fd, out = tempfile.mkstemp(prefix="bench-%s-" % system, suffix=".json")
    os.close(fd)
    env = dict(os.environ)
    if system == "rdist":  # its workers (and client) inherit it: no unix-socket shortcut
        env["RDIST_UNIX_SOCKETS"] = "0" if args.rdist_data_plane == "tcp" else "1"
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in paths if p != ROOT])
    repeat = (
        {w: args.repeat for w in WORKLOADS}
        if args.repeat
        else {
            "map": 1,
            "latency": 1,
            "chain": 1,
            "transfer": 5,
            "array": 3,
            "many": 1,
            "transfers": 3,
            "rss": 1,
            "shuffle": 2,
            "groupby": 2,
            "rechunk": 2,
            "wide": 1,
            "wide_array": 1,
            "wide_pair": 1,
        }
    )
    cmd = [
        sys.executable,
        "-m",
        "bench.side",
        "--system",
        system,
        "--out",
        out,
        "--workloads",
        ",".join(args.workloads),
        "--n-map",
        str(args.n_map),
        "--latency-rounds",
        str(args.latency_rounds),
        "--latency-warmup",
        str(args.latency_warmup),
        "--chain-length",
        str(args.chain_length),
        "--transfer-mb",
        str(args.transfer_mb),
        "--transfer-raw",
        args.rdist_data_plane if system == "rdist" else "none",
        "--array-size",
        str(args.array_size),
        "--array-chunk",
        str(args.array_chunk),
        "--n-many",
        str(args.n_many),
        "--df-partitions",
        str(args.df_partitions),
        "--df-rows",
        str(args.df_rows),
        "--rechunk-size",
        str(args.rechunk_size),
        "--wide-n",
        str(args.wide_n),
        "--wide-mb",
        str(args.wide_mb),
        "--wide-array-size",
        str(args.wide_array_size),
    ]
    for w in WORKLOADS:
        cmd += ["--repeat-" + w, str(repeat[w])]

    timeout = args.timeout + (RAY_STARTUP_ALLOWANCE if system == "ray" else 0)
    print("== %s: starting (timeout %d s)" % (system, timeout), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, start_new_session=True, stdin=subprocess.DEVNULL
    )
    note = None
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        note = "timed out after %d s; killed" % timeout
        try:
            with open(out) as f:
                note += " (stage: %s)" % json.load(f).get("stage", "?")
        except (OSError, ValueError):
            pass
        _kill_session(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _kill_session(proc.pid, signal.SIGKILL)
            proc.wait()
        rc = proc.returncode
    except KeyboardInterrupt:
        _kill_session(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    wall = time.perf_counter() - t0

    # Anything the side left running in its process group or its session (stray
    # workers, servers; Ray's workers sit in groups of their own) is cleaned up
    # here and reported.
    # A short grace period lets helpers such as multiprocessing's resource
    # tracker exit on their own.
    deadline = time.monotonic() + 5
    while _kill_session(proc.pid, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _kill_session(proc.pid, 0):
        left = _group_members(proc.pid, session=True)
        extra = "left %d process(es) running after exit, terminated: %s" % (
            len(left),
            "; ".join("%d %s" % x for x in left) or "?",
        )
        note = "%s; %s" % (note, extra) if note else extra
        _kill_session(proc.pid, signal.SIGTERM)
        time.sleep(2)
        _kill_session(proc.pid, signal.SIGKILL)

    try:
        with open(out) as f:
            result = json.load(f)
    except (OSError, ValueError) as e:
        result = {
            "system": system,
            "status": "error",
            "workloads": {},
            "error": "no readable results (%s)" % e,
        }
    finally:
        for p in (out, out + ".tmp"):
            try:
                os.unlink(p)
            except OSError:
                pass

    # Ray's session directory (sockets, logs), should the side have been killed.
    tmp = result.get("ray_temp_dir")
    if (
        tmp
        and os.path.basename(tmp).startswith("bench-ray-")
        and os.path.dirname(tmp) == tempfile.gettempdir()
    ):
        shutil.rmtree(tmp, ignore_errors=True)

    result["returncode"] = rc
    result["wall_s"] = wall
    if note:
        result["note"] = note
    if rc == 0 and result.get("status") == "unavailable":
        pass  # not installed: the caller decides whether that is a failure
    elif rc != 0 or result.get("status") != "ok":
        result["status"] = "error"
        if not result.get("error"):
            failed = [n for n, w in result.get("workloads", {}).items() if not w.get("ok")]
            missing = [
                n
                for n in args.workloads
                if n not in result.get("workloads", {}) and n not in result.get("skipped", {})
            ]
            bits = []
            if failed:
                bits.append("failed workloads: " + ", ".join(failed))
            if missing:
                bits.append("workloads not run: " + ", ".join(missing))
            if note:
                bits.append(note)
            if rc not in (0, None) and not bits:
                bits.append("exit code %s" % rc)
            result["error"] = "; ".join(bits) or "exit code %s" % rc
    print(
        "== %s: %s in %.1f s%s" % (system, result["status"], wall, " (%s)" % note if note else ""),
        flush=True,
    )
    return result


def _fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return "%.0f" % v
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.3f" % v


def build_table(args, results):
    rows = []
    for key, label, unit, better, get in _rows(args):
        if key != "startup" and key not in args.workloads:
            continue
        r = get(results.get("rdist"))
        d = get(results.get("dask"))
        ratio = r / d if (r is not None and d) else None
        y = get(results.get("ray"))
        # A Ray figure that measures something else (transfer: shared memory) is shown
        # marked, without a ratio.
        w = (results.get("ray") or {}).get("workloads", {}).get(key) or {}
        comparable = w.get("comparable", True)
        ratio_ray = r / y if (r is not None and y and comparable) else None
        rows.append(
            {
                "workload": label,
                "key": key,
                "unit": unit,
                "better": better,
                "rdist": r,
                "dask": d,
                "ratio": ratio,
                "ray": y,
                "ratio_ray": ratio_ray,
                "ray_comparable": comparable,
                "ray_note": None if comparable else w.get("note"),
            }
        )
    return rows


def print_table(rows):
    head = (
        "workload",
        "unit",
        "better",
        "rdist",
        "dask",
        "ratio rdist/dask",
        "ray",
        "ratio rdist/ray",
    )
    body = [
        (
            x["workload"],
            x["unit"],
            x["better"] + " is better",
            _fmt(x["rdist"]),
            _fmt(x["dask"]),
            "-" if x["ratio"] is None else "%.2fx" % x["ratio"],
            _fmt(x["ray"]) + ("" if x["ray_comparable"] or x["ray"] is None else " *"),
            "-" if x["ratio_ray"] is None else "%.2fx" % x["ratio_ray"],
        )
        for x in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    align = ["<", "<", "<", ">", ">", ">", ">", ">"]

    def line(cells):
        return "  ".join("%s" % format(c, a + str(w)) for c, a, w in zip(cells, align, widths))

    print(line(head))
    print("  ".join("-" * w for w in widths))
    for b in body:
        print(line(b))
    for x in rows:
        if not x["ray_comparable"] and x["ray"] is not None:
            print("* ray, %s: not comparable, no ratio: %s" % (x["key"], x["ray_note"]))


def transfer_vs_raw(ours, raw, kind):
    """rdist's 200 MB transfer beside the raw socket of the same kind, wall and CPU."""
    line = "transfer, %s: rdist %.0f MB/s (median %.0f), raw socket %.0f MB/s (median %.0f)" % (
        DATA_PLANE_LABEL[kind],
        ours["mb_per_s"],
        ours["median_mb_per_s"],
        raw["mb_per_s"],
        raw["median_mb_per_s"],
    )
    line += ": %.2fx" % (ours["mb_per_s"] / raw["mb_per_s"])
    if ours.get("paired_ratio") is not None:
        line += (
            "\n  paired with a raw %s socket timed right before each transfer: median ratio "
            "%.2fx" % (kind, ours["paired_ratio"])
        )
    if ours.get("median_sender_cpu_s") is not None and raw.get("median_sender_cpu_s"):
        line += (
            "\n  CPU per transfer (medians): rdist sender %.0f ms, receiver %.0f ms; "
            "raw sender %.0f ms, receiver %.0f ms"
            % tuple(
                1e3 * x
                for x in (
                    ours["median_sender_cpu_s"],
                    ours["median_receiver_cpu_s"],
                    raw["median_sender_cpu_s"],
                    raw["median_receiver_cpu_s"],
                )
            )
        )
    return line


def targets(rows, with_ray=False):
    """The project goals, evaluated on the rdist/dask ratios and, ``with_ray``, on the
    rdist/ray ratios (issue 5)."""

    def find(key, suffix=""):
        for x in rows:
            if x["key"] == key and x["workload"].endswith(suffix):
                return x
        return None

    specs = [
        (row, op, bound, text, "dask")
        for row, op, bound, text in [
            (find("map"), ">=", 15.0, "rdist map throughput >= 15x dask"),
            (
                find("latency", "median"),
                "<=",
                0.1,
                "rdist round-trip latency (median) <= 0.1x dask",
            ),
            (find("chain"), ">=", 6.0, "rdist chain throughput >= 6x dask"),
            (find("array"), "<=", 0.5, "rdist dask.array wall time <= 0.5x dask"),
            (find("many", "wall time"), "<", 1.0, "rdist 100k tasks faster than dask"),
            (
                find("many", "scheduler+client peak RSS"),
                "<",
                1.0,
                "rdist scheduler+client RSS below dask's",
            ),
            (find("many", "worker peak RSS (largest)"), "<", 1.0, "rdist worker RSS below dask's"),
            (find("transfer"), ">=", 1.2, "rdist 200 MB transfer >= 1.2x dask"),
            (find("transfers"), ">=", 1.0, "rdist 500 x 1 MB transfers >= dask"),
        ]
    ]
    if with_ray:
        specs += [
            (find("map"), ">=", 5.0, "rdist map throughput >= 5x ray", "ray"),
            (
                find("latency", "median"),
                "<=",
                0.5,
                "rdist round-trip latency (median) <= 0.5x ray",
                "ray",
            ),
        ]
    out = []
    for row, op, bound, text, vs in specs:
        if row is None:  # workload not selected
            continue
        ratio = row["ratio" if vs == "dask" else "ratio_ray"]
        met = None
        if ratio is not None:
            met = {">=": ratio >= bound, "<=": ratio <= bound, "<": ratio < bound}[op]
        out.append({"target": text, "ratio": ratio, "met": met, "vs": vs})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark rdist against dask.distributed and, if installed, Ray "
        "(2 workers x 1 thread each).",
    )
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--only", choices=SYSTEMS, help="run only this system")
    sel.add_argument(
        "--systems",
        metavar="LIST",
        help="comma-separated subset of: %s (default: all; ray only if "
        "installed)" % ",".join(SYSTEMS),
    )
    p.add_argument(
        "--workloads",
        default=",".join(DEFAULT_WORKLOADS),
        help="comma-separated subset of: %s (default: %s)"
        % (",".join(WORKLOADS), ",".join(DEFAULT_WORKLOADS)),
    )
    p.add_argument("--n-map", type=int, default=10_000, help="tasks in the map workload")
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="repeats per workload, best one reported "
        "(default: 1 for map/latency/chain, 3 for transfer)",
    )
    p.add_argument("--latency-rounds", type=int, default=300)
    p.add_argument("--latency-warmup", type=int, default=20)
    p.add_argument("--chain-length", type=int, default=1000)
    p.add_argument("--transfer-mb", type=float, default=200.0)
    p.add_argument(
        "--rdist-data-plane",
        choices=sorted(DATA_PLANE_LABEL),
        default="tcp",
        help="how rdist's workers on this host reach each other: tcp (default: TCP only, "
        "tagged messages, as between hosts) or unix (the same-host unix socket)",
    )
    p.add_argument(
        "--array-size",
        type=int,
        default=4000,
        help="side of the square dask.array of the array workload",
    )
    p.add_argument("--array-chunk", type=int, default=250)
    p.add_argument("--n-many", type=int, default=100_000, help="tasks in the many workload")
    p.add_argument(
        "--df-partitions", type=int, default=100, help="partitions of the shuffle/groupby frame"
    )
    p.add_argument(
        "--df-rows", type=int, default=400_000, help="rows per partition (24 bytes a row)"
    )
    p.add_argument(
        "--rechunk-size", type=int, default=10_000, help="side of the rechunked float64 array"
    )
    p.add_argument("--wide-n", type=int, default=2000, help="root tasks of the wide workload")
    p.add_argument("--wide-mb", type=float, default=10.0, help="MB each wide root returns")
    p.add_argument(
        "--wide-array-size", type=int, default=20_000, help="side of the wide_array workload"
    )
    p.add_argument(
        "--timeout",
        type=int,
        default=None,
        help="seconds allowed per system before it is killed "
        "(default 150; 900 with the many workload; ray gets %d s more "
        "for its start-up)" % RAY_STARTUP_ALLOWANCE,
    )
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    args = p.parse_args(argv)

    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    bad = [w for w in args.workloads if w not in WORKLOADS]
    if bad or not args.workloads:
        p.error("unknown workload(s) %s; choose from %s" % (bad, ",".join(WORKLOADS)))
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.timeout is None:
        heavy = {"many", "rss", "shuffle", "groupby", "rechunk", "wide", "wide_array", "wide_pair"}
        args.timeout = 900 if heavy & set(args.workloads) else 150
    if args.only:
        explicit = [args.only]
    elif args.systems:
        explicit = [x.strip() for x in args.systems.split(",") if x.strip()]
        bad = [x for x in explicit if x not in SYSTEMS]
        if bad or not explicit:
            p.error("unknown system(s) %s; choose from %s" % (bad, ",".join(SYSTEMS)))
    else:
        explicit = []
    systems = [x for x in SYSTEMS if x in explicit] if explicit else list(SYSTEMS)
    unavailable = {}  # optional systems not run: name -> reason
    for x in OPTIONAL:
        if x in systems and x not in explicit and importlib.util.find_spec(x) is None:
            systems.remove(x)
            unavailable[x] = "not installed"

    ncpu, navail = _cores()
    meta = {
        "cores": ncpu,
        "cores_available": navail,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "dask": _version("dask"),
        "distributed": _version("distributed"),
        "numpy": _version("numpy"),
        "ray": _version("ray"),
        "workers": 2,
        "threads_per_worker": 1,
        "systems": systems,
        "workloads": args.workloads,
        "n_map": args.n_map,
        "latency_rounds": args.latency_rounds,
        "latency_warmup": args.latency_warmup,
        "chain_length": args.chain_length,
        "transfer_mb": args.transfer_mb,
        "rdist_data_plane": args.rdist_data_plane,
        "repeat": args.repeat,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print("rdist vs dask.distributed vs ray benchmark")
    print(
        "cores: %d (%d available to this process)   python %s   dask %s   "
        "distributed %s   numpy %s   ray %s"
        % (
            ncpu,
            navail,
            meta["python"],
            meta["dask"],
            meta["distributed"],
            meta["numpy"],
            meta["ray"],
        )
    )
    print(
        "cluster: 2 worker processes x 1 thread, per system (ray: num_cpus=2)   "
        "workloads: %s" % ",".join(args.workloads),
        flush=True,
    )
    for x, why in unavailable.items():
        print("%s: %s" % (x, why), flush=True)

    raw = {}
    if "transfer" in args.workloads:  # the ceiling, measured on a quiet machine first
        from . import raw as rawsock

        for kind in ("tcp", "unix"):
            raw[kind] = rawsock.measure(args.transfer_mb, kind=kind)
        print(
            "raw socket loopback, %g MB: tcp %.0f MB/s, unix %.0f MB/s (best of 5)"
            % (args.transfer_mb, raw["tcp"]["mb_per_s"], raw["unix"]["mb_per_s"]),
            flush=True,
        )
        print("rdist's data plane in this run: %s" % DATA_PLANE_LABEL[args.rdist_data_plane])

    results = {}
    for s in systems:
        results[s] = run_side(s, args)
        if results[s].get("status") == "unavailable":
            print("%s: %s" % (s, results[s].get("error")), flush=True)
            if s not in explicit:  # optional and not asked for: not a failure
                unavailable[s] = results.pop(s).get("error")
    meta["unavailable"] = unavailable
    if "ray" in results and results["ray"].get("versions", {}).get("ray"):
        meta["ray"] = results["ray"]["versions"]["ray"]

    if "rdist" in results and results["rdist"].get("versions", {}).get("rdist"):
        meta["rdist"] = results["rdist"]["versions"]["rdist"]

    rows = build_table(args, results)
    tg = targets(rows, with_ray="ray" in results)
    ours = _wl(results.get("rdist"), "transfer", "mb_per_s")
    kind = args.rdist_data_plane
    if raw and ours:
        ratio = ours / raw[kind]["mb_per_s"]
        tg.append(
            {
                "target": "rdist 200 MB transfer >= 90%% of a raw %s socket" % kind.upper(),
                "ratio": ratio,
                "met": ratio >= 0.9,
                "raw": raw,
            }
        )
        paired = results["rdist"]["workloads"]["transfer"].get("paired_ratio")
        if paired is not None:
            tg.append(
                {
                    "target": "the same, paired with a raw socket timed before each",
                    "ratio": paired,
                    "met": paired >= 0.9,
                }
            )
    print()
    print_table(rows)
    print()
    if raw and ours:
        print(transfer_vs_raw(results["rdist"]["workloads"]["transfer"], raw[kind], kind))
        print()
    for t in tg:
        if t["met"] is None:
            verdict = "UNKNOWN (need both rdist and %s figures)" % t.get("vs", "dask")
        else:
            verdict = "%s (ratio %.2fx)" % ("MET" if t["met"] else "NOT MET", t["ratio"])
        print("target: %-48s %s" % (t["target"] + ":", verdict))

    failed = [s for s in results if results[s].get("status") != "ok"]
    for s in results:
        if s not in failed and results[s].get("note"):
            print("\nWARNING [%s]: %s" % (s, results[s]["note"]))
    for s in failed:
        print("\nERROR [%s]: %s" % (s, results[s].get("error")))
        tb = results[s].get("traceback")
        if tb:
            print(tb.rstrip())
        for name, w in results[s].get("workloads", {}).items():
            if not w.get("ok"):
                print("  %s: %s" % (name, w.get("error")))
                if w.get("traceback"):
                    print("    " + w["traceback"].rstrip().replace("\n", "\n    "))

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "table": rows, "targets": tg, "results": results}, f, indent=2)
        print("\nresults written to %s" % args.json)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
