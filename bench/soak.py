#!/usr/bin/env python3
"""Soak: a bounded mixed load on keyward while watching RSS, open file
descriptors and errors.

    python3 bench/soak.py [--minutes 5] [--keys 1000] [--verify-only] [--scrape SECONDS]

keyward (release build) on a fresh data dir; wrk sends verifies over a pool
of keys mixed with creates (about 1 in 20); a side thread rolls, revokes and
deletes keys at a low rate. With --verify-only, wrk sends verifies alone and
nothing else writes: the data does not grow, so memory must not either, and
the run fails when RSS grows by more than --max-growth-mib after warm-up.
--scrape N reads /metrics every N seconds (by default nobody does, as on a
node without Prometheus). Every 5 s the script samples keyward's RSS and fd
count; at the end it prints the samples, the growth from the first sample
after warm-up to the last, and the error counts. Not run in CI (the bounded
test crates/keyward/tests/memory.rs is). Needs: cargo build --release -p
keyward, wrk.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LUA = r"""
local keys = {}
for line in io.lines(os.getenv("SOAK_KEYS")) do keys[#keys + 1] = line end
local admin = os.getenv("SOAK_ADMIN")
local creates = os.getenv("SOAK_VERIFY_ONLY") ~= "1"
local n = 0
local threads = 0
-- Each wrk thread has its own Lua state and random sequence: number them so
-- that created names never collide.
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  tid = wrk.thread:get("tid") or 0
end
request = function()
  n = n + 1
  if creates and n % 20 == 0 then
    local body = '{"name": "soak ' .. tid .. '-' .. n .. '"}'
    return wrk.format("POST", "/v1/keys", {["Authorization"] = "Bearer " .. admin, ["Content-Type"] = "application/json"}, body)
  end
  local body = '{"key": "' .. keys[math.random(#keys)] .. '"}'
  return wrk.format("POST", "/v1/keys/verify", {["Authorization"] = "Bearer " .. admin, ["Content-Type"] = "application/json"}, body)
end
"""


def call(base, admin, method, path, body=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Authorization", f"Bearer {admin}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read()
        return json.loads(text) if text else None


def sample(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--verify-only", action="store_true", help="verifies only: no creates, no side writes")
    ap.add_argument("--scrape", type=float, default=0, help="read /metrics every N seconds (0: never)")
    ap.add_argument("--max-growth-mib", type=int, default=8, help="allowed RSS growth after warm-up (--verify-only)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="kw-soak-")
    kw = subprocess.Popen([os.path.join(ROOT, "target/release/keyward"), "serve", "--listen", "127.0.0.1:0",
                           "--data-dir", tmp, "--log-level", "warn"], stdout=subprocess.PIPE, text=True)
    wrk = None
    stop = threading.Event()
    errors = {"side": 0}
    try:
        admin = None
        for line in kw.stdout:
            admin = admin or next((w for w in line.split() if w.startswith("kw_live_")), None)
            if line.startswith("keyward listening on "):
                base = line.split()[-1]
                break
        pool = [call(base, admin, "POST", "/v1/keys", {"name": f"pool {i}", "scopes": ["read"]}) for i in range(args.keys)]
        keys_file = os.path.join(tmp, "keys.txt")
        with open(keys_file, "w") as f:
            f.write("\n".join(k["secret"] for k in pool) + "\n")
        lua = os.path.join(tmp, "soak.lua")
        with open(lua, "w") as f:
            f.write(LUA)

        def side():
            ids = [k["id"] for k in pool[args.keys // 2:]]
            random.shuffle(ids)
            while not stop.is_set() and ids:
                key_id = ids.pop()
                try:
                    call(base, admin, "POST", f"/v1/keys/{key_id}/roll", {"gracePeriodSeconds": 5})
                    call(base, admin, "POST", f"/v1/keys/{key_id}/revoke")
                    call(base, admin, "DELETE", f"/v1/keys/{key_id}")
                except (urllib.error.URLError, OSError):
                    errors["side"] += 1
                stop.wait(0.2)

        def scraper():
            while not stop.wait(args.scrape):
                try:
                    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
                        r.read()
                except (urllib.error.URLError, OSError):
                    errors["scrape"] = errors.get("scrape", 0) + 1

        if not args.verify_only:
            threading.Thread(target=side, daemon=True).start()
        if args.scrape > 0:
            threading.Thread(target=scraper, daemon=True).start()
        seconds = int(args.minutes * 60)
        env = dict(os.environ, SOAK_KEYS=keys_file, SOAK_ADMIN=admin, SOAK_VERIFY_ONLY="1" if args.verify_only else "0")
        wrk = subprocess.Popen(["wrk", "-t2", "-c32", f"-d{seconds}s", "-s", lua, base], env=env,
                               stdout=subprocess.PIPE, text=True)
        samples = []
        started = time.time()
        while wrk.poll() is None:
            samples.append((round(time.time() - started), *sample(kw.pid)))
            time.sleep(5)
        out = wrk.stdout.read()
        stop.set()
        load = "verify only" if args.verify_only else "verify + 1/20 creates, side roll/revoke/delete"
        scrape = f"/metrics every {args.scrape:g} s" if args.scrape > 0 else "no scraper"
        print(f"soak: {args.minutes} min, wrk -t2 -c32 over {args.keys} keys, {load}, {scrape}")
        print(f"{'t (s)':>6} {'RSS MiB':>8} {'fds':>5}")
        for t, rss, fds in samples:
            print(f"{t:>6} {rss:>8} {fds:>5}")
        warm = samples[min(2, len(samples) - 1)]
        growth = samples[-1][1] - warm[1]
        print(f"growth after warm-up: RSS {growth:+d} MiB, fds {samples[-1][2] - warm[2]:+d}")
        non2xx = next((line for line in out.splitlines() if "Non-2xx" in line), "Non-2xx or 3xx responses: 0")
        socket_errors = next((line.strip() for line in out.splitlines() if "Socket errors" in line), "Socket errors: none")
        rps = next((line.strip() for line in out.splitlines() if line.startswith("Requests/sec")), "")
        print(f"{rps}; {non2xx.strip()}; {socket_errors}; side-thread errors: {errors['side']}")
        if "Non-2xx" in out or errors["side"] or errors.get("scrape"):
            sys.exit(1)
        if args.verify_only and growth > args.max_growth_mib:
            print(f"FAIL: RSS grew {growth} MiB after warm-up on a verify-only load (allowed {args.max_growth_mib})")
            sys.exit(1)
    finally:
        stop.set()
        for p in (wrk, kw):
            if p and p.poll() is None:
                p.terminate()
                p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
