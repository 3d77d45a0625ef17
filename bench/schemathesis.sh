#!/usr/bin/env bash
# OpenAPI-driven fuzzing of keyward with schemathesis (SPEC section 3: "an
# OpenAPI-driven fuzzer finds no server error").
#
# Usage (from anywhere):
#   bash bench/schemathesis.sh [--no-build] [--max-examples N] [--seed S]
#                              [--checks LIST] [--time-limit SECONDS]
#                              [-- extra schemathesis arguments]
#
# It builds release (flock /tmp/keyward-cargo.lock cargo build --release -p
# keyward -p keyward-bench), installs schemathesis 4.x into bench/.venv, starts
# keyward on a fresh data directory and a free port, and runs every operation
# of http://127.0.0.1:PORT/openapi.json with the admin key printed at
# bootstrap as `Authorization: Bearer` (and as X-Keyward-Verifier-Key, the
# gateway's key that GET /v1/authorize needs), all phases (examples, coverage,
# fuzzing, stateful), --max-examples 20 per operation, under a hard
# `timeout` (300 s). Checks (default): not_a_server_error (no 5xx),
# status_code_conformance (no undocumented status code),
# response_schema_conformance and content_type_conformance. Pass
# --checks all for every check schemathesis has.
#
# Exit status: 0 only if schemathesis reported no failure, finished within
# the time limit, and keyward neither crashed nor logged a panic. Reports
# (JUnit XML, NDJSON events) and keyward's logs go to
# bench/results/schemathesis-<UTC timestamp>/.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
VENV="$BENCH/.venv"
KEYWARD="$ROOT/target/release/keyward"

build=1
max_examples=20
seed="$(python3 -c 'import secrets; print(secrets.randbelow(2**31))')"
checks="not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"
time_limit=300
extra=()
while (($#)); do
  case "$1" in
    --no-build) build=0 ;;
    --max-examples) max_examples="$2"; shift ;;
    --seed) seed="$2"; shift ;;
    --checks) checks="$2"; shift ;;
    --time-limit) time_limit="$2"; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '[schemathesis.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if ((build)); then
  say "building release"
  (cd "$ROOT" && flock /tmp/keyward-cargo.lock cargo build --release -p keyward -p keyward-bench)
fi
[[ -x "$KEYWARD" ]] || { echo "missing $KEYWARD" >&2; exit 1; }

if [[ ! -x "$VENV/bin/schemathesis" ]]; then
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  say "installing schemathesis into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "schemathesis>=4,<5"
fi
say "$("$VENV/bin/schemathesis" --version 2>&1 | head -1)"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$BENCH/results/schemathesis-$stamp"
mkdir -p "$out"
work="$(mktemp -d /tmp/keyward-schemathesis-XXXXXX)"
pid=""
cleanup() {
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  cp -f "$work/keyward.out" "$work/keyward.err" "$out/" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

hash_key="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
"$KEYWARD" serve --listen 127.0.0.1:0 --data-dir "$work" --hash-key "$hash_key" --log-level warn \
  >"$work/keyward.out" 2>"$work/keyward.err" </dev/null &
pid=$!
url=""
for _ in $(seq 1 300); do
  url="$(grep -oE 'keyward listening on http://[0-9.:]+' "$work/keyward.out" 2>/dev/null | awk '{print $4}' || true)"
  [[ -n "$url" ]] && break
  kill -0 "$pid" 2>/dev/null || { echo "keyward exited early:" >&2; cat "$work/keyward.err" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$url" ]] || { echo "keyward did not start within 30 s" >&2; cat "$work/keyward.err" >&2; exit 1; }
admin="$(grep -oE 'kw_(live|test)_[A-Za-z0-9]{40,}' "$work/keyward.out" | head -1 || true)"
[[ -n "$admin" ]] || { echo "no admin key in keyward's output" >&2; cat "$work/keyward.out" >&2; exit 1; }
# key id = "key_" + the first 16 characters after "<prefix>_<env>_"
admin_id="key_$(printf '%s' "$admin" | cut -d_ -f3- | cut -c1-16)"
say "keyward (PID $pid) at $url; admin key id $admin_id (shielded by bench/schemathesis_hooks.py); seed $seed; max examples $max_examples; checks $checks"

# POST /v1/keys/self-revoke revokes whatever key it is sent with, and the
# CLI's --header sends the admin key the whole run depends on: it is left
# out (tests/api/leaked.rs covers its answers, refusals included). So is
# GET /v1/replication/stream: an answer that never ends, by design
# (tests/api/embedded.rs covers its refusals: after, workspace, credential).
set +e
SCHEMATHESIS_HOOKS="$BENCH/schemathesis_hooks.py" KW_ADMIN_KEY_ID="$admin_id" \
  timeout --signal=TERM --kill-after=15 "$time_limit" \
  "$VENV/bin/schemathesis" run "$url/openapi.json" \
  --header "Authorization: Bearer $admin" \
  --header "X-Keyward-Verifier-Key: $admin" \
  --exclude-path /v1/keys/self-revoke \
  --exclude-path /v1/replication/stream \
  --checks "$checks" \
  --max-examples "$max_examples" \
  --seed "$seed" \
  --workers 1 \
  --request-timeout 10 \
  --output-sanitize false \
  --report junit,ndjson --report-dir "$out" \
  "${extra[@]}" 2>&1 | tee "$out/schemathesis.log"
rc=${PIPESTATUS[0]}
set -e

status=0
if ((rc == 124 || rc == 137)); then
  say "FAIL: schemathesis did not finish within ${time_limit}s"
  status=1
elif ((rc != 0)); then
  say "FAIL: schemathesis reported failures (exit $rc); see above and $out"
  status=1
fi
if ! kill -0 "$pid" 2>/dev/null; then
  say "FAIL: keyward is no longer running (crashed?)"
  status=1
fi
if grep -qiE 'panicked|panic' "$work/keyward.err"; then
  say "FAIL: keyward logged a panic:"
  grep -iE -A3 'panicked|panic' "$work/keyward.err" | head -40 >&2
  status=1
fi
((status == 0)) && say "OK: no failures (seed $seed)"
say "reports and logs: $out"
exit "$status"
