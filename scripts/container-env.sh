# Fallback copy of ../shared/tools/container-env.sh for machines without the shared folder (scripts/image-test.sh
# prefers the shared one). Keep the two in step.
# Source me: prepares daemonless podman/buildah on a machine without a Docker engine or image registry.
# Installs what is missing (Debian packages), writes podman config under $CONTAINER_WORK (default /tmp/container-work),
# and, when absent, builds a local stand-in for docker.io/library/python:3.11-slim from Debian's own packages.
CONTAINER_WORK=${CONTAINER_WORK:-/tmp/container-work}
mkdir -p "$CONTAINER_WORK"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null && apt-get install -y -q podman buildah runc debootstrap >/dev/null
fi
cat > "$CONTAINER_WORK/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/storage"\nrunroot = "%s/run"\n' \
  "$CONTAINER_WORK" "$CONTAINER_WORK" > "$CONTAINER_WORK/storage.conf"
export CONTAINERS_CONF="$CONTAINER_WORK/containers.conf"
export CONTAINERS_STORAGE_CONF="$CONTAINER_WORK/storage.conf"
export BUILDAH_ISOLATION=chroot
if ! podman image exists docker.io/library/python:3.11-slim; then
  # the Debian mirror this machine already uses (deb822 or one-line format)
  mirror=$(grep -hoE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
  [ -n "$mirror" ] || mirror=$(grep -hoE '^deb +[^ ]+' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -1)
  rootfs="$CONTAINER_WORK/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >/dev/null
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$rootfs" update-ca-certificates >/dev/null
  ln -sf python3 "$rootfs/usr/bin/python"
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - \
    docker.io/library/python:3.11-slim >/dev/null
  rm -rf "$rootfs"
fi
