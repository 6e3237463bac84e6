#!/usr/bin/env bash
# Installs the system tools `make test` needs and the machine lacks; a quick no-op when all of them are present.
# Used by `make test` (target `tools`) and by .ci/run, so a fresh Debian or Ubuntu needs only Python 3.11 and make.
#
#   redis-server   the suite's real, throwaway Redis (tests/support/processes.py), also with TLS and --sentinel
#   postgresql     initdb, pg_ctl and postgres: the suite's real, throwaway PostgreSQL (tests/support/postgres_proc.py),
#                  installed without starting Debian's own cluster (see policy-rc.d below): the tests run their own
#   chromium       /usr/bin/chromium, the headless browser of tests/browser/ (driven by Playwright)
#   wrk            the benchmark's load generator (tests/test_bench_smoke.py, make bench)
#   valgrind       callgrind counts instructions per cache hit (tests/test_bench_smoke.py, bench/instructions.py)
#   nginx          compose's buffering proxy, run with its shipped config by tests/test_slow_clients.py
#   procps         `ps`, to find gunicorn's workers (tests/test_faults.py, bench/soak.py)
#   python3.X-venv ensurepip, without which `python3.X -m venv` cannot make .venv (Debian and Ubuntu split it off)
#
# Missing tools are installed with apt-get (after one `apt-get update`) when this runs as root or may use sudo
# without a password; otherwise it stops with one line naming exactly what to install. PYTHON (default python3.11)
# is the interpreter the Makefile builds .venv with.
set -euo pipefail

PYTHON=${PYTHON:-python3.11}
say() { printf 'install-test-tools: %s\n' "$*"; }

# ---- what is missing: one Debian/Ubuntu package per tool ------------------------------------------------------
# PostgreSQL's server binaries, where tests/support/postgres_proc.py looks for them (Debian keeps them off PATH).
have_postgres() {
  local dir
  for dir in "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")" \
    "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin; do
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ] && return 0
  done
  return 1
}

missing() {
  local need=()
  command -v make >/dev/null || need+=(make)
  command -v redis-server >/dev/null || need+=(redis-server)
  have_postgres || need+=(postgresql)
  [ -x /usr/bin/chromium ] || need+=(chromium)  # tests/browser/conftest.py launches exactly this path
  command -v wrk >/dev/null || need+=(wrk)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)  # config/nginx.conf's slow-client test
  { command -v valgrind >/dev/null && command -v callgrind_control >/dev/null; } || need+=(valgrind)
  command -v ps >/dev/null || need+=(procps)
  if ! command -v "$PYTHON" >/dev/null; then
    need+=("$PYTHON" "$PYTHON-venv")
  elif ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
    # python3.11 is there but without ensurepip: name the package after its real version (python3.11-venv)
    need+=("python$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv")
  fi
  echo "${need[@]}"
}

read -r -a need <<<"$(missing)"
[ ${#need[@]} -eq 0 ] && exit 0

# ---- install them, or say in one line what to install ----------------------------------------------------------
if [ "$(id -u)" = 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  SUDO=(none)
fi
if ! command -v apt-get >/dev/null; then
  echo "missing: ${need[*]}; install them with your package manager (these are their Debian/Ubuntu names)" >&2
  exit 1
fi
if [ "${SUDO[0]:-}" = none ]; then
  echo "missing: ${need[*]}; install them with: sudo apt-get install ${need[*]}" >&2
  exit 1
fi

started=$(date +%s)
log=$(mktemp /tmp/install-test-tools.XXXXXX)
# Debian's postgresql package creates a cluster and starts it (invoke-rc.d; systemd where it runs): in a container
# that start fails or leaves a stray server, and the tests never use it. A policy-rc.d that forbids every start, put
# in place for this install only (unless one is there already, as in Docker's images), makes that harmless.
policy_rc=""
cleanup() {
  rm -f "$log"
  [ -z "$policy_rc" ] || "${SUDO[@]}" rm -f "$policy_rc"
}
trap cleanup EXIT
if [[ " ${need[*]} " == *" postgresql "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
  policy_rc=/usr/sbin/policy-rc.d
  printf '#!/bin/sh\n# install-test-tools.sh: no service starts while it installs packages\nexit 101\n' \
    | "${SUDO[@]}" tee "$policy_rc" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy_rc"
fi
apt_get() {
  # noninteractive, and waiting for another apt (unattended-upgrades) instead of failing on its lock
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 "$@" >>"$log" 2>&1 || {
    tail -25 "$log" >&2
    echo "install-test-tools: FAILED: apt-get $*" >&2
    exit 1
  }
}
say "missing ${need[*]}: apt-get update, then apt-get install"
apt_get update

# Only what the configured sources offer can be installed (Ubuntu, for one, has no chromium .deb: it is a snap).
available=() unavailable=()
for package in "${need[@]}"; do
  policy=$(apt-cache policy "$package" 2>/dev/null)  # (not piped into grep -q: with pipefail, SIGPIPE fails it)
  if grep -q 'Candidate: [^(]' <<<"$policy"; then
    available+=("$package")
  else
    unavailable+=("$package")
  fi
done
[ ${#available[@]} -eq 0 ] || apt_get install -y "${available[@]}"

read -r -a still <<<"$(missing)"
if [ ${#still[@]} -gt 0 ]; then
  hint=""
  if [[ " ${still[*]} " == *" chromium "* ]] && grep -qs '^ID=ubuntu' /etc/os-release; then
    hint=" (Ubuntu ships Chromium as a snap only; the browser tests launch /usr/bin/chromium)"
  fi
  if [ ${#unavailable[@]} -gt 0 ]; then
    echo "missing: ${still[*]}; not in this machine's apt sources: ${unavailable[*]}$hint" >&2
  else
    echo "missing: ${still[*]}, though apt-get installed ${available[*]}: is /usr/bin or /usr/sbin off PATH?$hint" >&2
  fi
  exit 1
fi
say "installed ${available[*]} in $(($(date +%s) - started)) s"
