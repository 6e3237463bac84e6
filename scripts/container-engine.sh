# Source me (from scripts/image-test.sh, scripts/fresh-machine-test.sh): picks the container engine and sets
#   ENGINE       `docker` when a Docker engine answers, else daemonless `podman`, set up by
#                ../shared/tools/container-env.sh (or its fallback copy scripts/container-env.sh): host networking,
#                runc, and a local stand-in for docker.io/library/python:3.11-slim (Debian's own python3.11)
#   BUILD_ARGS   extra `build` arguments (podman: docker format, which keeps HEALTHCHECK; never pull)
#   RUN_ARGS     extra `run` arguments (podman: never pull; there is no registry to pull from)
# Needs ROOT (the repository). Leaves the caller's shell options as they were.
# shellcheck shell=bash disable=SC2034  # ENGINE, BUILD_ARGS and RUN_ARGS are for the script that sources this
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  ENGINE=docker
  BUILD_ARGS=()
  RUN_ARGS=()
else
  ENGINE=podman
  _shared=
  for _candidate in "${AYRSHARE_SHARED_DIR:-}" "$ROOT/../shared" /work/shared; do
    if [ -n "$_candidate" ] && [ -f "$_candidate/tools/container-env.sh" ]; then _shared=$_candidate; break; fi
  done
  if [ -n "$_shared" ]; then
    # shellcheck source=/dev/null
    source "$_shared/tools/container-env.sh"
  else
    # shellcheck source=scripts/container-env.sh
    source "$ROOT/scripts/container-env.sh"
  fi
  unset _shared _candidate
  # docker format keeps HEALTHCHECK (the OCI image format has no field for it); the base image is local only.
  BUILD_ARGS=(--format docker --pull=never)
  RUN_ARGS=(--pull=never)
fi
