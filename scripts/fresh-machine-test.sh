#!/usr/bin/env bash
# `make fresh-machine-test` (issue 17): on a fresh Debian with only Python 3.11 and make, `make test` passes with no
# other step. Runs a clean Debian container, copies the repository into it (no .venv, no caches), installs make there
# and nothing else, then runs `make test`: scripts/install-test-tools.sh has to bring redis-server, chromium, wrk,
# valgrind, python3.11-venv... from Debian's mirrors, and the Makefile .venv from PyPI.
#
#   FRESH_IMAGE    the machine (default docker.io/library/python:3.11-slim; under podman the local stand-in made by
#                  container-env.sh: Debian bookworm's own python3.11 from debootstrap, the machine's CA certificates)
#   FRESH_SOURCE   `worktree` (default): the files git tracks or would add (modified and new ones as they are on disk,
#                  ignored ones such as .venv never); `HEAD`: the last commit (`git archive HEAD`)
#   FRESH_TIMEOUT  seconds the container may take (default 3000)
#
# The engine is chosen as for make image-test (scripts/container-engine.sh). The container uses host networking
# (its tests' servers bind free ports on 127.0.0.1) and a 1 GB /dev/shm for Chromium. The whole output is also kept
# in artifacts/fresh-machine-test.log.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
START=$(date +%s)
FRESH_IMAGE=${FRESH_IMAGE:-docker.io/library/python:3.11-slim}
FRESH_SOURCE=${FRESH_SOURCE:-worktree}
FRESH_TIMEOUT=${FRESH_TIMEOUT:-3000}
say() { printf '\n== fresh-machine-test: %s\n' "$*"; }
fail() { printf 'fresh-machine-test: FAILED: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/container-engine.sh
source "$ROOT/scripts/container-engine.sh"   # ENGINE (docker, else podman), RUN_ARGS
say "engine: $ENGINE ($($ENGINE --version)); machine: $FRESH_IMAGE"
$ENGINE image inspect "$FRESH_IMAGE" >/dev/null 2>&1 || fail "image $FRESH_IMAGE is not local (nothing is pulled)"

WORK=$(mktemp -d /tmp/fresh-machine.XXXXXX)
NAME=ayrshare-fresh-machine-$$
cleanup() {
  $ENGINE rm -f -t 5 "$NAME" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- 1. the copy of the repository -----------------------------------------------------------------------------
mkdir "$WORK/repo"
case "$FRESH_SOURCE" in
  HEAD) git archive --format=tar HEAD | tar -x -C "$WORK/repo" ;;
  worktree)
    git ls-files -z --cached --others --exclude-standard \
      | while IFS= read -r -d '' file; do if [ -e "$file" ] || [ -L "$file" ]; then printf '%s\0' "$file"; fi; done \
      | tar --null -T - -c | tar -x -C "$WORK/repo"
    ;;
  *) fail "FRESH_SOURCE is '$FRESH_SOURCE': use worktree or HEAD" ;;
esac
[ ! -e "$WORK/repo/.venv" ] || fail "the copy has a .venv"
say "copy: $FRESH_SOURCE at $(git rev-parse --short HEAD)$( [ "$FRESH_SOURCE" = HEAD ] || git diff --quiet HEAD 2>/dev/null || echo ' plus uncommitted changes'), $(du -sh "$WORK/repo" | cut -f1)"

# ---- 2. in the container: make, then `make test` ---------------------------------------------------------------
# A stock Debian with Python 3.11 lacks python3.11-venv; the stand-in has it (debootstrap --include=python3-venv):
# it is removed first, so the installer has to bring it back as on a fresh machine.
# shellcheck disable=SC2016  # expanded by the container's bash
INSIDE='set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
mkdir /repo && tar -x -C /repo && cd /repo
step() { printf "\n== fresh machine (%s s): %s\n" "$(($(date +%s) - t0))" "$*"; }
t0=$(date +%s)
. /etc/os-release && step "$PRETTY_NAME, $(python3.11 --version 2>&1), uid $(id -u)"
if dpkg -s python3.11-venv >/dev/null 2>&1; then
  apt-get purge -y -q python3-venv python3.11-venv >/dev/null
  step "removed python3.11-venv (absent on a fresh Debian)"
fi
step "apt-get install make (the only thing installed by hand)"
apt-get update -q >/dev/null
apt-get install -y -q make >/dev/null
step "make test"
status=0
make test || status=$?
step "make test exited with $status"
exit "$status"'

say "make test in a fresh container (up to $FRESH_TIMEOUT s)"
mkdir -p "$ROOT/artifacts"
LOG="$ROOT/artifacts/fresh-machine-test.log"
# CI's settings go in as they are here (HYPOTHESIS_PROFILE=ci replays the derandomized examples); unset stays unset.
ENV_ARGS=()
for name in CI HYPOTHESIS_PROFILE; do [ -z "${!name:-}" ] || ENV_ARGS+=(-e "$name=${!name}"); done
status=0
tar -C "$WORK/repo" -c . | timeout --foreground "$FRESH_TIMEOUT" \
  $ENGINE run -i --rm --name "$NAME" --network host --shm-size 1g \
  "${ENV_ARGS[@]}" "${RUN_ARGS[@]}" \
  "$FRESH_IMAGE" bash -c "$INSIDE" 2>&1 | tee "$LOG" || status=$?
took=$(($(date +%s) - START))
[ "$status" = 0 ] || fail "make test in the fresh container exited with $status after $took s (log: $LOG)"
say "passed: make test on a fresh $FRESH_IMAGE in $took s (log: $LOG)"
