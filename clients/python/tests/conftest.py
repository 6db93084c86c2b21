"""Fixtures: a real Signalbox gateway (the binary in $SIGNALBOX_BIN) and client tokens."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
JWT_SECRET = "pyclient-test-secret-0123456789abcdef"
API_KEY = "pyclient-test-api-key-1"


def signalbox_bin() -> str:
    path = os.environ.get("SIGNALBOX_BIN") or str(REPO / "target" / "debug" / "signalbox")
    if not Path(path).is_file():
        pytest.fail(
            f"the signalbox binary is missing at {path}; build it with "
            "`cargo build --bin signalbox` or set SIGNALBOX_BIN",
            pytrace=False,
        )
    return path


def gateway_env(broker: Optional[str] = None) -> dict:
    env = dict(os.environ)
    env.pop("SIGNALBOX_CONFIG", None)
    env.pop("SIGNALBOX_BROKER", None)
    if broker is not None:
        env["SIGNALBOX_BROKER"] = broker
    env["SIGNALBOX_JWT_SECRET"] = JWT_SECRET
    env["SIGNALBOX_API_KEYS"] = API_KEY
    env.setdefault("RUST_LOG", "warn")
    return env


class Gateway:
    """One `signalbox serve` process; can be stopped and started again on the same port."""

    def __init__(self, broker: Optional[str] = None) -> None:
        self.bin = signalbox_bin()
        self.broker = broker
        self.proc: Optional[subprocess.Popen] = None
        self.addr: Optional[str] = None
        self._lines: List[str] = []

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.addr}/ws"

    def start(self, listen: str = "127.0.0.1:0", timeout: float = 15.0) -> "Gateway":
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--listen", listen],
            env=gateway_env(self.broker),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        found = threading.Event()

        def read(proc: subprocess.Popen) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:  # keep draining so the gateway never blocks on stdout
                if line.startswith("signalbox listening on ") and not found.is_set():
                    self.addr = line.split("signalbox listening on ", 1)[1].strip()
                    found.set()

        threading.Thread(target=read, args=(self.proc,), daemon=True).start()
        if not found.wait(timeout):
            self.stop()
            raise RuntimeError(f"the gateway did not print its address within {timeout} s")
        return self

    def stop(self) -> None:
        """Kill the process at once (no graceful drain) and wait until its port is free."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart_later(self, delay: float) -> threading.Thread:
        """Start the gateway again on the same address after `delay` seconds, in a thread."""
        addr = self.addr
        assert addr is not None

        def run() -> None:
            time.sleep(delay)
            self.start(listen=addr)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def token(self, sub: str, topics: str = "job:*") -> str:
        out = subprocess.run(
            [self.bin, "token", "--sub", sub, "--topics", topics],
            env=gateway_env(),
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    """One gateway shared by the tests that do not stop it."""
    gw = Gateway().start()
    yield gw
    gw.stop()


@pytest.fixture
def own_gateway() -> Iterator[Gateway]:
    """A gateway of the test's own, which the test may stop and restart."""
    gw = Gateway().start()
    yield gw
    gw.stop()


class Redis:
    """A throwaway redis-server on a free loopback port, which a test may kill and restart."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is missing (the broker-unavailable retry tests need it); "
                "run: apt-get install -y redis-server",
                pytrace=False,
            )
        self.bin = binary
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> "Redis":
        self.proc = subprocess.Popen(
            [
                self.bin,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart_later(self, delay: float) -> threading.Thread:
        def run() -> None:
            time.sleep(delay)
            self.start()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


@pytest.fixture
def redis_gateway() -> Iterator["tuple[Redis, Gateway]"]:
    """A gateway on the Redis broker, and its Redis (which the test may stop)."""
    redis = Redis().start()
    gw = Gateway(broker=redis.url)
    try:
        gw.start()
        yield redis, gw
    finally:
        gw.stop()
        redis.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_counter = [0]


def unique(prefix: str = "job") -> str:
    """A topic no other test uses: `job:t<pid>_<n>_<ms>`."""
    _counter[0] += 1
    return f"{prefix}:t{os.getpid()}_{_counter[0]}_{int(time.time() * 1000) % 10**8}"
