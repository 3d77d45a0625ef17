#!/usr/bin/env python3
"""Same-run A/B of two keyward binaries on the verify path.

    python3 bench/ab_verify.py OLD_BINARY NEW_BINARY [--rounds 5] [--duration 8]

Starts both binaries, each on a fresh SQLite database (bootstrap, then one
key with `read`), and alternates wrk rounds between them (A, B, B, A, …):
(a) `POST /v1/keys/verify` of one cached key, and (a-ip) the same naming
the end client's `ip`. Prints, for each, the median requests/s and the
median server CPU time per request (from /proc: steadier than requests/s
on a machine where the load generator shares the cores), and B/A.
Needs wrk. Standard library only. (Build the old revision in a worktree:
`git worktree add /tmp/old REV && cargo build --release -p keyward` there.)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

LUA = Path(__file__).resolve().parent / "lua"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, key: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def start(binary: str, work: str) -> tuple[subprocess.Popen, str, str, str]:
    port = free_port()
    proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", work,
                             "--log-level", "warn"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    admin = None
    deadline = time.time() + 60
    for line in proc.stdout:
        m = re.match(r"^\s+(kw_live_\S+)$", line)
        if m:
            admin = m.group(1)
        if "listening on" in line or time.time() > deadline:
            break
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    key = post(base + "/v1/keys", admin, {"name": "bench", "scopes": ["read"]})["secret"]
    return proc, base, admin, key


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(base: str, admin: str, token: str, ip: str, duration: int) -> tuple[float, int]:
    env = {**os.environ, "KW_AUTH": f"Bearer {admin}", "KW_TOKEN": token, "KW_IP": ip}
    r = subprocess.run(["wrk", "-t2", "-c64", f"-d{duration}s", "-s", str(LUA / "verify_one.lua"), base],
                       env=env, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"^WRK_RESULT (\{.*\})$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        sys.exit(f"wrk failed: {r.stderr[-500:]}")
    res = json.loads(m.group(1))
    if res["errors"]["status"] or res["errors"]["timeout"]:
        sys.exit(f"errors during the run: {res['errors']}")
    return res["requests"] / (res["duration_us"] / 1e6), res["requests"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--scenarios", default="a,a-ip", help="which, in order: a, a-ip")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="keyward-ab-")
    servers = {}
    try:
        for name, binary in (("A", args.old), ("B", args.new)):
            os.makedirs(f"{work}/{name}")
            servers[name] = start(binary, f"{work}/{name}")
        known = {"a": ("(a) verify, 1 cached key", ""),
                 "a-ip": ("(a-ip) the same, naming an ip", "203.0.113.7")}
        for label, ip in (known[s] for s in args.scenarios.split(",")):
            rps = {"A": [], "B": []}
            cpu = {"A": [], "B": []}
            for r in range(args.rounds):
                for name in (("A", "B") if r % 2 == 0 else ("B", "A")):
                    proc, base, admin, key = servers[name]
                    before = cpu_seconds(proc.pid)
                    rate, requests = wrk(base, admin, key, ip, args.duration)
                    rps[name].append(rate)
                    cpu[name].append((cpu_seconds(proc.pid) - before) / requests * 1e6)
            a, b = statistics.median(rps["A"]), statistics.median(rps["B"])
            ca, cb = statistics.median(cpu["A"]), statistics.median(cpu["B"])
            print(f"{label}: A {a:,.0f} req/s {ca:.1f} µs CPU/req; B {b:,.0f} req/s {cb:.1f} µs CPU/req "
                  f"(medians of {args.rounds}); B/A {b / a:.3f} req/s, {cb / ca:.3f} CPU/req")
    finally:
        for proc, *_ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
