#!/usr/bin/env python3
"""Latency added by keyward's forward-auth hop behind nginx.

    python3 bench/forward_auth_latency.py [--duration 10] [--rounds 3]

Starts keyward (release build), an axum API (keyward-bench protected,
the floor's answer) as the upstream, and Debian's nginx configured with
docs/recipes/nginx.conf plus one extra location without auth_request; and
the same axum API protected in-process by the embedded verifier
(keyward-verifier's KeywardLayer, following keyward's replication stream).
wrk loads the three, interleaved, and the script prints p50/p99 and req/s
of each (medians over rounds). Bounded: rounds x 3 x duration seconds of
load.
Needs: cargo build --release -p keyward -p keyward-bench, nginx, wrk.
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")


def time_wait(port):
    """Sockets to 127.0.0.1:port in TIME_WAIT (closed connections)."""
    out = subprocess.run(["ss", "-tan", "state", "time-wait", f"( dport = :{port} or sport = :{port} )"],
                         capture_output=True, text=True).stdout
    return max(0, len(out.strip().splitlines()) - 1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def call(method, url, key, body=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
    req.add_header("Authorization", f"Bearer {key}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def wrk(url, key, duration):
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{duration}s", "--latency", "-H", f"Authorization: Bearer {key}", url],
        capture_output=True, text=True, check=True).stdout

    def ms(label):
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        sys.exit(f"{url}: {non2xx.group(1)} failed responses\n{out}")
    return {"p50": ms("50"), "p99": ms("99"), "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--check", action="store_true", help="exit 1 when the target is not met")
    args = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    procs = []
    tmp = tempfile.mkdtemp(prefix="kw-fa-")
    try:
        kw_port, api_port, ng_port = free_port(), free_port(), free_port()
        kw = subprocess.Popen([f"{BIN}/keyward", "serve", "--listen", f"127.0.0.1:{kw_port}", "--data-dir", tmp,
                               "--log-level", "warn"], stdout=subprocess.PIPE, text=True)
        procs.append(kw)
        admin = None
        for line in kw.stdout:
            admin = admin or next((w for w in line.split() if w.startswith("kw_live_")), None)
            if line.startswith("keyward listening"):
                break
        base = f"http://127.0.0.1:{kw_port}"
        gateway = call("POST", f"{base}/v1/keys", admin, {"name": "gateway", "scopes": ["keys:verify"]})["secret"]
        client = call("POST", f"{base}/v1/keys", admin, {"name": "client", "scopes": ["*"]})["secret"]
        procs.append(subprocess.Popen([f"{BIN}/keyward-bench", "protected", "--listen", f"127.0.0.1:{api_port}"],
                                      stdout=subprocess.DEVNULL))
        layer_port = free_port()
        procs.append(subprocess.Popen([f"{BIN}/keyward-bench", "protected", "--listen", f"127.0.0.1:{layer_port}",
                                       "--keyward", base, "--key", admin], stdout=subprocess.DEVNULL))
        recipe = open(os.path.join(ROOT, "docs", "recipes", "nginx.conf")).read()
        conf = (recipe.replace("127.0.0.1:8080", f"127.0.0.1:{kw_port}")
                .replace("127.0.0.1:3000", f"127.0.0.1:{api_port}")
                .replace("127.0.0.1:8000", f"127.0.0.1:{ng_port}")
                .replace("kw_live_REPLACE_WITH_A_KEY_HOLDING_KEYS_VERIFY", gateway)
                .replace("        location / {", "        location /noauth/ {\n"
                         "            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n"
                         "            proxy_pass http://api;\n        }\n\n        location / {", 1))
        os.makedirs(os.path.join(tmp, "tmp"), exist_ok=True)
        with open(os.path.join(tmp, "nginx.conf"), "w") as f:
            f.write(conf)
        procs.append(subprocess.Popen([nginx, "-p", tmp, "-c", "nginx.conf"], stderr=subprocess.DEVNULL))
        wait_port(api_port)
        wait_port(ng_port)
        wait_port(layer_port)
        results = {"without auth_request": [], "with auth_request": [], "embedded layer": []}
        closed = []
        for _ in range(args.rounds):
            results["without auth_request"].append(wrk(f"http://127.0.0.1:{ng_port}/noauth/x", client, args.duration))
            before = time_wait(kw_port)
            results["with auth_request"].append(wrk(f"http://127.0.0.1:{ng_port}/api/x", client, args.duration))
            closed.append(time_wait(kw_port) - before)
            results["embedded layer"].append(wrk(f"http://127.0.0.1:{layer_port}/api/x", client, args.duration))
        print(f"nginx -> axum API / axum API + KeywardLayer, wrk -t2 -c32, {args.duration}s x {args.rounds} rounds, medians")
        print(f"{'path':<22} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
        med = {}
        for name, runs in results.items():
            med[name] = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99")}
            m = med[name]
            print(f"{name:<22} {m['rps']:>10.0f} {m['p50']:>8.3f} {m['p99']:>8.3f}")
        a, b = med["with auth_request"], med["without auth_request"]
        p50, p99 = a["p50"] - b["p50"], a["p99"] - b["p99"]
        print(f"added by the auth hop: p50 {p50:+.3f} ms, p99 {p99:+.3f} ms")
        e = med["embedded layer"]
        print(f"the embedded layer against nginx + /v1/authorize: {e['rps'] / a['rps']:.2f}x req/s, "
              f"p99 {e['p99']:.3f} vs {a['p99']:.3f} ms")
        print(f"connections to keyward left in TIME_WAIT per run: {closed} (nginx reuses its connections: ~0)")
        met = p50 <= 0.5 and p99 <= 1.0
        print(f"target (hop adds at most 0.5 ms p50 and 1 ms p99 at 32 connections): {'met' if met else 'NOT met'}")
        if args.check and not met:
            sys.exit(1)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
