#!/usr/bin/env python3
"""OAuth throughput over HTTP: access tokens issued per second
(`/oauth/token`, client_credentials, client_secret_basic) and
`/v1/keys/verify` with an access token against the same with an API key,
in one run on one server, rounds interleaved.

    python3 bench/oauth.py                 # 3 rounds of 10 s per scenario
    python3 bench/oauth.py --quick         # 1 round of 2 s

Needs target/release/keyward (`cargo build --release -p keyward`; or pass
--build) and wrk. Standard library only.
"""
from __future__ import annotations

import argparse
import base64
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

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "lua"
BIN = ROOT / "target" / "release" / "keyward"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None,
         form: str | None = None) -> dict:
    data, h = None, dict(headers or {})
    if body is not None:
        data, h["Content-Type"] = json.dumps(body).encode(), "application/json"
    if form is not None:
        data, h["Content-Type"] = form.encode(), "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def wrk(script: str, url: str, env: dict, args) -> dict:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--timeout", "5s",
           "-s", str(LUA / script), url]
    r = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=args.duration + 60)
    m = re.search(r"^WRK_RESULT (\{.*\})$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        sys.exit(f"wrk failed ({r.returncode}): {r.stderr[-1000:]} {r.stdout[-1000:]}")
    res = json.loads(m.group(1))
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    bad = sum(res["errors"].values())
    if bad:
        sys.exit(f"{script}: {bad} failed requests ({res['errors']}): the measurement is not of successes")
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 round of 2 s per scenario")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--build", action="store_true", help="cargo build --release -p keyward first")
    p.add_argument("--token-algorithm", choices=["EdDSA", "ES256"], default="EdDSA")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 2
    if args.build:
        subprocess.run(["cargo", "build", "--release", "-p", "keyward"], cwd=ROOT, check=True)
    if not BIN.exists():
        sys.exit(f"{BIN} is missing: cargo build --release -p keyward (or --build)")

    work = Path(tempfile.mkdtemp(prefix="keyward-oauth-bench-"))
    master = subprocess.run([str(BIN), "master-key", "generate"], capture_output=True, text=True, check=True)
    master_key = master.stdout.strip().splitlines()[-1].strip()
    common = ["--data-dir", str(work), "--master-key", master_key]
    boot = subprocess.run([str(BIN), "bootstrap", "--json", *common], capture_output=True, text=True, check=True)
    admin = json.loads(boot.stdout)["adminKey"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # Access tokens outlive the run; rounds measure the default refresh-token write per issuance.
    server = subprocess.Popen(
        [str(BIN), "serve", *common, "--listen", f"127.0.0.1:{port}", "--log-level", "warn",
         "--access-token-lifetime", "86400", "--token-algorithm", args.token_algorithm],
        stdout=open(work / "out.log", "w"), stderr=open(work / "err.log", "w"))
    try:
        for _ in range(100):
            try:
                http("GET", base + "/.well-known/jwks.json")
                break
            except OSError:
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {admin}"}
        key = http("POST", base + "/v1/keys", {"name": "bench key", "scopes": ["read"]}, auth)["secret"]
        client = http("POST", base + "/v1/keys", {"name": "bench client", "type": "client", "scopes": ["read"]}, auth)
        basic = "Basic " + base64.b64encode(f"{client['clientId']}:{client['clientSecret']}".encode()).decode()
        access = http("POST", base + "/oauth/token", headers={"Authorization": basic},
                      form="grant_type=client_credentials")["access_token"]
        for token in (key, access):
            v = http("POST", base + "/v1/keys/verify", {"key": token}, auth)
            assert v["valid"], v
        scenarios = [
            ("token issuance (client_credentials, Basic)", "token.lua", {"KW_BASIC": basic}),
            ("verify: API key", "verify_one.lua", {"KW_AUTH": f"Bearer {admin}", "KW_TOKEN": key}),
            ("verify: access token", "verify_one.lua", {"KW_AUTH": f"Bearer {admin}", "KW_TOKEN": access}),
        ]
        results: dict[str, list[dict]] = {name: [] for name, _, _ in scenarios}
        for r in range(args.rounds):
            for name, script, env in scenarios:
                res = wrk(script, base, env, args)
                results[name].append(res)
                print(f"round {r + 1} {name}: {res['rps']:,.0f} req/s, p99 {res['latency_us']['p99'] / 1000:.2f} ms",
                      flush=True)
                time.sleep(1)
        print(f"\n{args.token_algorithm}, {args.rounds} round(s) of {args.duration} s, "
              f"wrk -t{args.threads} -c{args.connections}, medians:")
        med = {}
        for name, runs in results.items():
            med[name] = statistics.median(x["rps"] for x in runs)
            p99 = statistics.median(x["latency_us"]["p99"] for x in runs) / 1000
            print(f"  {name:45} {med[name]:>10,.0f} req/s  p99 {p99:.2f} ms")
        ratio = med["verify: access token"] / med["verify: API key"]
        print(f"  access token / API key verify throughput: {ratio:.2f}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
