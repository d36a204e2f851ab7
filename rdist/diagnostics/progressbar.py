"""``progress``: a live progress bar of futures (or persisted collections), as dask's.

In a terminal it draws text bars -- one line per task group with ``multi`` -- and blocks
until every future is done; in a Jupyter kernel with ipywidgets it shows a widget and
returns at once (the widget keeps updating from a thread). Completion comes from the
futures' done callbacks; the bar is redrawn every ``interval`` seconds for its clock.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from rdist.client.future import Future, futures_of
from rdist.protocol.groups import key_split

__all__ = ["TextProgress", "WidgetProgress", "in_notebook", "progress"]

BAR_WIDTH = 40
#: A name column wider than this is cut (with "…") so that bars line up.
NAME_WIDTH = 30


def progress(
    *futures: Any,
    notebook: bool | None = None,
    multi: bool = True,
    complete: bool = True,
    interval: float = 0.1,
    file: IO[str] | None = None,
    **kwargs: Any,
) -> Any:
    """Track ``futures`` (futures, lists of them, or persisted dask collections).

    ``notebook``: None detects a Jupyter kernel (with ipywidgets); ``multi``: a bar per
    task group; ``complete``: keep the bars of finished groups (else they disappear).
    Blocks until done in a terminal (returns None); returns the widget bar in a notebook.
    """
    found = _futures(futures)
    if notebook is None:
        notebook = in_notebook()
    if notebook:
        bar = WidgetProgress(found, multi, complete, interval)
        bar.start()
        return bar
    TextProgress(found, multi, complete, interval, file).run()
    return None


def _futures(things: Iterable[Any]) -> list[Future]:
    found = list(dict.fromkeys(futures_of(list(things))))
    if not found and things:
        raise ValueError(
            "progress() needs futures or persisted collections (call .persist() first): "
            "what it was given holds no futures"
        )
    return found


def in_notebook() -> bool:
    """Whether we run in a Jupyter kernel that can show ipywidgets."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    return "ipywidgets" in sys.modules or importlib.util.find_spec("ipywidgets") is not None


@dataclass
class GroupCount:
    """How one task group stands."""

    name: str
    total: int = 0
    done: int = 0
    erred: int = 0

    @property
    def finished(self) -> bool:
        return self.done + self.erred >= self.total


class Tracker:
    """Counts finished futures per group (from their done callbacks) and wakes a waiter."""

    def __init__(self, futures: list[Future], multi: bool) -> None:
        self.start = time.monotonic()
        self.multi = multi
        self.changed = threading.Event()
        self._lock = threading.Lock()
        self.groups: dict[str, GroupCount] = {}
        self.all = GroupCount("", len(futures))
        for future in futures:
            name = key_split(str(future.key)) if multi else ""
            self.groups.setdefault(name, GroupCount(name)).total += 1
        for future in futures:
            future.add_done_callback(self._done)

    def _done(self, future: Future) -> None:
        name = key_split(str(future.key)) if self.multi else ""
        failed = future.status in ("error", "cancelled")
        with self._lock:
            group = self.groups[name]
            for count in (group, self.all):
                if failed:
                    count.erred += 1
                else:
                    count.done += 1
        self.changed.set()

    def snapshot(self) -> tuple[list[GroupCount], GroupCount]:
        with self._lock:
            groups = [GroupCount(g.name, g.total, g.done, g.erred) for g in self.groups.values()]
            whole = GroupCount("", self.all.total, self.all.done, self.all.erred)
        return groups, whole

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start


def bar_line(count: GroupCount, elapsed: float, width: int = BAR_WIDTH) -> str:
    """``[#####     ] | 50% Completed |  1.2s`` (dask's text bar), after the group's name."""
    share = (count.done + count.erred) / count.total if count.total else 1.0
    filled = int(round(width * share))
    text = f"[{'#' * filled}{' ' * (width - filled)}] | {share * 100:3.0f}% Completed | "
    text += f"{count.done + count.erred}/{count.total}"
    if count.erred:
        text += f" ({count.erred} erred)"
    text += f" | {elapsed:5.1f}s"
    if count.name:
        name = count.name if len(count.name) <= NAME_WIDTH else count.name[: NAME_WIDTH - 1] + "…"
        text = f"{name:<{NAME_WIDTH}} {text}"
    return text


