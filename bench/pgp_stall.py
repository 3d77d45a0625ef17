#!/usr/bin/env python3
"""Does an expensive PGP upload hold up verification?

    python3 bench/pgp_stall.py [BINARY] [--uploads 4] [--subkeys 16]

Makes (with GnuPG) a private key with SUBKEYS encryption subkeys protected
at GnuPG's highest S2K count, starts BINARY (default target/release/keyward)
on a fresh SQLite database with a master key, measures cached verifications
one after another, then again while UPLOADS copies of that key are uploaded
at once. Prints the verification latencies (median, max) before and during,
and the uploads' times. Needs gpg. Standard library only.
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
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MASTER_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"


def gpg(home: str, *args: str, data: bytes | None = None) -> bytes:
    cmd = ["gpg", "--homedir", home, "--batch", "--quiet", "--pinentry-mode", "loopback", *args]
    return subprocess.run(cmd, input=data, capture_output=True, check=True).stdout


def costly_key(subkeys: int) -> str:
    home = tempfile.mkdtemp(prefix="kw-stall-gpg-")
    os.chmod(home, 0o700)
    p = ["--passphrase", "stall test", "--s2k-count", "65011712"]
    gpg(home, *p, "--quick-gen-key", "Stall <stall@example.com>", "ed25519", "sign", "never")
    fpr = re.search(rb"fpr:+([0-9A-F]+):", gpg(home, "--with-colons", "--list-keys")).group(1).decode()
    for _ in range(subkeys):
        gpg(home, *p, "--quick-add-key", fpr, "cv25519", "encr", "never")
    return gpg(home, *p, "--armor", "--export-secret-keys", fpr).decode()


def call(url: str, key: str, body: dict) -> tuple[int, float]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    return status, time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary", nargs="?", default=str(ROOT / "target" / "release" / "keyward"))
    ap.add_argument("--uploads", type=int, default=4)
    ap.add_argument("--subkeys", type=int, default=16)
    args = ap.parse_args()
    armored = costly_key(args.subkeys)
    work = tempfile.mkdtemp(prefix="kw-stall-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, KEYWARD_MASTER_KEY=MASTER_KEY)
    server = subprocess.Popen([args.binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", work,
                               "--log-level", "warn"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    try:
        admin = None
        for line in server.stdout:
            m = re.match(r"^\s+(kw_live_\S+)$", line)
            admin = admin or (m and m.group(1))
            if "listening on" in line:
                break
        base = f"http://127.0.0.1:{port}"
        time.sleep(0.5)
        req = urllib.request.Request(base + "/v1/keys", data=json.dumps({"name": "v", "scopes": ["read"]}).encode(),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             "Authorization": f"Bearer {admin}"})
        secret = json.loads(urllib.request.urlopen(req).read())["secret"]
        verify = lambda: call(base + "/v1/keys/verify", admin, {"key": secret})[1]
        before = [verify() for _ in range(300)]
        done, durations = threading.Event(), []

        def upload(i: int) -> None:
            body = {"name": f"stall {i}", "type": "pgp", "contents": armored, "private": True,
                    "passphrase": "stall test"}
            status, t = call(base + "/v1/pgp-keys", admin, body)
            durations.append((status, t))

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(args.uploads)]
        for t in threads:
            t.start()
        during = []
        while any(t.is_alive() for t in threads):
            during.append(verify())
        for t in threads:
            t.join()
        ms = lambda xs: f"median {statistics.median(xs) * 1000:.2f} ms, max {max(xs) * 1000:.1f} ms"
        print(f"verify before: {ms(before)} over {len(before)}")
        print(f"verify during {args.uploads} uploads of a key with {args.subkeys} subkeys at the highest S2K count: "
              f"{ms(during)} over {len(during)}")
        print("uploads: " + ", ".join(f"{s} in {t:.1f} s" for s, t in sorted(durations, key=lambda d: d[1])))
        return 0
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
