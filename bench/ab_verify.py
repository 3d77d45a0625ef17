#!/usr/bin/env python3
"""Same-run A/B of two keyward binaries on the verify paths.

    python3 bench/ab_verify.py OLD_BINARY NEW_BINARY [--rounds 5] [--duration 8]
        [--scenarios a,a-ip,b,c,h] [--spread-keys 2000] [--pause 1]

(`bench/ab.sh OLD_REV [NEW_REV|WORKTREE]` builds two git revisions, each in
its own worktree and target directory, and runs this on them.)

Starts both binaries, each on a fresh SQLite database (bootstrap, then one
key with `read`, and for (b) --spread-keys more created through
`POST /v1/keys` with the admin key, then verified once so they are cached),
and alternates wrk rounds between them (A, B, B, A, …), scenario by
scenario, with the scripts of bench/run.py:

  (a)    `POST /v1/keys/verify` of one cached key           (verify_one.lua)
  (a-ip) the same, naming the end client's `ip`             (verify_one.lua, KW_IP)
  (b)    verify a key drawn at random per request from the
         --spread-keys keys, all cached                     (verify_keys.lua)
  (c)    verify bad keys, the mix of run.py's (c): half malformed (one
         changed character breaking the checksum, truncated, too short, not
         a key), half well-formed but unknown (NOT_FOUND)   (verify_keys.lua)
  (h)    forward-auth `GET /v1/authorize`, the key of (a) as bearer, the
         admin key as X-Keyward-Verifier-Key                (authorize.lua)

The unknown well-formed tokens of (c) are made here: the prefix and
environment of a real token, 48 random base62 characters (id and secret)
and the CRC-32 checksum keyward_core::token computes, so they parse and are
looked up, but no key has their id. (A real key's id with a wrong secret,
INVALID_SECRET, is not used: wrong secrets count towards locking the key,
so the answers would change during the run.) Should the checksum of a real
token not match (a token format this script does not know), (c) uses the
malformed keys only and says so.

Prints, for each scenario, the median requests/s and the median server CPU
time per request (from /proc: steadier than requests/s on a machine where
the load generator shares the cores) of A and of B, and B/A. Scenarios a
binary cannot run are skipped with a message ((h) where /v1/authorize does
not answer 200). Checks as run.py does: no socket connect errors, timeouts
or non-2xx answers, and the verification codes keyward counted (/metrics):
only VALID in a, a-ip, b, h; MALFORMED and NOT_FOUND in (c). Exit status 1
if a check failed.

Needs wrk. Standard library only.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from run import bad_keys  # the mix of run.py's (c)

LUA = Path(__file__).resolve().parent / "lua"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # keyward_core::ids::BASE62
BODY_LEN, CHECKSUM_LEN = 54, 6  # keyward_core::token: id 16 + secret 32 + checksum 6
UNKNOWN = 10_000  # distinct unknown well-formed tokens for (c)
BAD_LINES = 20_000  # lines of the bad-keys file
SCENARIOS = {
    "a": "(a) verify, 1 cached key",
    "a-ip": "(a-ip) the same, naming an ip",
    "b": "(b) verify, keys spread, cached",
    "c": "(c) verify, bad keys (½ malformed, ½ unknown)",
    "h": "(h) forward-auth GET /v1/authorize, 1 key",
}


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    base: str
    admin: str
    key: str
    keys_file: Path | None = None
    skip: dict[str, str] = field(default_factory=dict)  # scenario -> why


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, key: str | None = None, body: dict | None = None,
         headers: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    h = {**(headers or {})}
    if key:
        h["Authorization"] = f"Bearer {key}"
    if data is not None:
        h["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post(url: str, key: str, body: dict) -> dict:
    status, raw = http("POST", url, key, body)
    if status // 100 != 2:
        raise RuntimeError(f"POST {url}: {status} {raw[:300]!r}")
    return json.loads(raw)


def start(name: str, binary: str, work: str) -> Server:
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
    if not admin:
        proc.terminate()
        sys.exit(f"{name} ({binary}) printed no bootstrap admin key")
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    key = post(base + "/v1/keys", admin, {"name": "bench", "scopes": ["read"]})["secret"]
    return Server(name, proc, base, admin, key)


def seed_spread(srv: Server, count: int, path: Path) -> float:
    """Create count keys through the API (8 at a time), write their tokens
    to path, verify each once (into the cache). Returns the seconds taken."""
    t0 = time.monotonic()

    def create(i: int) -> str:
        for attempt in range(5):
            status, raw = http("POST", srv.base + "/v1/keys", srv.admin, {"name": f"spread-{i}", "scopes": ["read"]})
            if status == 201:
                return json.loads(raw)["secret"]
            if status in (429, 503):
                time.sleep(0.5 * (attempt + 1))
                continue
            break
        raise RuntimeError(f"{srv.name}: POST /v1/keys answered {status} {raw[:300]!r}")

    def verify(token: str) -> None:
        status, raw = http("POST", srv.base + "/v1/keys/verify", srv.admin, {"key": token})
        if status != 200 or json.loads(raw).get("code") != "VALID":
            raise RuntimeError(f"{srv.name}: a created key did not verify: {status} {raw[:300]!r}")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(create, range(count)))
        list(pool.map(verify, tokens))
    path.write_text("\n".join(tokens) + "\n")
    srv.keys_file = path
    return time.monotonic() - t0


def checksum(signed: str) -> str:
    """keyward_core::token's checksum: CRC-32 (IEEE) of everything before
    it, as 6 base62 digits, most significant first."""
    crc = zlib.crc32(signed.encode()) & 0xFFFFFFFF
    out = []
    for _ in range(CHECKSUM_LEN):
        out.append(BASE62[crc % 62])
        crc //= 62
    return "".join(reversed(out))


def unknown_tokens(real: str, count: int, rng: random.Random) -> list[str] | None:
    """Well-formed tokens no key has: a real token's prefix and environment,
    a random id and secret, a correct checksum. None if the real token's
    checksum is not the one computed here (an unknown format)."""
    head, body = real[:-BODY_LEN], real[-BODY_LEN:]
    if not head.endswith("_") or checksum(real[:-CHECKSUM_LEN]) != body[-CHECKSUM_LEN:]:
        return None
    out = []
    for _ in range(count):
        signed = head + "".join(rng.choices(BASE62, k=BODY_LEN - CHECKSUM_LEN))
        out.append(signed + checksum(signed))
    return out


def malformed_only(real: str, count: int, rng: random.Random) -> list[str]:
    """run.py's mix, its "unknown" half made of a real token's prefix and a
    random body without a valid checksum (so malformed too)."""
    fake = [real[:-BODY_LEN] + "".join(rng.choices(BASE62, k=BODY_LEN)) for _ in range(1000)]
    return bad_keys(fake, rng, count)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def verification_codes(base: str) -> dict[str, float]:
    try:
        status, body = http("GET", base + "/metrics")
    except OSError:
        return {}
    if status != 200:
        return {}
    out = {}
    for line in body.decode(errors="replace").splitlines():
        m = re.match(r'keyward_verifications_total\{code="(\w+)"\} (\S+)', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def check_codes(sid: str, delta: dict[str, float], malformed_only_c: bool) -> list[str]:
    codes = {k: v for k, v in delta.items() if v}
    if not codes:
        return []  # nothing counted (no /metrics): not checked
    if sid in ("a", "a-ip", "b", "h"):
        other = {k: v for k, v in codes.items() if k != "VALID"}
        return [f"unexpected codes {other}"] if other else []
    if sid == "c":
        required = {"MALFORMED"} if malformed_only_c else {"MALFORMED", "NOT_FOUND"}
        problems = []
        other = {k: v for k, v in codes.items() if k not in ("VALID", "MALFORMED", "NOT_FOUND")}
        if other:
            problems.append(f"unexpected codes {other}")
        if not all(codes.get(k) for k in required):
            problems.append(f"expected {' and '.join(sorted(required))}, got {codes}")
        return problems
    return []


def wrk(base: str, script: str, env: dict, duration: int) -> tuple[float, int]:
    env = {**os.environ, "KW_IP": "", **env}
    r = subprocess.run(["wrk", "-t2", "-c64", f"-d{duration}s", "--timeout", "5s", "-s", str(LUA / script), base],
                       env=env, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"^WRK_RESULT (\{.*\})$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        sys.exit(f"wrk failed: {r.stderr[-500:]}")
    res = json.loads(m.group(1))
    errors = {k: v for k, v in res["errors"].items() if k in ("connect", "status", "timeout") and v}
    if errors:
        sys.exit(f"errors during the run ({script} against {base}): {res['errors']} (status = non-2xx answers)")
    if not res["requests"]:
        sys.exit(f"no request completed ({script} against {base})")
    return res["requests"] / (res["duration_us"] / 1e6), res["requests"]


def scenario_env(sid: str, srv: Server, bad_file: Path | None) -> tuple[str, dict]:
    auth = {"KW_AUTH": f"Bearer {srv.admin}"}
    if sid == "a":
        return "verify_one.lua", {**auth, "KW_TOKEN": srv.key}
    if sid == "a-ip":
        return "verify_one.lua", {**auth, "KW_TOKEN": srv.key, "KW_IP": "203.0.113.7"}
    if sid == "b":
        return "verify_keys.lua", {**auth, "KW_KEYS_FILE": str(srv.keys_file)}
    if sid == "c":
        return "verify_keys.lua", {**auth, "KW_KEYS_FILE": str(bad_file)}
    if sid == "h":
        return "authorize.lua", {"KW_TOKEN": srv.key, "KW_VERIFIER_KEY": srv.admin}
    raise ValueError(sid)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run (default 8)")
    ap.add_argument("--scenarios", default="a,a-ip,b,c,h", help="which, in order: " + ", ".join(SCENARIOS))
    ap.add_argument("--spread-keys", type=int, default=2000, help="keys created for (b) (default 2000)")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between runs (default 1)")
    args = ap.parse_args()
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown_ids = [s for s in wanted if s not in SCENARIOS]
    if unknown_ids:
        ap.error(f"unknown scenarios {unknown_ids}; known: {', '.join(SCENARIOS)}")
    work = Path(tempfile.mkdtemp(prefix="keyward-ab-"))
    servers: dict[str, Server] = {}
    problems: list[str] = []
    rng = random.Random()
    try:
        for name, binary in (("A", args.old), ("B", args.new)):
            (work / name).mkdir()
            servers[name] = start(name, binary, str(work / name))
            print(f"{name}: {binary} on {servers[name].base}", flush=True)
        if "b" in wanted:
            for srv in servers.values():
                took = seed_spread(srv, args.spread_keys, work / srv.name / "spread.txt")
                print(f"{srv.name}: {args.spread_keys} keys created through the API and verified once in "
                      f"{took:.1f}s", flush=True)
        bad_file, malformed_c = None, False
        if "c" in wanted:
            real = servers["A"].key
            unknown = unknown_tokens(real, UNKNOWN, rng)
            if unknown is None:
                malformed_c = True
                lines = malformed_only(real, BAD_LINES, rng)
                print("(c): a real token's checksum is not the CRC-32 this script computes: "
                      "malformed keys only", flush=True)
            else:
                lines = bad_keys(unknown, rng, BAD_LINES)
            bad_file = work / "bad-keys.txt"
            bad_file.write_text("\n".join(lines) + "\n")
        if "h" in wanted:
            for srv in servers.values():
                status, body = http("GET", srv.base + "/v1/authorize", srv.key, headers={
                    "X-Keyward-Verifier-Key": srv.admin, "X-Forwarded-Method": "GET",
                    "X-Forwarded-Uri": "/api/ping"})
                if status != 200:
                    srv.skip["h"] = f"GET /v1/authorize answered {status} {body[:120]!r} to a valid key"
        time.sleep(args.pause)
        for sid in wanted:
            label = SCENARIOS[sid]
            skipped = [f"{s.name}: {s.skip[sid]}" for s in servers.values() if sid in s.skip]
            if skipped:
                print(f"{label}: skipped ({'; '.join(skipped)})", flush=True)
                continue
            rps = {"A": [], "B": []}
            cpu = {"A": [], "B": []}
            for r in range(args.rounds):
                for name in (("A", "B") if r % 2 == 0 else ("B", "A")):
                    srv = servers[name]
                    script, env = scenario_env(sid, srv, bad_file)
                    codes0 = verification_codes(srv.base)
                    before = cpu_seconds(srv.proc.pid)
                    rate, requests = wrk(srv.base, script, env, args.duration)
                    cpu[name].append((cpu_seconds(srv.proc.pid) - before) / requests * 1e6)
                    rps[name].append(rate)
                    codes1 = verification_codes(srv.base)
                    delta = {k: v - codes0.get(k, 0) for k, v in codes1.items()}
                    problems += [f"{label}, {name} round {r + 1}: {p}"
                                 for p in check_codes(sid, delta, malformed_c)]
                    if srv.proc.poll() is not None:
                        sys.exit(f"{name} exited with {srv.proc.returncode} during {label}")
                    time.sleep(args.pause)
            a, b = statistics.median(rps["A"]), statistics.median(rps["B"])
            ca, cb = statistics.median(cpu["A"]), statistics.median(cpu["B"])
            print(f"{label}: A {a:,.0f} req/s {ca:.1f} µs CPU/req; B {b:,.0f} req/s {cb:.1f} µs CPU/req "
                  f"(medians of {args.rounds}); B/A {b / a:.3f} req/s, {cb / ca:.3f} CPU/req", flush=True)
    finally:
        for srv in servers.values():
            srv.proc.terminate()
            try:
                srv.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                srv.proc.kill()
                srv.proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    if problems:
        print("PROBLEMS:")
        for p in problems:
            print(f"  {p}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