class TextProgress:
    """Text bars on a stream (stdout by default); redrawn in place on a terminal."""

    def __init__(
        self,
        futures: list[Future],
        multi: bool = True,
        complete: bool = True,
        interval: float = 0.1,
        file: IO[str] | None = None,
    ) -> None:
        self.tracker = Tracker(futures, multi)
        self.multi = multi
        self.complete = complete
        self.interval = interval
        self.file = file if file is not None else sys.stdout
        self._drawn = 0  #: lines drawn last time (to move back over them)
        self._live = bool(getattr(self.file, "isatty", lambda: False)())

    def lines(self) -> list[str]:
        groups, whole = self.tracker.snapshot()
        elapsed = self.tracker.elapsed
        if not self.multi:
            return [bar_line(whole, elapsed)]
        shown = [g for g in groups if self.complete or not g.finished]
        return [bar_line(g, elapsed) for g in shown]

    def run(self) -> None:
        tracker = self.tracker
        while True:
            _, whole = tracker.snapshot()
            if whole.finished:
                break
            if self._live:
                self.draw()
            tracker.changed.wait(self.interval)
            tracker.changed.clear()
        self.draw(final=True)

    def draw(self, final: bool = False) -> None:
        lines = self.lines()
        out = self.file
        if self._live and self._drawn:
            out.write(f"\x1b[{self._drawn}F")  # back to the first line drawn last time
            lines += [""] * (self._drawn - len(lines))  # blank the bars of hidden groups
        for line in lines:
            out.write(("\x1b[2K" if self._live else "") + line + "\n")
        self._drawn = len(lines)
        if final and not self._live and not lines:
            out.write("\n")
        out.flush()


class WidgetProgress:
    """ipywidgets bars (one per group with ``multi``), updated from a thread."""

    def __init__(
        self,
        futures: list[Future],
        multi: bool = True,
        complete: bool = True,
        interval: float = 0.1,
    ) -> None:
        ipywidgets: Any = importlib.import_module("ipywidgets")  # optional: notebooks only
        self.tracker = Tracker(futures, multi)
        self.complete = complete
        self.interval = interval
        self.multi = multi
        self._widgets = ipywidgets
        self.bars: dict[str, Any] = {}
        self.labels: dict[str, Any] = {}
        rows = []
        groups, whole = self.tracker.snapshot()
        for count in groups if multi else [whole]:
            bar = ipywidgets.IntProgress(min=0, max=max(1, count.total), value=0)
            label = ipywidgets.HTML(value="")
            self.bars[count.name], self.labels[count.name] = bar, label
            rows.append(
                ipywidgets.HBox(
                    [ipywidgets.HTML(value=f"<b>{html.escape(count.name)}</b>"), bar, label]
                )
            )
        self.widget = ipywidgets.VBox(rows)
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        display(self.widget)
        self.update()
        self.thread = threading.Thread(target=self._follow, name="rdist-progress", daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        tracker = self.tracker
        while not tracker.snapshot()[1].finished:
            tracker.changed.wait(self.interval)
            tracker.changed.clear()
            self.update()
        self.update()

    def update(self) -> None:
        groups, whole = self.tracker.snapshot()
        elapsed = self.tracker.elapsed
        for count in groups if self.multi else [whole]:
            bar, label = self.bars[count.name], self.labels[count.name]
            bar.value = count.done + count.erred
            if count.erred:
                bar.bar_style = "danger"
            elif count.finished:
                bar.bar_style = "success"
            label.value = f"{count.done + count.erred} / {count.total} ({elapsed:.1f}s)"
            if count.finished and not self.complete:
                bar.layout.visibility = "hidden"

    def _ipython_display_(self) -> None:
        display(self.widget)


def display(widget: Any) -> None:
    """IPython's display (a name of its own so that tests can stand in for it)."""
    show: Any = importlib.import_module("IPython.display").display
    show(widget)
