"""Event volume and latency of the live page under 1,000 finished chunks a second.

    python -m bench.web_events [--rate 1000] [--seconds 10]

A real ``hydra web`` process, a local Redis, and headless Chromium on the page. A producer finishes
chunks of a π job through the real COMPLETE script at ``--rate`` per second (no kernel: this
measures the event path) and emits progress as workers do (coalesced by the 100 ms gate). Printed:
events the browser received per second, latency from a chunk's completion to the browser
(median, p99), and the web process's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import save, table
from hydra import keys
from hydra.collector import Collector
from hydra.connection import connect
from hydra.events import Events
from hydra.local import RedisServer, free_port, spawn, stop_process
from hydra.queue import SubmitOptions, submit
from hydra.settings import Settings
from hydra.tasks.pi.kernel import BLOCK

CHROMIUM = "/usr/bin/chromium"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    n = int(args.rate * args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        port = free_port()
        web = spawn([sys.executable, "-m", "hydra", "web", "--port", str(port)], env={"HYDRA_REDIS_URL": server.url})
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            client = connect(server.url)
            job_id = submit(client, "pi", {"samples": n * BLOCK}, SubmitOptions(chunk_units=1))
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
                )
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{port}")
                page.wait_for_selector("#connection[data-state=live]")
                page.evaluate(
                    "() => { window.__events = []; socket.on('job', j => window.__events.push("
                    "[Date.now() / 1000, j.done])) }"
                )
                cpu_before, started = cpu_seconds(web.pid), time.monotonic()
                done_at = produce(client, Events(server.url), job_id, n, args.rate)
                page.wait_for_function(f"() => window.__events.some(e => e[1] >= {n * BLOCK})", timeout=30_000)
                cpu = (cpu_seconds(web.pid) - cpu_before) / (time.monotonic() - started)
                events = page.evaluate("() => window.__events")
                browser.close()
            client.close()
        finally:
            stop_process(web)
            server.stop()
    transit = sorted(t - done_at[done // BLOCK] for t, done in events if done // BLOCK in done_at)
    # Each chunk's latency: until the first event showing it counted (coalescing included).
    shown, latencies, k = sorted((done // BLOCK, t) for t, done in events), [], 0
    for units in sorted(done_at):
        while k < len(shown) and shown[k][0] < units:
            k += 1
        if k < len(shown):
            latencies.append(shown[k][1] - done_at[units])
    latencies.sort()
    first, last = events[0][0], events[-1][0]
    rows = [
        ["chunks finished per second", args.rate],
        ["events received by the browser per second", len(events) / max(last - first, 1e-9)],
        ["chunk done → shown on the page, median (ms)", 1000 * statistics.median(latencies)],
        ["chunk done → shown on the page, p99 (ms)", 1000 * latencies[int(0.99 * (len(latencies) - 1))]],
        ["one event, emit → browser, median (ms)", 1000 * statistics.median(transit)],
        ["web process CPU (fraction of a core)", cpu],
    ]
    print(table(rows, ["", "measured"]))
    save("web_events", {row[0]: row[1] for row in rows})


def produce(client, events: Events, job_id: str, n: int, rate: int) -> dict[int, float]:
    """Finish chunk i at start + i / rate through the real collector (a volunteer's result message
    accepted by the ACCEPT script, progress emitted as the monitor does); return units → time done."""
    collector = Collector(client, Settings(), events=events)
    user, wid = "bench", "w1"

    def send(message: dict) -> None:
        collector.handle(user, json.dumps(message).encode() + b"\n")

    send({"t": "hello", "w": wid, "tasks": {"pi": "1"}, "device": "cpu", "zone": "", "host": "h", "pid": 1})
    done_at: dict[int, float] = {}
    start = time.time()
    for i in range(n):
        raw = client.lpop(keys.inbox(user, wid))
        while raw and json.loads(raw)["t"] != "chunk":
            raw = client.lpop(keys.inbox(user, wid))
        if raw is None:
            break
        chunk = json.loads(raw)
        delay = start + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        send(
            {
                "t": "result",
                "w": wid,
                "job": chunk["job"],
                "chunk": chunk["chunk"],
                "a": chunk["a"],
                "sums": {"inside": 0},
                "seconds": 0.001,
            }
        )
        done_at[i + 1] = time.time()
    return done_at


if __name__ == "__main__":
    main()
