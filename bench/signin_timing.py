#!/usr/bin/env python3
"""Sign-in timing: does an unknown email cost what a wrong password costs?

Usage (from the repository root; Python 3.11, standard library only):

    python3 bench/signin_timing.py [--attempts 60] [--no-build] [--workdir DIR]

Starts the release keyward (built with `cargo build --release -p keyward`
unless --no-build) on a fresh SQLite database with a known owner, invites
enough members that no account reaches its failure limit, then signs in
alternately with an unknown email and with a member's wrong password
(each attempt from its own X-Forwarded-For address, as loopback is a
trusted proxy, so the per-address limit is not reached either) and prints
the median time of each and their ratio. Success: the medians are within
5 % of each other.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OWNER_PASSWORD = "bench owner password"
PER_ACCOUNT = 5  # well under the 10 failures that throttle an account


def call(base, method, path, body=None, key=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", "Bearer " + key)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, text = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    elapsed = time.perf_counter() - started
    return status, (json.loads(text) if text else None), elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attempts", type=int, default=60, help="attempts of each kind")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--workdir")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "keyward"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "keyward")
    work = args.workdir or tempfile.mkdtemp(prefix="keyward-signin-")
    env = dict(os.environ, KEYWARD_OWNER_PASSWORD=OWNER_PASSWORD, KEYWARD_OWNER_EMAIL="owner@bench.example")
    server = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", work, "--log-level", "warn"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        addr = None
        for line in server.stdout:
            m = re.search(r"listening on http://(\S+)", line)
            if m and "forward-auth" not in line:
                addr = m.group(1)
                break
        base = "http://" + addr
        # Only a person invites people: the owner does.
        status, body, _ = call(base, "POST", "/v1/auth/login",
                               {"email": "owner@bench.example", "password": OWNER_PASSWORD, "token": True})
        assert status == 200, body
        owner = body["token"]
        accounts = (args.attempts + PER_ACCOUNT - 1) // PER_ACCOUNT
        emails = []
        for i in range(accounts):
            email = f"member{i}@bench.example"
            status, body, _ = call(base, "POST", "/v1/members",
                                   {"email": email, "name": f"m{i}", "roles": ["viewer"]}, key=owner)
            assert status == 201, body
            status, body, _ = call(base, "POST", "/v1/invitations/accept",
                                   {"token": body["token"], "password": "the right password"})
            assert status == 200, body
            emails.append(email)
        # Warm up (first argon2 allocations, connection setup).
        for i in range(3):
            call(base, "POST", "/v1/auth/login", {"email": f"warm{i}@bench.example", "password": "x" * 12},
                 headers={"X-Forwarded-For": f"10.9.0.{i + 1}"})
        unknown, wrong = [], []
        for i in range(args.attempts):
            xff = {"X-Forwarded-For": f"10.{i // 250}.{i % 250}.1"}
            status, body, t = call(base, "POST", "/v1/auth/login",
                                   {"email": f"nobody{i}@bench.example", "password": "wrong password!"},
                                   headers=xff)
            assert status == 401, (status, body)
            unknown.append(t)
            xff = {"X-Forwarded-For": f"10.{i // 250}.{i % 250}.2"}
            status, body, t = call(base, "POST", "/v1/auth/login",
                                   {"email": emails[i // PER_ACCOUNT], "password": "wrong password!"},
                                   headers=xff)
            assert status == 401, (status, body)
            wrong.append(t)
        mu, mw = statistics.median(unknown), statistics.median(wrong)
        ratio = mu / mw
        print(f"sign-in, unknown email:  median {mu * 1000:.1f} ms over {len(unknown)} attempts")
        print(f"sign-in, wrong password: median {mw * 1000:.1f} ms over {len(wrong)} attempts")
        print(f"ratio unknown/wrong: {ratio:.3f} ({'within' if abs(ratio - 1) <= 0.05 else 'NOT within'} 5 %)")
        return 0 if abs(ratio - 1) <= 0.05 else 1
    finally:
        server.terminate()
        server.wait(timeout=30)
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
