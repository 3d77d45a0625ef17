#!/usr/bin/env python3
"""keyward load benchmark (issue 3): keyward against a floor server (the
same answer from a static buffer, no per-request allocation) and a peer
(djangorestframework-api-key under gunicorn), over HTTP on loopback, driven
by wrk with the Lua scripts in bench/lua/.

Usage (from the repository root; Python 3.11, standard library only):

    python3 bench/run.py [--quick] [--keys 10000,1000000] [--duration 10]
                         [--rounds 3] [--threads 2] [--connections 64]
                         [--no-peer] [--no-build] [--peer-max-keys 1000000]
                         [--database sqlite|postgres] [--postgres-url URL]
                         [--only a,b,d] [--workdir DIR] [--keep]
                         [--min-floor-ratio 0.65]

--database postgres puts keyward's databases on PostgreSQL (the server
--postgres-url names, default $KEYWARD_TEST_POSTGRES_URL or
postgres://postgres@127.0.0.1:5432/test): one database per instance, copied
from the seeded one (CREATE DATABASE … TEMPLATE), all dropped at the end;
psql must be on PATH. --only runs just the named scenarios.

What it does:
 1. builds release binaries: flock /tmp/keyward-cargo.lock cargo build
    --release -p keyward -p keyward-bench (skip with --no-build);
 2. installs wrk with apt-get if missing (as root), and for the peer creates
    bench/.venv (django, djangorestframework, djangorestframework-api-key 3.x,
    gunicorn) on demand;
 3. for each N in --keys: seeds a keyward database with N keys
    (keyward-bench seed), a throwaway one whose well-formed tokens are unknown
    to it, and the peer's database with N keys (manage.py seed_keys);
 4. measures memory per cached key on a keyward of its own: RSS before and
    after verifying every one of the N keys once (warm.lua), divided by N;
 5. starts, on copies of the database, keyward (cache capacity above N; the
    keys of (b) put in its cache), keyward-miss (cache of min(1,000, N/100)
    keys), keyward-write (d, e), the floor (keyward-bench floor: axum
    answering every request with the same bytes from a static buffer) and
    the peer (gunicorn, sync workers = cores); measures the usage flush on
    keyward-write (writer busy time after 20,000 distinct keys verified);
    instances left flushing use counts by a run are drained before the next
    (README: "Draining");
 6. runs every scenario for --duration seconds, --rounds times, rotating the
    order each round so keyward, floor and peer runs interleave:
      (a) keyward verify, one cached key        (verify_one.lua)
      (b) keyward verify, keys spread over N, all cached (verify_keys.lua,
          a random sample of at most 100k of the N keys, each verified
          once, untimed, before every round: keyward reads a key again
          once it is older than its cache's maximum age)
      (b-batch) POST /v1/keys/verify/batch, 100 keys of (b)'s sample per
          request (verify_batch.lua): verifications/s against (b)
      (b-miss) the same against keyward-miss: cache misses; (b-miss-c4)
          the same with 4 connections (latency without queueing)
      (c) keyward verify, bad keys: half malformed, half well-formed but
          unknown (tokens of the throwaway database)
      (d) keyward key creation, unique names    (create.lua)
      (d-idem) the same, each with a fresh Idempotency-Key (create.lua,
          KW_IDEMPOTENT): what keeping the answer for a retry costs
      (e) keyward mixed: ~90% verify (spread), ~5% create, ~5% revoke of
          keys created in the run              (mixed.lua)
      (f) floor, the request of (a)             (verify_one.lua)
      (g) peer, one key; (g-spread) peer, keys spread over N (peer.lua)
      (h) keyward forward-auth GET /v1/authorize (authorize.lua); skipped
          with a message while the endpoint answers 404
 7. prints one table (medians over rounds of req/s, p50, p99; the highest
    peak RSS, VmHWM reset before each run, summed over gunicorn's processes;
    keyward/floor and keyward/peer for the verify scenarios), then memory
    per cached key and the SPEC section 3 targets, and writes everything to
    bench/results/<UTC timestamp>.json.

Every wrk run is bounded by -d (and a subprocess timeout); servers are
stopped by their exact PID. Correctness is checked too: wrk's socket errors
and non-2xx answers, and for keyward the verification codes it counted
(GET /metrics deltas), e.g. only VALID in (a) and (b), only MALFORMED and
NOT_FOUND for the keys of (c).

--quick: N=1000, one round of ~2 s per scenario but five of 4 s for (a)
and (f) (the gate's pair, interleaved, after an untimed second of each to
warm them up; two-second rounds on two shared cores vary by ±20 %), the peer only if bench/.venv already has it;
for CI, so the tooling cannot rot (`python3 bench/run.py --quick --no-build`,
about 45 s). Exit status is non-zero if a server failed to start or any
scenario had errors, non-2xx answers or unexpected verification codes (in
every mode).

The floor gate, --min-floor-ratio X (default 0.65 with --quick, off
otherwise; 0 turns it off): for each N, the median over rounds of (a)'s
req/s over (f)'s in the same round must be at least X, else the exit status
is non-zero. It prints one line per N, e.g.
    ok: (a) cached verify is 0.78x the floor (CI requires >= 0.65x; N=1000, median of 3 round(s): 0.77, 0.78, 0.80)
    FAIL: (a) cached verify is 0.58x the floor (CI requires >= 0.65x; N=1000, median of 3 round(s): ...)
If (a) or (f) should have run but has no result, that is a FAIL too.
(The SPEC target is 0.8x, informational; the gate is lower because CI
machines are small and noisy.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LUA = BENCH / "lua"
VENV = BENCH / ".venv"
PEER_DIR = BENCH / "peer"
RESULTS = BENCH / "results"
KEYWARD = ROOT / "target" / "release" / "keyward"
KWBENCH = ROOT / "target" / "release" / "keyward-bench"
BUILD = ["flock", "/tmp/keyward-cargo.lock", "cargo", "build", "--release", "-p", "keyward", "-p", "keyward-bench"]
PEER_PACKAGES = ["django", "djangorestframework", "djangorestframework-api-key>=3,<4", "gunicorn"]
SAMPLE_MAX = 100_000  # keys loaded by each wrk thread for the spread scenarios
BAD_KEYS = 20_000  # lines of the bad-keys file
UNKNOWN_SEED = 10_000  # keys in the throwaway database (the unknown tokens)
MISS_CACHE = 1_000  # cache capacity of the cache-miss keyward (at most N/100)
CACHE_MARGIN = 1_000_000  # room above N for keys created by (d) and (e)
WRITE_SET = 20_000  # keys the write instance verifies: (e) and the usage-flush measurement
GATE_ROUNDS = 5  # --quick: rounds of (a) and (f), the floor gate's pair
GATE_SECONDS = 4  # --quick: seconds per run of the gate's pair
QUICK_MIN_FLOOR_RATIO = 0.65  # --quick's default --min-floor-ratio


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# processes


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


HZ = os.sysconf("SC_CLK_TCK")


def cpu_busy_ticks() -> int:
    """Busy ticks of the whole machine since boot (all CPUs)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal


