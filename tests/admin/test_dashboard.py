"""The admin dashboard in headless Chromium (Selenium), against a real two-node cluster.

Two gateways share a real redis-server; native WebSocket clients (Python `websockets`) and
a Socket.IO client (the real `socket.io-client`, through tests/socketio/driver.js) connect
to both. The test logs in, checks the overview counts them, opens a topic and sees a
published event arrive live, disconnects a client from the UI and sees it closed, and uses
the publish console. It writes a screenshot of each page to $SCREENSHOT_DIR (default
target/dashboard-screenshots); `SCREENSHOT_DIR=docs/img/dashboard` refreshes the ones
docs/dashboard.md shows.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "dashboard-test-password"
API_KEY = "dashboard-test-api-key"
JWT_SECRET = "dashboard-test-jwt-secret-0123456789"
SHOTS = Path(os.environ.get("SCREENSHOT_DIR") or REPO / "target" / "dashboard-screenshots")
if not SHOTS.is_absolute():
    SHOTS = REPO / SHOTS


def need(tool: str, install: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is missing; install it with: {install}", pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary() -> str:
    path = Path(os.environ.get("SIGNALBOX_BIN") or REPO / "target" / "debug" / "signalbox")
    if not path.is_absolute():
        path = REPO / path
    if not path.is_file():
        pytest.fail(f"the signalbox binary is missing at {path}; run `cargo build --bin signalbox`", pytrace=False)
    return str(path)


def token(sub: str) -> str:
    out = subprocess.run(
        [binary(), "token", "--sub", sub, "--ttl", "1h", "--topics", "job:*,lobby:*"],
        env={**os.environ, "SIGNALBOX_JWT_SECRET": JWT_SECRET},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


class Node:
    """One gateway process on a free port."""

    def __init__(self, redis_url: str, config: Path) -> None:
        env = {
            **os.environ,
            "SIGNALBOX_BROKER": redis_url,
            "SIGNALBOX_JWT_SECRET": JWT_SECRET,
            "SIGNALBOX_API_KEYS": API_KEY,
            "SIGNALBOX_ADMIN_PASSWORD": PASSWORD,
            "SIGNALBOX_CONFIG": str(config),
            "SIGNALBOX_LOG": "warn",
        }
        self.proc = subprocess.Popen(
            [binary(), "serve", "--listen", "127.0.0.1:0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("signalbox listening on "), line
        self.addr = line.split()[-1]
        threading.Thread(target=lambda: self.proc.stdout.read(), daemon=True).start()

    @property
    def http(self) -> str:
        return f"http://{self.addr}"

    def publish(self, topic: str, event: dict) -> dict:
        request = urllib.request.Request(
            f"{self.http}/api/publish",
            data=json.dumps({"topic": topic, "event": event}).encode(),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class NativeClients:
    """Native WebSocket clients on their own event loop; each records its close code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.closed: dict[str, int | None] = {}
        self.ids: dict[str, str] = {}

    def open(self, url: str, user: str, topic: str) -> str:
        return asyncio.run_coroutine_threadsafe(self._open(url, user, topic), self.loop).result(15)

    async def _open(self, url: str, user: str, topic: str) -> str:
        import websockets

        ws = await websockets.connect(f"{url}?token={token(user)}&topic={topic}")
        hello = json.loads(await ws.recv())
        connection_id = hello["connectionId"]
        self.ids[user] = connection_id

        async def drain() -> None:
            try:
                async for _ in ws:
                    pass
            finally:
                self.closed[connection_id] = ws.close_code

        self.loop.create_task(drain())
        return connection_id


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    need("redis-server", "apt-get install -y redis-server")
    need("node", "apt-get install -y nodejs npm")
    need("chromedriver", "apt-get install -y chromium-driver")
    work = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
        assert time.time() < deadline, "redis-server did not start"
        time.sleep(0.05)
    config = work / "signalbox.toml"
    dead = free_port()
    config.write_text(
        f"""[namespaces.lobby]
subscribe = "authenticated"
join_leave = true

[sinks.pipeline]
kind = "http"
url = "http://127.0.0.1:{dead}/hook"

[[routes]]
action = "cancel_job"
sink = "pipeline"
"""
    )
    nodes = [Node(f"redis://127.0.0.1:{port}", config), Node(f"redis://127.0.0.1:{port}", config)]
    clients = NativeClients()
    clients.open(f"ws://{nodes[0].addr}/ws", "alice", "job:demo")
    clients.open(f"ws://{nodes[1].addr}/ws", "bob", "job:demo")
    clients.open(f"ws://{nodes[1].addr}/ws", "carol", "lobby:main")
    # A Socket.IO client (the real socket.io-client) on node A.
    driver = subprocess.Popen(
        ["node", str(REPO / "tests" / "socketio" / "driver.js")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO / "tests" / "socketio",
    )
    assert driver.stdin is not None and driver.stdout is not None
    driver.stdin.write(
        json.dumps({"cmd": "connect", "url": f"http://{nodes[0].addr}", "opts": {"auth": {"token": token("dave")}, "transports": ["websocket"]}})
        + "\n"
    )
    driver.stdin.flush()
    while True:
        report = json.loads(driver.stdout.readline())
        assert report.get("kind") != "connect_error", report
        if report.get("kind") == "connect":
            break
    yield {"nodes": nodes, "clients": clients}
    driver.kill()
    for node in nodes:
        node.stop()
    redis.kill()


@pytest.fixture(scope="module")
def browser():
    need("chromedriver", "apt-get install -y chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:
        options.binary_location = chromium
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait(driver, condition, what: str, timeout: float = 20):
    """Polls `condition` until it is truthy. The pages redraw lists as data arrives, so an
    element found in one poll may be gone in the next: a stale element means "poll again"."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: condition(d)
        )
    except Exception as error:  # noqa: BLE001 - add what we waited for
        raise AssertionError(f"timed out waiting for {what}") from error


def click_first(driver, selector: str):
    """Clicks the first element matching `selector` once there is one (None until then),
    for `wait`: a click on an element redrawn meanwhile raises stale and is retried."""
    from selenium.webdriver.common.by import By

    elements = driver.find_elements(By.CSS_SELECTOR, selector)
    if not elements:
        return None
    elements[0].click()
    return elements[0]


def text_of(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    elements = driver.find_elements(By.ID, element_id)
    return elements[0].text.strip() if elements else ""


def test_dashboard_against_a_two_node_cluster(cluster, browser):
    from selenium.webdriver.common.by import By

    a, b = cluster["nodes"]
    clients: NativeClients = cluster["clients"]

    # Log in (the page first redirects to the login form).
    browser.get(f"{a.http}/admin")
    wait(browser, lambda d: "/admin/login" in d.current_url, "the login redirect")
    browser.save_screenshot(str(SHOTS / "login.png"))
    browser.find_element(By.ID, "password").send_keys("wrong password!")
    browser.find_element(By.ID, "login").click()
    wait(browser, lambda d: "error=1" in d.current_url, "the wrong-password notice")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()
    wait(browser, lambda d: d.current_url.rstrip("/").endswith("/admin") or "#/" in d.current_url, "the dashboard")

    # The overview counts the four clients on both nodes, both protocols.
    wait(browser, lambda d: text_of(d, "total-connections") == "4", "4 connections on the overview")
    wait(browser, lambda d: text_of(d, "total-nodes") == "2", "2 nodes on the overview")
    wait(browser, lambda d: text_of(d, "stream-status") == "live", "the live stream")
    # Some traffic for the charts: a varying rate through both nodes for ~12 s.
    started = time.time()
    n = 0
    while time.time() - started < 12:
        n += 1
        (a if n % 3 else b).publish("job:demo", {"type": "progress_update", "progress": n % 100})
        time.sleep(0.01 if int(time.time() - started) % 4 < 2 else 0.05)
    time.sleep(1.5)
    browser.save_screenshot(str(SHOTS / "overview.png"))

    browser.get(f"{a.http}/admin#/nodes")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "table tbody tr")) >= 2, "both nodes listed")
    browser.save_screenshot(str(SHOTS / "nodes.png"))

    # A topic: its page shows the history, and a new event arrives in the live tail.
    browser.get(f"{a.http}/admin#/topics")
    search = wait(browser, lambda d: d.find_elements(By.ID, "topic-search"), "the topic search")[0]
    search.send_keys("job:\n")
    wait(browser, lambda d: "job:demo" in d.page_source, "job:demo in the results")
    browser.save_screenshot(str(SHOTS / "topics.png"))
    browser.get(f"{a.http}/admin#/topics/job%3Ademo")
    wait(browser, lambda d: d.find_elements(By.ID, "topic-tail"), "the topic page")
    # The page reopens the stream with ?tail= (the status reads "connecting" from then on);
    # the tail starts at the topic's position when that stream is accepted, i.e. "live".
    wait(browser, lambda d: text_of(d, "stream-status") == "live", "the tail's stream")
    b.publish("job:demo", {"type": "stage_complete", "stage": "from-node-b"})
    wait(browser, lambda d: any("from-node-b" in e.text for e in d.find_elements(By.CSS_SELECTOR, ".tail-event")), "the live event")
    browser.save_screenshot(str(SHOTS / "topic.png"))

    # Connections: find bob (on node B) and disconnect him from the UI served by node A.
    browser.get(f"{a.http}/admin#/connections")
    user = wait(browser, lambda d: d.find_elements(By.ID, "conn-user"), "the connection search")[0]
    user.send_keys("bob\n")
    bob_id = clients.ids["bob"]
    wait(browser, lambda d: click_first(d, f'.conn-row[data-id="{bob_id}"]'), "bob's row")
    wait(browser, lambda d: bob_id in text_of(d, "conn-details"), "bob's details")
    browser.save_screenshot(str(SHOTS / "connections.png"))
    browser.find_element(By.ID, "conn-disconnect").click()
    wait(browser, lambda d: click_first(d, "#conn-disconnect-confirm"), "the confirm button")
    deadline = time.time() + 10
    while clients.closed.get(bob_id) is None:
        assert time.time() < deadline, "bob's client was not closed"
        time.sleep(0.05)
    assert clients.closed[bob_id] == 1000

    browser.get(f"{a.http}/admin#/sinks")
    wait(browser, lambda d: "pipeline" in d.page_source, "the sink")
    browser.save_screenshot(str(SHOTS / "sinks.png"))

    # The publish console: alice (node A) gets what the console publishes.
    browser.get(f"{a.http}/admin#/publish")
    wait(browser, lambda d: d.find_elements(By.ID, "pub-topic"), "the publish form")
    browser.find_element(By.ID, "pub-topic").send_keys("job:demo")
    body = browser.find_element(By.ID, "pub-event")
    body.clear()
    body.send_keys('{"type": "job_complete", "by": "console"}')
    browser.find_element(By.ID, "pub-send").click()
    wait(browser, lambda d: "offset" in text_of(d, "pub-result").lower(), "the published offset")
    browser.save_screenshot(str(SHOTS / "publish.png"))

    # No console errors (CSP violations would show here).
    errors = [entry for entry in browser.get_log("browser") if entry.get("level") == "SEVERE"] if hasattr(browser, "get_log") else []
    assert not errors, errors
