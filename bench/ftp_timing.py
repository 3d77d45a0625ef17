#!/usr/bin/env python3
"""FTP login timing: do an unknown username, a wrong password and disabled
access all cost the same?

Usage (from the repository root; Python 3.11, standard library only):

    python3 bench/ftp_timing.py [--attempts 60] [--no-build] [--workdir DIR]

Starts the release keyward (built with `cargo build --release -p keyward`
unless --no-build) on a fresh SQLite database, makes the FTP server's key
(ftp:authenticate) and an FTP password, raises the lockout threshold so no
wrong password locks the access, then asks `POST /v1/ftp/authenticate`
alternately with an unknown username and with a wrong password (each from
its own address, so the per-address limit is not reached), then, with FTP
access disabled, alternately with an unknown username and with the right
password. Prints the median time of each kind and the ratios to the
unknown username's. Success: every ratio within 10 %.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from signin_timing import ROOT, call  # noqa: E402

TOLERANCE = 0.10


def measure(base, key, attempts, pairs):
    """Alternates the kinds of `pairs` ((name, username, password)); the
    median time of each, by name."""
    times = {name: [] for name, _, _ in pairs}
    for i in range(attempts):
        for j, (name, username, password) in enumerate(pairs):
            body = {"username": username, "password": password, "ip": f"10.{j}.{i // 250}.{i % 250 + 1}"}
            status, answer, t = call(base, "POST", "/v1/ftp/authenticate", body, key=key)
            assert status == 401, (name, status, answer)
            times[name].append(t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attempts", type=int, default=60, help="attempts of each kind")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--workdir")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "keyward"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "keyward")
    work = args.workdir or tempfile.mkdtemp(prefix="keyward-ftp-")
    server = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", work, "--log-level", "warn"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        addr, admin = None, None
        for line in server.stdout:
            admin = admin or next((w for w in line.split() if w.startswith("kw_live_")), None)
            m = re.search(r"listening on http://(\S+)", line)
            if m and "forward-auth" not in line:
                addr = m.group(1)
                break
        base = "http://" + addr
        status, body, _ = call(base, "PATCH", "/v1/workspace", {"lockout": {"threshold": 1000}}, key=admin)
        assert status == 200, body
        status, body, _ = call(base, "POST", "/v1/keys", {"name": "ftpd", "scopes": ["ftp:authenticate"]}, key=admin)
        assert status == 201, body
        ftpd = body["secret"]
        status, body, _ = call(base, "POST", "/v1/integrations/ftp/rotate", key=admin)
        assert status == 200, body
        user, password = body["username"], body["password"]
        # Warm up (first argon2 allocations, connection setup).
        measure(base, ftpd, 3, [("warm", "site_warm", "x")])
        enabled = measure(base, ftpd, args.attempts,
                          [("unknown username", "site_nobody", password), ("wrong password", user, "wrong password")])
        status, body, _ = call(base, "POST", "/v1/integrations/ftp/disable", key=admin)
        assert status == 200, body
        disabled = measure(base, ftpd, args.attempts,
                           [("unknown username", "site_nobody", password), ("disabled access", user, password)])
        ok = True
        for phase, medians in (("enabled", enabled), ("disabled", disabled)):
            unknown = medians["unknown username"]
            for name, median in medians.items():
                ratio = median / unknown
                within = abs(ratio - 1) <= TOLERANCE
                ok &= within
                print(f"FTP login ({phase}), {name}: median {median * 1000:.1f} ms over {args.attempts} attempts, "
                      f"{ratio:.3f} of an unknown username's ({'within' if within else 'NOT within'} 10 %)")
        return 0 if ok else 1
    finally:
        server.terminate()
        server.wait(timeout=30)
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
