#!/usr/bin/env bash
# Same-run A/B of two git revisions of keyward on the verify paths.
#
#   bench/ab.sh OLD [NEW] [ab_verify.py options...]
#   bench/ab.sh HEAD~1                      # HEAD~1 against HEAD
#   bench/ab.sh 9648963 WORKTREE --rounds 3 # a commit against the working tree
#
# OLD and NEW are git revisions (NEW defaults to HEAD). NEW may be the
# literal WORKTREE: the current working tree's target/release/keyward as
# already built (this script does not build it; build it first with
# `flock /tmp/keyward-cargo.lock cargo build --release -p keyward`).
#
# Each revision gets a detached worktree, /tmp/keyward-ab/<sha> (reused when
# present), and its own target directory, /tmp/keyward-ab/target-<sha>
# (revisions sharing one target directory overwrite each other's
# artifacts), built under the cargo lock other builds of this machine take:
#   CARGO_TARGET_DIR=/tmp/keyward-ab/target-<sha> \
#     flock /tmp/keyward-cargo.lock cargo build --release --locked -p keyward
# A revision whose binary is already there is not rebuilt (AB_REBUILD=1
# rebuilds). Then, from this checkout:
#   python3 bench/ab_verify.py OLD_BIN NEW_BIN [the options after OLD [NEW]]
# (scenarios a, a-ip, b, c, h by default; see its docstring).
# A release target directory takes a few GB: remove /tmp/keyward-ab/ when done
# (git worktree prune then forgets the worktrees).
set -euo pipefail

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
case "$1" in -h | --help) usage ;; esac

ROOT=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
AB_DIR=/tmp/keyward-ab
OLD=$1
if [ $# -ge 2 ] && [[ $2 != -* ]]; then
    NEW=$2
    shift 2
else # bench/ab.sh OLD --rounds 3: NEW is HEAD
    NEW=HEAD
    shift 1
fi
mkdir -p "$AB_DIR"

log() { echo "[ab $(date +%H:%M:%S)] $*" >&2; }

# binary REV: prints the path of REV's release keyward, building it if needed.
binary() {
    local rev=$1 sha dir target bin
    if [ "$rev" = WORKTREE ]; then
        bin=$ROOT/target/release/keyward
        [ -x "$bin" ] || {
            log "$bin missing: build it first (flock /tmp/keyward-cargo.lock cargo build --release -p keyward)"
            exit 1
        }
        log "WORKTREE: $bin (built $(date -r "$bin" '+%Y-%m-%d %H:%M:%S'); git $(git -C "$ROOT" describe --always --dirty))"
        echo "$bin"
        return
    fi
    sha=$(git -C "$ROOT" rev-parse --verify --quiet "$rev^{commit}") || {
        log "not a revision: $rev"
        exit 1
    }
    dir=$AB_DIR/$sha
    target=$AB_DIR/target-$sha
    bin=$target/release/keyward
    if [ -d "$dir" ]; then
        local head
        head=$(git -C "$dir" rev-parse HEAD 2>/dev/null || true)
        if [ "$head" != "$sha" ]; then
            log "$dir exists but is not a worktree at $sha (HEAD: ${head:-none}); remove it and retry"
            exit 1
        fi
        log "$rev ($sha): reusing worktree $dir"
    else
        git -C "$ROOT" worktree prune
        log "$rev ($sha): git worktree add --detach $dir"
        git -C "$ROOT" worktree add --detach "$dir" "$sha" >&2
    fi
    if [ -x "$bin" ] && [ -z "${AB_REBUILD:-}" ]; then
        log "$rev ($sha): using $bin (AB_REBUILD=1 to rebuild)"
    else
        log "$rev ($sha): building into $target"
        (cd "$dir" && CARGO_TARGET_DIR=$target flock /tmp/keyward-cargo.lock \
            cargo build --release --locked -p keyward) >&2
    fi
    echo "$bin"
}

OLD_BIN=$(binary "$OLD")
NEW_BIN=$(binary "$NEW")
log "A = $OLD: $OLD_BIN"
log "B = $NEW: $NEW_BIN"
cd "$ROOT"
exec python3 bench/ab_verify.py "$OLD_BIN" "$NEW_BIN" "$@"