def proc_cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime stime (threads included)
        except (OSError, ValueError, IndexError):
            pass
    return total


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                kids.append(int(entry))
    return kids


class Server:
    """A server process we started; stopped by its exact PID only."""

    live: list["Server"] = []

    def __init__(self, name: str, argv: list[str], logdir: Path, env: dict | None = None,
                 cwd: Path | None = None, ready_re: str | None = None, ready_url: str | None = None):
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.ready_re, self.ready_url = ready_re, ready_url
        self.out = logdir / f"{name}.out"
        self.err = logdir / f"{name}.err"
        self.proc: subprocess.Popen | None = None
        self.url = ready_url
        self.known_kids: set[int] = set()

    def start(self, timeout: float = 60) -> "Server":
        log(f"starting {self.name}: {' '.join(self.argv)}")
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.cwd)
        Server.live.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} before it was ready; "
                                 f"stderr: {self.err.read_text(errors='replace')[-2000:]}")
            if self.ready_re:
                m = re.search(self.ready_re, self.out.read_text(errors="replace"))
                if m:
                    self.url = m.group(1)
                    return self
            elif self.ready_url and http_status("GET", self.ready_url + "/", timeout=2) is not None:
                self.known_kids.update(children(self.proc.pid))
                return self
            time.sleep(0.1)
        raise BenchError(f"{self.name} was not ready within {timeout:.0f}s; "
                         f"stderr: {self.err.read_text(errors='replace')[-2000:]}")

    def pids(self) -> list[int]:
        if not self.proc:
            return []
        kids = children(self.proc.pid)
        self.known_kids.update(kids)
        return [self.proc.pid, *kids]

    def reset_peak(self) -> None:
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current RSS
            except OSError:
                pass

    def peak_kb(self) -> int:
        return sum(proc_status(p).get("VmHWM", 0) for p in self.pids())

    def rss_kb(self) -> int:
        return sum(proc_status(p).get("VmRSS", 0) for p in self.pids())

    def kill(self) -> None:
        """SIGKILL to our PID (keyward-mem: skips its shutdown flush)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self in Server.live:
            Server.live.remove(self)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if not self.proc:
            return
        if self.proc.poll() is None:
            self.known_kids.update(children(self.proc.pid))
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not exit within 20s of SIGTERM (flushing use counts?); "
                    f"killing PID {self.proc.pid}")
                self.proc.kill()
                self.proc.wait(timeout=10)
        for kid in self.known_kids:  # gunicorn workers left behind, if any
            try:
                with open(f"/proc/{kid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) not in (1, self.proc.pid):
                        continue
                with open(f"/proc/{kid}/cmdline", "rb") as f:
                    if b"gunicorn" not in f.read():
                        continue
                os.kill(kid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        if self in Server.live:
            Server.live.remove(self)


def stop_all() -> None:
    for s in list(reversed(Server.live)):
        try:
            s.stop()
        except Exception as e:  # keep stopping the others
            log(f"stopping {s.name}: {e}")


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None,
         timeout: float = 10) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_status(method: str, url: str, timeout: float = 5) -> int | None:
    try:
        return http(method, url, timeout=timeout)[0]
    except (OSError, urllib.error.URLError):
        return None


def redis_answers(url: str) -> bool:
    """Whether a Redis answers PING at url (redis://host:port)."""
    rest = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = rest.partition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(url: str) -> dict[str, float]:
    _, body = http("GET", url + "/metrics")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        m = re.match(r'keyward_verify_duration_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            out["le:" + m.group(1)] = float(m.group(2))
        m = re.match(r'keyward_verifications_total\{code="(\w+)"\} (\S+)', line)
        if m:
            out[m.group(1)] = float(m.group(2))
        m = re.match(r"keyward_cache_(hits|misses)_total (\S+)", line)
        if m:
            out["cache_" + m.group(1)] = float(m.group(2))
    return out


# --------------------------------------------------------------------------
# setup


def build() -> None:
    log("building: " + " ".join(BUILD))
    for attempt in range(3):
        r = subprocess.run(BUILD, cwd=ROOT, timeout=1800)
        if r.returncode == 0:
            return
        log(f"build failed (attempt {attempt + 1}); retrying in 60s")
        time.sleep(60)
    raise BenchError("cargo build failed")


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk missing: apt-get install -y wrk")
        subprocess.run(["apt-get", "update", "-qq"], timeout=600, check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], timeout=600, check=False,
                       stdout=subprocess.DEVNULL)
    wrk = shutil.which("wrk")
    if not wrk:
        raise BenchError("wrk is not installed (apt-get install -y wrk)")
    return wrk


def venv_python() -> Path:
    return VENV / "bin" / "python"


def peer_ready() -> bool:
    py = venv_python()
    return py.exists() and subprocess.run(
        [str(py), "-c", "import django, rest_framework, rest_framework_api_key, gunicorn"],
        capture_output=True, timeout=60).returncode == 0


def ensure_venv(packages: list[str]) -> Path:
    py = venv_python()
    if not py.exists():
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
    log("pip install " + " ".join(packages))
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
                   check=True, timeout=900)
    return py


def venv_versions() -> dict[str, str]:
    code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "['django', 'djangorestframework', 'djangorestframework-api-key', 'gunicorn']}))")
    r = subprocess.run([str(venv_python()), "-c", code], capture_output=True, text=True, timeout=60)
    return json.loads(r.stdout) if r.returncode == 0 else {}


class Databases:
    """keyward's databases: SQLite files, or PostgreSQL databases named after
    those files' paths in the work directory (created on first use)."""

    def __init__(self, kind: str, work: Path, pg_url: str):
        self.kind, self.work, self.pg_url = kind, work, pg_url
        self.created: list[str] = []
        self.tag = "kwb_" + secrets.token_hex(4)

    def _name(self, db: Path) -> str:
        rel = str(db.relative_to(self.work)).removesuffix(".db")
        return (self.tag + "_" + re.sub(r"[^a-z0-9]+", "_", rel.lower())).strip("_")[:63]

    def _psql(self, sql: str) -> None:
        r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.pg_url, "-c", sql],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise BenchError(f"psql {sql!r}: {r.stderr.strip()}")

    def _pg(self, name: str) -> str:
        base, _, query = self.pg_url.partition("?")
        return base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")

    def url(self, db: Path) -> str:
        if self.kind == "sqlite":
            return f"sqlite://{db}"
        name = self._name(db)
        if name not in self.created:
            self._psql(f'CREATE DATABASE "{name}"')
            self.created.append(name)
        return self._pg(name)

    def copy(self, src: Path, dst: Path) -> None:
        if self.kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                if Path(str(src) + suffix).exists():
                    shutil.copyfile(str(src) + suffix, str(dst) + suffix)
            return
        name = self._name(dst)
        self._psql(f'CREATE DATABASE "{name}" TEMPLATE "{self._name(src)}"')
        self.created.append(name)

    def drop_all(self) -> None:
        for name in reversed(self.created):
            try:
                self._psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except (BenchError, subprocess.TimeoutExpired) as e:
                log(f"could not drop {name}: {e}")
        self.created.clear()


