"""A headless Chromium driven over the DevTools protocol, for the dashboard's browser tests.

No browser-automation dependency: Debian's ``chromium`` started with a fresh profile, one
page target, and the few DevTools commands the tests need (navigate, evaluate, screenshot),
spoken over the WebSocket client that python-engineio already depends on.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import simple_websocket

#: Flags without which Chromium tries to reach Google's services, which this network refuses.
QUIET_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless browser with one page; ``with Chromium() as page: page.goto(url)``."""

    def __init__(self, executable: str, width: int = 1400, height: int = 1000) -> None:
        self.profile = tempfile.mkdtemp(prefix="rdist-chromium-")
        self.process = subprocess.Popen(
            [
                executable,
                *QUIET_FLAGS,
                f"--user-data-dir={self.profile}",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._next_id = 0
        try:
            port = self._devtools_port(timeout=20)
            self.ws = simple_websocket.Client.connect(
                self._page_socket(port), max_message_size=64 << 20
            )
            self.call("Page.enable")
            self.call("Runtime.enable")
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, timeout: float) -> int:
        marker = Path(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited at start with code {self.process.returncode}")
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.05)  # start-up only: the browser writes the file once it listens
        raise BrowserError(f"chromium did not open its DevTools port within {timeout} s")

    def _page_socket(self, port: int) -> str:
        for _ in range(100):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.05)
        raise BrowserError("chromium has no page target")

    # -- DevTools protocol ---------------------------------------------------------------
    def call(self, method: str, timeout: float = 20, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        ident = self._next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            raw = self.ws.receive(timeout=max(0.01, left))
            if raw is None:
                if left <= 0:
                    raise BrowserError(f"{method} got no answer within {timeout} s")
                continue
            message = json.loads(raw)
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str, timeout: float = 20) -> Any:
        """The value of a JavaScript expression (promises awaited); page errors raise."""
        result = self.call(
            "Runtime.evaluate",
            timeout=timeout,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"javascript error: {text}")
        return result.get("result", {}).get("value")

    def goto(self, url: str, timeout: float = 20) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(
            "document.readyState === 'complete' && location.href.startsWith("
            + json.dumps(url.split("?")[0])
            + ")",
            timeout,
        )

    def wait_for(self, expression: str, timeout: float = 20, interval: float = 0.1) -> Any:
        """Poll a JavaScript condition until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(expression)
            except BrowserError as exc:
                last = str(exc)
            else:
                if last:
                    return last
            time.sleep(interval)
        raise BrowserError(
            f"timed out after {timeout} s waiting for {expression!r} (last: {last!r})"
        )

    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(data))
        return target

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