DBS: Databases | None = None  # set in main


def seed_keyward(db: Path, hash_key: str, count: int, keys_out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(KWBENCH), "seed", "--database-url", DBS.url(db), "--hash-key", hash_key,
         "--count", str(count), "--keys-out", str(keys_out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_seed(p: subprocess.Popen, what: str, timeout: float) -> str:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise BenchError(f"{what} took over {timeout:.0f}s")
    if p.returncode != 0:
        raise BenchError(f"{what} failed ({p.returncode}): {err[-2000:]}")
    return out


def peer_env(db: Path) -> dict:
    return {**os.environ, "PEER_DB": str(db), "PEER_SECRET_KEY": secrets.token_urlsafe(40),
            "DJANGO_SETTINGS_MODULE": "peer.settings", "PYTHONDONTWRITEBYTECODE": "1"}


def seed_peer(db: Path, count: int, keys_out: Path) -> subprocess.Popen:
    py = str(venv_python())
    env = peer_env(db)
    subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=PEER_DIR, env=env, check=True, timeout=300)
    return subprocess.Popen([py, "manage.py", "seed_keys", "--count", str(count), "--keys-out", str(keys_out)],
                            cwd=PEER_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_lines(path: Path) -> list[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def first_line(path: Path) -> str:
    with open(path) as f:
        return f.readline().strip()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def sample_file(src: Path, dst: Path, rng: random.Random) -> Path:
    lines = read_lines(src)
    if len(lines) > SAMPLE_MAX:
        lines = rng.sample(lines, SAMPLE_MAX)
    return write_lines(dst, lines)


def bad_keys(unknown: list[str], rng: random.Random, count: int = BAD_KEYS) -> list[str]:
    """Half malformed (checksum broken by one changed character, truncated,
    too short, not a key at all), half well-formed but unknown."""
    alnum = string.ascii_letters + string.digits
    out = []
    for i in range(count // 2):
        t = rng.choice(unknown)
        kind = i % 4
        if kind == 0:
            pos = rng.randrange(8, len(t))
            c = rng.choice([x for x in alnum if x != t[pos]])
            out.append(t[:pos] + c + t[pos + 1:])
        elif kind == 1:
            out.append(t[: -rng.randint(1, 20)])
        elif kind == 2:
            out.append(t[:8] + "".join(rng.choices(alnum, k=20)))
        else:
            out.append("not-a-key-" + "".join(rng.choices(alnum, k=rng.randint(5, 50))))
    out += [rng.choice(unknown) for _ in range(count - len(out))]
    rng.shuffle(out)
    return out


# --------------------------------------------------------------------------
# load runs


def parse_wrk(stdout: str) -> dict:
    m = re.search(r"^WRK_RESULT (\{.*\})$", stdout, re.M)
    if not m:
        raise BenchError(f"wrk printed no WRK_RESULT line:\n{stdout[-2000:]}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
    return r


def wrk_cmd(args, script: str, url: str, duration: float, connections: int | None = None) -> list[str]:
    return ["wrk", f"-t{args.threads}", f"-c{connections or args.connections}", f"-d{duration}s",
            "--timeout", "5s", "-s", str(LUA / script), url]


def run_wrk(args, script: str, url: str, env: dict, duration: float, connections: int | None = None) -> dict:
    cmd = wrk_cmd(args, script, url, duration, connections)
    env = {**env, "KW_CONNECTIONS": str(connections or args.connections)}
    r = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True,
                       timeout=duration + 60)
    if r.returncode != 0:
        raise BenchError(f"wrk failed ({r.returncode}): {r.stderr[-2000:]} {r.stdout[-2000:]}")
    return parse_wrk(r.stdout)


def warm(args, kw: Server, env: dict, n: int) -> dict:
    """Verify each of the N keys once; wrk is interrupted (SIGINT to its PID)
    once every thread has sent its stripe."""
    bound = max(60, min(900, n // 1000 + 60))
    cmd = wrk_cmd(args, "warm.lua", kw.url, bound)
    p = subprocess.Popen(cmd, env={**os.environ, **env, "KW_THREADS": str(args.threads)},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    lines, done = [], 0
    assert p.stdout is not None
    for line in p.stdout:
        lines.append(line)
        if line.strip() == "WARM_DONE":
            done += 1
            if done == args.threads:
                p.send_signal(signal.SIGINT)
    p.wait(timeout=bound + 60)
    elapsed = time.monotonic() - started
    r = parse_wrk("".join(lines))
    r["seconds"] = elapsed
    if done < args.threads:
        raise BenchError(f"warm-up did not finish within {bound}s")
    return r


def probe_authorize(url: str, token: str, verifier: str) -> tuple[int, bytes]:
    return http("GET", url + "/v1/authorize", headers={
        "Authorization": f"Bearer {token}", "X-Keyward-Verifier-Key": verifier,
        "X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/api/ping"})


def histogram_p99_ms(delta: dict[str, float]) -> float | None:
    """Upper bound of the bucket holding the 99th percentile of keyward's
    keyward_verify_duration_seconds over a run (every verification, the
    caller's admin key included)."""
    buckets = sorted((float(k[3:]), v) for k, v in delta.items() if k.startswith("le:"))
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    for le, count in buckets:
        if count >= 0.99 * total:
            return le * 1000
    return None


def settle_writer(url: str, admin: str, limit: float = 600) -> tuple[float, float, list[str]]:
    """Wait until keyward's writer is idle. A key creation waits behind
    whatever holds the writer (usage flushes: one transaction per flush, the
    next one taking every use counted meanwhile), so creations are repeated,
    1.2 s apart (a flush tick in between), until two in a row are quick.
    Returns (seconds until idle, including ~1.5 s of probing; the longest
    single creation; the failed creations' answers)."""
    t0, quick, longest, errors = time.monotonic(), 0, 0.0, []
    while time.monotonic() - t0 < limit:
        t = time.monotonic()
        st, body = http("POST", url + "/v1/keys", {"name": f"settle-{secrets.token_hex(6)}"},
                        {"Authorization": f"Bearer {admin}"}, timeout=limit)
        took = time.monotonic() - t
        longest = max(longest, took)
        if st != 201:
            errors.append(f"POST /v1/keys answered {st} after {took:.1f}s: {body[:120].decode(errors='replace')}")
        quick = quick + 1 if st == 201 and took < 0.3 else 0
        if quick == 2:
            return time.monotonic() - t0, longest, errors
        time.sleep(1.2)
    raise BenchError(f"keyward's writer still busy after {limit:.0f}s; {errors}")


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# scenario id -> (label, target)
LABELS = {
    "a": ("(a) verify, 1 cached key", "keyward"),
    "b": ("(b) verify, N keys spread, cached", "keyward"),
    "b-batch": ("(b-batch) batch verify, 100 of N per request", "keyward"),
    "b-miss": ("(b-miss) verify, spread, cache 1k: misses", "keyward"),
    "b-miss-c4": ("(b-miss-c4) the same, 4 connections", "keyward"),
    "c": ("(c) verify, bad keys (½ malformed, ½ unknown)", "keyward"),
    "d": ("(d) create key (durable)", "keyward"),
    "d-idem": ("(d-idem) create key with an Idempotency-Key", "keyward"),
    "e": ("(e) mixed 90% verify/5% create/5% revoke", "keyward"),
    "h": ("(h) forward-auth GET /v1/authorize, 1 key", "keyward"),
    "rl": ("(rl) verify, 1 key, auto-applied rate limit", "keyward"),
    "rl-redis": ("(rl-redis) the same, limits in Redis", "keyward"),
    "f": ("(f) floor, request of (a)", "floor"),
    "g": ("(g) peer, 1 key", "peer"),
    "g-spread": ("(g-spread) peer, N keys spread", "peer"),
}
ORDER = ["a", "f", "g", "rl", "rl-redis", "b", "b-batch", "g-spread", "b-miss", "b-miss-c4", "c", "h", "d", "d-idem", "e"]
FLOOR_OF = {"a": "f", "b": "f", "b-miss": "f", "c": "f", "h": "f", "rl": "f", "rl-redis": "f"}
PLAIN_OF = {"rl": "a", "rl-redis": "a"}  # compared with the plain cached verify
BATCH = 100  # verifications per request of (b-batch)
CONNECTIONS = {"b-miss-c4": 4}  # scenarios with their own wrk -c
PEER_OF = {"a": "g", "b": "g-spread", "b-miss": "g-spread", "h": "g"}


def check_codes(sid: str, delta: dict[str, float], run: dict, conns: int) -> list[str]:
    """Problems in keyward's verification counts (answers to verify and
    authorize only: the caller's own admin key is counted apart, in
    keyward_caller_authentications_total)."""
    codes = {k: v for k, v in delta.items() if not k.startswith(("cache_", "le:")) and v}
    problems = []
    if sid in ("a", "b", "b-batch", "b-miss", "b-miss-c4", "d", "d-idem", "e", "h", "rl", "rl-redis"):
        other = {k: v for k, v in codes.items() if k != "VALID"}
        if other:
            problems.append(f"unexpected codes {other}")
    elif sid == "c":
        other = {k: v for k, v in codes.items() if k not in ("VALID", "MALFORMED", "NOT_FOUND")}
        if other:
            problems.append(f"unexpected codes {other}")
        if codes.get("VALID", 0):
            problems.append(f"{codes['VALID']:.0f} bad keys were VALID")
        if not codes.get("MALFORMED") or not codes.get("NOT_FOUND"):
            problems.append(f"expected both MALFORMED and NOT_FOUND, got {codes}")
    return problems


def run_size(args, n: int, work: Path, hash_key: str, unknown: list[str], use_peer: bool,
             rng: random.Random) -> dict:
    d = work / f"n{n}"
    d.mkdir()
    res: dict = {"N": n, "notes": [], "problems": [], "runs": {}}
    # --- seeding (keyward and peer in parallel)
    kw_db, kw_keys = d / "keyward.db", d / "keys.txt"
    t0 = time.monotonic()
    log(f"N={n}: seeding keyward" + (" and the peer" if use_peer else ""))
    kp = seed_keyward(kw_db, hash_key, n, kw_keys)
    pp = None
    peer_n = min(n, args.peer_max_keys)
    if use_peer:
        if peer_n < n:
            note = f"peer seeded with {peer_n} keys, not {n} (--peer-max-keys)"
            log(note)
            res["notes"].append(note)
        peer_db, peer_keys = d / "peer.db", d / "peer-keys.txt"
        t_peer = time.monotonic()
        pp = seed_peer(peer_db, peer_n, peer_keys)
    seeded = json.loads(finish_seed(kp, "keyward-bench seed", timeout=max(300, n / 2000)).strip().splitlines()[-1])
    res["seed_seconds"] = round(time.monotonic() - t0, 1)
    admin = seeded["adminKey"]
    if pp:
        out = finish_seed(pp, "peer seed_keys", timeout=max(600, n / 1000))
        res["peer_seed_seconds"] = round(time.monotonic() - t_peer, 1)
        res["peer_keys"] = peer_n
        log(f"peer: {out.strip()}")
    log(f"N={n}: keyward seeded in {res['seed_seconds']}s")
    tokens_sample = sample_file(kw_keys, d / "keys-sample.txt", rng)
    first_token = first_line(kw_keys)
    bad = write_lines(d / "bad-keys.txt", bad_keys(unknown, rng))
    write_set = write_lines(d / "keys-write-set.txt", read_lines(tokens_sample)[:WRITE_SET])
    mem_db, miss_db, write_db = d / "keyward-mem.db", d / "keyward-miss.db", d / "keyward-write.db"
    # Every copy before any server opens the seeded database: PostgreSQL
    # copies a database only while no one is connected to it.
    redis_db = d / "keyward-redis.db"
    for copy in (mem_db, miss_db, write_db, redis_db):
        DBS.copy(kw_db, copy)

    # --- servers
    # Four keywards on copies of one database, default settings but the cache
    # capacity: keyward-mem (memory per cached key; killed right after),
    # keyward (a, b, c, h), keyward-miss (b-miss: a cache of N/100 keys, at
    # most 1,000) and keyward-write (d, e, and the usage-flush measurement).
    # Verifying many distinct keys leaves keyward flushing their use counts
    # for a long time afterwards (a core busy, writes waiting), which would
    # slow down whatever runs next: such an instance is drained (waited for
    # until its writer is idle) before the next run, and the wait reported.
    def keyward(name: str, db: Path, capacity: int, extra: list[str] | None = None) -> Server:
        (d / name).mkdir()
        return Server(name, [str(KEYWARD), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(d / name),
                             "--hash-key", hash_key, "--database-url", DBS.url(db),
                             "--log-level", "warn", "--cache-capacity", str(capacity)] + (extra or []),
                      d, ready_re=r"keyward listening on (http://\S+)").start()

    def limited_key(srv: Server) -> str:
        """A key with an auto-applied limit too high to refuse anything:
        every verification checks and spends it."""
        limit = {"name": "requests", "limit": 10 ** 12, "durationMs": 60_000, "autoApply": True}
        st, body = http("POST", srv.url + "/v1/keys", {"name": f"limited-{secrets.token_hex(4)}",
                                                       "ratelimits": [limit]},
                        {"Authorization": f"Bearer {admin}"})
        if st != 201:
            raise BenchError(f"{srv.name} refused a rate-limited key: {st} {body[:300]!r}")
        return json.loads(body)["secret"]

    auth = {"KW_AUTH": f"Bearer {admin}"}
    # --- memory per cached key: RSS before and after verifying all N keys
    kw_mem = keyward("keyward-mem", mem_db, n + CACHE_MARGIN)
    st, body = http("POST", kw_mem.url + "/v1/keys/verify", {"key": first_token},
                    {"Authorization": f"Bearer {admin}"})
    if st != 200 or json.loads(body).get("code") != "VALID":
        raise BenchError(f"keyward did not verify a seeded key: {st} {body[:300]!r}")
    time.sleep(1.5)
    before = kw_mem.rss_kb()
    m0 = metrics(kw_mem.url)
    w = warm(args, kw_mem, {**auth, "KW_KEYS_FILE": str(kw_keys)}, n)
    time.sleep(1.5)
    after = kw_mem.rss_kb()
    m1 = metrics(kw_mem.url)
    # Right after N distinct keys were verified, keyward is flushing their use
    # counts: how long does a key creation take now (at most 120 s)?
    t = time.monotonic()
    try:
        st, body = http("POST", kw_mem.url + "/v1/keys", {"name": "after-warm"},
                        {"Authorization": f"Bearer {admin}"}, timeout=120)
    except OSError as e:  # timeout
        st, body = 0, str(e).encode()
    took = time.monotonic() - t
    res["create_after_warm"] = {"status": st, "seconds": round(took, 2)}
    msg = (f"a key creation right after verifying all {n} keys took {took:.1f}s and answered "
           f"{st or 'nothing'}" + (f" {body[:120].decode(errors='replace')}" if st != 201 else ""))
    log(f"N={n}: {msg}")
    if st != 201:
        res["problems"].append(msg)
    elif took > 1:
        res["notes"].append(msg)
    kw_mem.kill()  # SIGKILL: no shutdown flush of N keys' use counts
    misses = m1.get("cache_misses", 0) - m0.get("cache_misses", 0)
    res["memory"] = {"rss_before_kb": before, "rss_after_kb": after,
                     "bytes_per_cached_key": round((after - before) * 1024 / n, 1),
                     "warm_cache_misses": misses, "warm_seconds": round(w["seconds"], 1),
                     "warm_rps": round(w["rps"]), "warm_p99_ms": w["latency_us"]["p99"] / 1000}
    log(f"N={n}: RSS {before} kB -> {after} kB after warming {n} keys "
        f"({res['memory']['bytes_per_cached_key']} B/key, {misses:.0f} cache misses, {w['seconds']:.1f}s)")
    if misses < 0.95 * n:
        res["notes"].append(f"warm-up caused only {misses:.0f} cache misses for {n} keys")

    kw = keyward("keyward", kw_db, n + CACHE_MARGIN)
    kw_miss = keyward("keyward-miss", miss_db, max(16, min(MISS_CACHE, n // 100)))
    kw_write = keyward("keyward-write", write_db, n + CACHE_MARGIN)
    def wanted(sid: str) -> bool:
        return not args.only or sid in args.only

    kw_redis = None
    if wanted("rl-redis") and redis_answers(args.redis_url):
        kw_redis = keyward("keyward-redis", redis_db, n + CACHE_MARGIN, ["--redis-url", args.redis_url])
    elif wanted("rl-redis"):
        msg = f"(rl-redis) skipped: no Redis answers at {args.redis_url}"
        log(msg)
        res["notes"].append(msg)
    floor = Server("floor", [str(KWBENCH), "floor", "--listen", "127.0.0.1:0"], d,
                   ready_re=r"floor listening on (http://\S+)").start()
    peer = None
    if use_peer:
        port = free_port()
        workers = os.cpu_count() or 2
        peer = Server("peer", [str(VENV / "bin" / "gunicorn"), "--workers", str(workers), "--worker-class", "sync",
                               "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
                               "peer.wsgi:application"],
                      d, env=peer_env(d / "peer.db"), cwd=PEER_DIR, ready_url=f"http://127.0.0.1:{port}").start()
        res["peer_workers"] = workers
        peer_token = first_line(d / "peer-keys.txt")
        peer_sample = sample_file(d / "peer-keys.txt", d / "peer-sample.txt", rng)
        st, body = http("GET", peer.url + "/api/ping", headers={"Authorization": f"Api-Key {peer_token}"})
        if st != 200:
            raise BenchError(f"peer refused its own key: {st} {body[:200]!r}")

    # (b) verifies cached keys: put its sample in keyward's cache
    warm(args, kw, {**auth, "KW_KEYS_FILE": str(tokens_sample)}, len(read_lines(tokens_sample)))
    dirty = {kw}

    # --- usage flush, on the write instance (default flush interval): verify
    # K distinct keys once, then see how long keyward's writer stays busy
    # flushing their use counts (key creations wait meanwhile).
    k = len(read_lines(write_set))
    warm(args, kw_write, {**auth, "KW_KEYS_FILE": str(write_set)}, k)
    t_flush = time.monotonic()
    busy, longest, errs = settle_writer(kw_write.url, admin)
    net = max(0.0, busy - 1.3)  # less the probing (one 1.2 s pause and two quick creations)
    res["usage_flush"] = {"keys": k, "writer_busy_s": round(net, 1), "longest_create_s": round(longest, 2),
                          "keys_per_s": round(k / net) if net > 1 else None, "create_errors": errs}
    note = (f"usage flush: after {k} distinct keys were verified, keyward's writer stayed busy "
            + (f"{net:.1f}s (≈{k / net:.0f} keys/s)" if net > 1 else "under ~1s")
            + f"; a key creation meanwhile took up to {longest:.1f}s")
    log(f"N={n}: {note}" + (f"; errors: {errs}" if errs else ""))
    res["notes"].append(note)
    for e in errs:
        res["problems"].append(f"during the usage flush: {e}")

    # --- scenarios
    scen: dict[str, tuple[Server, str, dict]] = {
        "a": (kw, "verify_one.lua", {**auth, "KW_TOKEN": first_token}),
        "b": (kw, "verify_keys.lua", {**auth, "KW_KEYS_FILE": str(tokens_sample)}),
        "b-batch": (kw, "verify_batch.lua", {**auth, "KW_KEYS_FILE": str(tokens_sample)}),
        "b-miss": (kw_miss, "verify_keys.lua", {**auth, "KW_KEYS_FILE": str(tokens_sample)}),
        "b-miss-c4": (kw_miss, "verify_keys.lua", {**auth, "KW_KEYS_FILE": str(tokens_sample)}),
        "c": (kw, "verify_keys.lua", {**auth, "KW_KEYS_FILE": str(bad)}),
        "d": (kw_write, "create.lua", auth),
        "d-idem": (kw_write, "create.lua", {**auth, "KW_IDEMPOTENT": "1"}),
        "e": (kw_write, "mixed.lua", {**auth, "KW_KEYS_FILE": str(write_set)}),
        "h": (kw, "authorize.lua", {"KW_TOKEN": first_token, "KW_VERIFIER_KEY": admin}),
        "f": (floor, "verify_one.lua", {**auth, "KW_TOKEN": first_token}),
    }
    if wanted("rl"):
        scen["rl"] = (kw, "verify_one.lua", {**auth, "KW_TOKEN": limited_key(kw)})
    if kw_redis:
        scen["rl-redis"] = (kw_redis, "verify_one.lua", {**auth, "KW_TOKEN": limited_key(kw_redis)})
    if peer:
        scen["g"] = (peer, "peer.lua", {"KW_TOKEN": peer_token})
        scen["g-spread"] = (peer, "peer.lua", {"KW_KEYS_FILE": str(peer_sample)})
    status, body = probe_authorize(kw.url, first_token, admin)
    if status == 404:
        msg = "(h) forward-auth skipped: GET /v1/authorize answers 404 (not implemented yet)"
        log(msg)
        res["notes"].append(msg)
        del scen["h"]
    elif status != 200:
        msg = f"(h) forward-auth skipped: GET /v1/authorize answered {status} {body[:200]!r} to a valid key"
        log(msg)
        res["problems"].append(msg)
        del scen["h"]
    order = [s for s in ORDER if s in scen and (not args.only or s in args.only)]
    for sid in order:
        res["runs"][sid] = []
    # Rounds per scenario: --rounds, more for the floor gate's pair with
    # --quick; once only those are left, they alternate by themselves.
    rounds = {sid: max(args.rounds, args.gate_rounds) if sid in ("a", "f") else args.rounds for sid in order}
    if args.gate_rounds:
        # The gate's pair warms up first (connections, caches, allocator),
        # untimed: the gate compares steady states.
        for sid in ("a", "f"):
            if sid in order:
                srv, script, env = scen[sid]
                run_wrk(args, script, srv.url, {**env, "KW_RUN_ID": "warm-up"}, 1)
    for rnd in range(max(rounds.values(), default=0)):
        active = [sid for sid in order if rounds[sid] > rnd]
        k = rnd % len(active)
        for sid in active[k:] + active[:k]:
            srv, script, env = scen[sid]
            if not srv.alive():
                raise BenchError(f"{srv.name} died (exit {srv.proc.returncode}); stderr: "
                                 f"{srv.err.read_text(errors='replace')[-2000:]}")
            run_id = f"{int(time.time())}{secrets.token_hex(3)}"
            is_kw = srv in (kw, kw_miss, kw_write, kw_redis)
            if sid == "b":
                # Every key of (b) cached when its round starts, as its name
                # says: keyward reads a key again once it is older than its
                # cache's maximum age (60 s by default), and rounds are
                # further apart than that. Untimed; the flush it causes is
                # drained below.
                warm(args, srv, env, len(read_lines(tokens_sample)))
                dirty.add(srv)
            # drain instances still flushing use counts; write runs start with an idle writer
            drained = {}
            for inst in sorted(dirty | ({srv} if sid in ("d", "d-idem", "e") else set()), key=lambda x: x.name):
                busy, _, errs = settle_writer(inst.url, admin)
                drained[inst.name] = round(busy, 1)
                res["problems"] += [f"draining {inst.name} before {sid}, round {rnd + 1}: {e}" for e in errs]
            dirty.clear()
            wait = drained.get(srv.name)
            before_m = metrics(srv.url) if is_kw else {}
            srv.reset_peak()
            pids = srv.pids()
            busy0, srv0, wrk0, t0 = cpu_busy_ticks(), proc_cpu_ticks(pids), children_cpu_s(), time.monotonic()
            # The gate's pair runs longer with --quick: steadier ratios.
            duration = max(args.duration, GATE_SECONDS) if args.gate_rounds and sid in ("a", "f") else args.duration
            r = run_wrk(args, script, srv.url, {**env, "KW_RUN_ID": run_id}, duration, CONNECTIONS.get(sid))
            busy1, srv1, wrk1, t1 = cpu_busy_ticks(), proc_cpu_ticks(pids), children_cpu_s(), time.monotonic()
            r["peak_rss_kb"] = srv.peak_kb()
            r["connections"] = CONNECTIONS.get(sid) or args.connections
            srv_s = (srv1 - srv0) / HZ
            r["server_cpu_us_per_req"] = srv_s * 1e6 / r["requests"] if r["requests"] else None
            r["server_cpu_pct"] = 100 * srv_s / (t1 - t0)
            r["wrk_cpu_pct"] = 100 * (wrk1 - wrk0) / (t1 - t0)
            # CPU used by everything else on the machine during the run (e.g. a build)
            r["other_cpu_pct"] = max(0.0, 100 * ((busy1 - busy0) / HZ - srv_s - (wrk1 - wrk0)) / (t1 - t0))
            problems = []
            errs = {k2: v for k2, v in r["errors"].items() if v}
            if errs:
                problems.append(f"wrk errors {errs} (status = non-2xx/3xx answers)")
            if r["requests"] == 0:
                problems.append("no request completed")
            if is_kw:
                time.sleep(0.3)
                after_m = metrics(srv.url)
                delta = {k2: after_m.get(k2, 0) - before_m.get(k2, 0) for k2 in after_m}
                r["codes"] = {k2: v for k2, v in delta.items() if v}
                r["cache_misses_per_request"] = delta.get("cache_misses", 0) / max(1, r["requests"])
                r["server_verify_p99_ms"] = histogram_p99_ms(delta)
                r["codes"] = {k2: v for k2, v in r["codes"].items() if not k2.startswith("le:")}
                problems += check_codes(sid, delta, r, args.connections)
            if not srv.alive():
                problems.append(f"{srv.name} died during the run")
            r["problems"] = problems
            r["round"] = rnd
            r["drained_before_s"] = drained
            if sid in ("b", "b-miss", "b-miss-c4", "e"):  # many distinct keys verified
                dirty.add(srv)
            res["runs"][sid].append(r)
            lat = r["latency_us"]
            log(f"N={n} round {rnd + 1} {sid:8} {srv.name:12} {r['rps']:9.0f} req/s  "
                f"p50 {lat['p50'] / 1000:.2f} ms  p99 {lat['p99'] / 1000:.2f} ms  "
                f"peak {r['peak_rss_kb'] / 1024:.0f} MB  server CPU {r['server_cpu_pct']:.0f}% "
                f"wrk {r['wrk_cpu_pct']:.0f}% others {r['other_cpu_pct']:.0f}%"
                + (f"  (drained first: {', '.join(f'{k} {v:.0f}s' for k, v in drained.items())})"
                   if any(v > 3 for v in drained.values()) else "")
                + (f"  PROBLEMS: {problems}" if problems else ""))
            time.sleep(args.pause)

    # A run far below the other rounds of its scenario means a stall
    for sid, runs in res["runs"].items():
        med = median([r["rps"] for r in runs])
        for r in runs:
            if len(runs) > 1 and med and r["rps"] < 0.2 * med:
                r["problems"].append(f"stalled: {r['rps']:.0f} req/s against a median of {med:.0f}")

    for s in (peer, floor, kw_redis, kw_write, kw_miss, kw):
        if s:
            s.stop()
    return res


# --------------------------------------------------------------------------
# report


def summarize(sizes: list[dict]) -> list[dict]:
    rows = []
    for res in sizes:
        med = {}
        for sid, runs in res["runs"].items():
            med[sid] = {
                "rps": median([r["rps"] for r in runs]),
                "p50_ms": median([r["latency_us"]["p50"] / 1000 for r in runs]),
                "p99_ms": median([r["latency_us"]["p99"] / 1000 for r in runs]),
                "peak_rss_mb": max(r["peak_rss_kb"] for r in runs) / 1024,
                "cpu_us_per_req": median([r.get("server_cpu_us_per_req") for r in runs]),
                "miss_per_req": median([r.get("cache_misses_per_request") for r in runs]),
                "server_verify_p99_ms": median([r.get("server_verify_p99_ms") for r in runs]),
                "other_cpu_pct_max": max(r.get("other_cpu_pct", 0) for r in runs),
                "problems": sum(len(r["problems"]) for r in runs),
                "rounds": len(runs),
                "connections": runs[0]["connections"],
            }
        for sid in ORDER:
            if sid not in med:
                continue
            label, target = LABELS[sid]
            row = {"scenario": sid, "label": label, "target": target, "N": res["N"], **med[sid]}
            if target == "peer" and res.get("peer_keys", res["N"]) != res["N"]:
                row["N_peer"] = res["peer_keys"]
            f, p = FLOOR_OF.get(sid), PEER_OF.get(sid)
            if f in med and med[f]["rps"]:
                row["vs_floor"] = med[sid]["rps"] / med[f]["rps"]
            if p in med and med[p]["rps"]:
                row["vs_peer"] = med[sid]["rps"] / med[p]["rps"]
            plain = PLAIN_OF.get(sid)
            if plain in med and med[plain]["rps"]:
                row["vs_plain"] = med[sid]["rps"] / med[plain]["rps"]
            rows.append(row)
    return rows


def print_table(rows: list[dict], args, sizes: list[dict]) -> None:
    other = max((r["other_cpu_pct_max"] for r in rows), default=0)
    head = (f"keyward load benchmark: wrk -t{args.threads} -c{args.connections}, {args.duration:g}s per run, "
            f"{args.rounds} round(s)"
            + (f" ({max(args.rounds, args.gate_rounds)} for a and f)" if args.gate_rounds > args.rounds else "")
            + f" interleaved (medians; peak RSS = max VmHWM), {args.database}, loopback, "
            f"{os.cpu_count()} cores shared by wrk and the server; other processes used up to "
            f"{other:.0f}% of a core during a run")
    cols = [("scenario", 46), ("target", 8), ("N", 8), ("req/s", 9), ("p50 ms", 7), ("p99 ms", 7),
            ("peakRSS MB", 10), ("CPU us/req", 10), ("miss/req", 8), ("kw/floor", 8), ("kw/peer", 8), ("ok", 3)]
    print()
    print(head)
    print("  ".join(name.rjust(w) if i > 1 else name.ljust(w) for i, (name, w) in enumerate(cols)))
    print("-" * (sum(w for _, w in cols) + 2 * (len(cols) - 1)))
    for r in rows:
        n = f"{r['N']}" if "N_peer" not in r else f"{r['N_peer']}"
        vals = [r["label"], r["target"], n, f"{r['rps']:.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['cpu_us_per_req']:.1f}" if r.get("cpu_us_per_req") is not None else "",
                f"{r['miss_per_req']:.2f}" if r.get("miss_per_req") is not None else "",
                f"{r['vs_floor']:.2f}" if "vs_floor" in r else "",
                f"{r['vs_peer']:.1f}x" if "vs_peer" in r else "",
                "yes" if not r["problems"] else "NO"]
        print("  ".join(v.rjust(w) if i > 1 else v.ljust(w) for i, (v, (_, w)) in enumerate(zip(vals, cols))))
    print()
    for res in sizes:
        m = res.get("memory", {})
        line = (f"N={res['N']}: {m.get('bytes_per_cached_key')} B of RSS per cached key "
                f"({m.get('rss_before_kb', 0) / 1024:.0f} -> {m.get('rss_after_kb', 0) / 1024:.0f} MB "
                f"after verifying all N once: {m.get('warm_rps')} req/s, p99 {m.get('warm_p99_ms')} ms); "
                f"seeded in {res.get('seed_seconds')}s")
        if "peer_seed_seconds" in res:
            line += f", peer ({res['peer_keys']} keys) in {res['peer_seed_seconds']}s"
        print(line)
        for note in res["notes"]:
            print(f"N={res['N']}: note: {note}")


def targets(rows: list[dict]) -> list[str]:
    """The SPEC section 3 bars this benchmark can see (informational)."""
    by = {(r["scenario"], r["N"]): r for r in rows}
    out = []

    def bar(ok: bool, text: str) -> None:
        out.append(f"  [{'met' if ok else 'NOT met'}] {text}")

    for (sid, n), r in sorted(by.items(), key=lambda x: x[0][1]):
        if sid == "a" and "vs_floor" in r:
            bar(r["vs_floor"] >= 0.8, f"N={n}: cached verify ≥ 80% of the floor: {r['vs_floor']:.0%}")
        if sid == "a" and "vs_peer" in r:
            bar(r["vs_peer"] >= 25, f"N={n}: cached verify ≥ 25x the peer: {r['vs_peer']:.1f}x")
        if sid in ("b-miss", "b-miss-c4"):
            srv = r.get("server_verify_p99_ms")
            bar(r["p99_ms"] < 2, f"N={n}: cache-miss verify p99 < 2 ms (target stated for 1M keys), "
                                 f"-c{r['connections']}: {r['p99_ms']:.2f} ms over HTTP"
                                 + (f"; inside keyward, p99 of verify calls ≤ {srv:g} ms (histogram bucket)"
                                    if srv is not None else ""))
        if sid in PLAIN_OF and "vs_plain" in r:
            out.append(f"  [info] N={n}: {r['label']}: {r['rps']:.0f} req/s = {r['vs_plain']:.0%} of the plain "
                       f"cached verify (a), p99 {r['p99_ms']:.2f} ms")
        if sid == "b-batch":
            single = next((x for x in rows if x["scenario"] == "b" and x["N"] == n), None)
            ratio = (f" = {r['rps'] * BATCH / single['rps']:.1f}x the single calls of (b), "
                     f"{single['rps']:.0f}/s" if single and single["rps"] else "")
            out.append(f"  [info] N={n}: batch verification: {r['rps'] * BATCH:.0f} verifications/s "
                       f"({r['rps']:.0f} batches of {BATCH}/s, p99 {r['p99_ms']:.2f} ms){ratio}")
        if sid == "d":
            bar(r["rps"] >= 2000, f"N={n}: ≥ 2,000 durable creations/s: {r['rps']:.0f}/s")
    for sid in ("b", "b-miss"):
        ns = sorted(n for (s, n) in by if s == sid)
        if len(ns) >= 2:
            lo, hi = by[(sid, ns[0])], by[(sid, ns[-1])]
            ratio = lo["rps"] / hi["rps"] if hi["rps"] else float("inf")
            bar(ratio <= 1.5, f"({sid}) cost flat within 1.5x from N={ns[0]} to N={ns[-1]}: "
                              f"req/s ratio {ratio:.2f}, p99 {lo['p99_ms']:.2f} -> {hi['p99_ms']:.2f} ms")
    return out


def floor_gate(sizes: list[dict], minimum: float, only: list[str] | None) -> tuple[bool, list[str]]:
    """For each N: the median over rounds of (a) req/s / (f) req/s, the two
    runs of one round paired, against the minimum. Returns (passed, lines)."""
    if not sizes:
        return False, [f"FAIL: (a) cached verify against the floor not measured (CI requires >= {minimum:g}x)"]
    ok, lines = True, []
    for res in sizes:
        runs = res["runs"]
        if not runs.get("a") or not runs.get("f"):
            if only and not ("a" in only and "f" in only):
                lines.append(f"skipped: floor gate, --only leaves out (a) or (f) (N={res['N']})")
            else:
                ok = False
                lines.append(f"FAIL: (a) cached verify against the floor not measured (N={res['N']}; "
                             f"CI requires >= {minimum:g}x)")
            continue
        a = {r["round"]: r["rps"] for r in runs["a"]}
        f = {r["round"]: r["rps"] for r in runs["f"]}
        ratios = [a[i] / f[i] for i in sorted(a) if i in f and f[i] > 0]
        if not ratios:
            ok = False
            lines.append(f"FAIL: (a) cached verify against the floor: no round of (f) completed (N={res['N']})")
            continue
        ratio = statistics.median(ratios)
        passed = ratio >= minimum
        ok = ok and passed
        lines.append(f"{'ok' if passed else 'FAIL'}: (a) cached verify is {ratio:.2f}x the floor "
                     f"(CI requires >= {minimum:g}x; N={res['N']}, median of {len(ratios)} round(s): "
                     f"{', '.join(f'{x:.2f}' for x in ratios)})")
    return ok, lines


# --------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"CI smoke: N=1000, 2 s per run, 1 round ({GATE_ROUNDS} for (a) and (f)), "
                        f"--min-floor-ratio {QUICK_MIN_FLOOR_RATIO}")
    p.add_argument("--keys", default=None, help="comma-separated key counts N (default 10000,1000000)")
    p.add_argument("--duration", type=int, default=None, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=None, help="rounds per scenario (default 3)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between runs (default 1)")
    p.add_argument("--no-peer", action="store_true", help="skip the djangorestframework-api-key peer")
    p.add_argument("--no-build", action="store_true", help="use the binaries in target/release as they are")
    p.add_argument("--peer-max-keys", type=int, default=1_000_000, help="cap on the peer's key count")
    p.add_argument("--workdir", help="where databases and logs go (default: a new directory in /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite",
                   help="where keyward's data lives (default sqlite)")
    p.add_argument("--postgres-url", default=os.environ.get("KEYWARD_TEST_POSTGRES_URL")
                   or "postgres://postgres@127.0.0.1:5432/test",
                   help="PostgreSQL server for --database postgres (databases are created and dropped)")
    p.add_argument("--redis-url", default=os.environ.get("KEYWARD_TEST_REDIS_URL") or "redis://127.0.0.1:6379",
                   help="Redis for (rl-redis) (default: KEYWARD_TEST_REDIS_URL or redis://127.0.0.1:6379)")
    p.add_argument("--only", default=None, help="comma-separated scenario ids to run (default: all)")
    p.add_argument("--min-floor-ratio", type=float, default=None, metavar="X",
                   help="exit non-zero if, for some N, the median over rounds of (a) req/s / (f) req/s is "
                        f"under X (default {QUICK_MIN_FLOOR_RATIO} with --quick, off otherwise; 0: off)")
    args = p.parse_args()
    args.only = [x.strip() for x in args.only.split(",")] if args.only else None
    args.gate_rounds = 0
    if args.quick:
        args.keys = args.keys or "1000"
        args.duration = args.duration or 2
        args.rounds = args.rounds or 1
        args.gate_rounds = GATE_ROUNDS
        args.pause = min(args.pause, 0.3)
        if args.min_floor_ratio is None:
            args.min_floor_ratio = QUICK_MIN_FLOOR_RATIO
    if args.min_floor_ratio is not None and args.min_floor_ratio <= 0:
        args.min_floor_ratio = None
    args.keys = args.keys or "10000,1000000"
    args.duration = args.duration or 10
    args.rounds = args.rounds or 3
    sizes_n = [int(x.replace("_", "")) for x in args.keys.split(",") if x.strip()]

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="keyward-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    global DBS
    DBS = Databases(args.database, work, args.postgres_url)
    result: dict = {"timestamp": stamp, "args": vars(args), "sizes": [], "errors": []}
    ok = True
    try:
        if not args.no_build:
            build()
        for b in (KEYWARD, KWBENCH):
            if not b.exists():
                raise BenchError(f"{b} missing (build with: {' '.join(BUILD)})")
        ensure_wrk()
        use_peer = not args.no_peer
        if use_peer and not peer_ready():
            if args.quick:
                log("peer skipped: bench/.venv has no djangorestframework-api-key (run without --quick once)")
                use_peer = False
            else:
                ensure_venv(PEER_PACKAGES)
        if use_peer:
            result["peer_versions"] = venv_versions()
        git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True)
        result["git"] = git.stdout.strip()
        result["machine"] = {"cpus": os.cpu_count(), "kernel": os.uname().release,
                             "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]}
        rng = random.Random()
        hash_key = secrets.token_hex(32)
        log(f"work directory {work}")
        # the throwaway database: well-formed tokens unknown to the measured ones
        tdir = work / "throwaway"
        tdir.mkdir()
        tp = seed_keyward(tdir / "keyward.db", hash_key, UNKNOWN_SEED if not args.quick else 1000,
                          tdir / "keys.txt")
        finish_seed(tp, "throwaway seed", timeout=300)
        unknown = read_lines(tdir / "keys.txt")
        for n in sizes_n:
            try:
                result["sizes"].append(run_size(args, n, work, hash_key, unknown, use_peer, rng))
            finally:
                stop_all()
    except Exception as e:  # report, stop the servers, exit non-zero
        ok = False
        log(f"FAILED: {type(e).__name__}: {e}")
        result["errors"].append(str(e))
    except (KeyboardInterrupt, SystemExit):
        ok = False
        log("interrupted: reporting what was measured")
        result["errors"].append("interrupted")
    finally:
        stop_all()
        DBS.drop_all()

    rows = summarize(result["sizes"])
    result["table"] = rows
    if rows:
        print_table(rows, args, result["sizes"])
        bars = targets(rows)
        result["targets"] = bars
        print("SPEC section 3 targets (informational):")
        print("\n".join(bars))
    for res in result["sizes"]:
        for prob in res.get("problems", []):
            ok = False
            result["errors"].append(f"N={res['N']}: {prob}")
        for sid, runs in res["runs"].items():
            for r in runs:
                for prob in r["problems"]:
                    ok = False
                    msg = f"N={res['N']} {sid} round {r['round'] + 1}: {prob}"
                    result["errors"].append(msg)
    if args.min_floor_ratio is not None:
        passed, lines = floor_gate(result["sizes"], args.min_floor_ratio, args.only)
        result["floor_gate"] = {"min_ratio": args.min_floor_ratio, "passed": passed, "lines": lines}
        print()
        print("\n".join(lines))
        ok = ok and passed
    if result["errors"]:
        print("\nPROBLEMS:")
        for e in result["errors"]:
            print(f"  {e}")
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {out} ({result['wall_seconds']:.0f}s)")
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    elif args.keep:
        print(f"work directory kept: {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
