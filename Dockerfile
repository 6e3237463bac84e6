# syntax=docker/dockerfile:1
# ayrshare-connect: the service under gunicorn, non-root, signals straight to gunicorn, /healthz health check.
#   docker build -t ayrshare-connect .
#   docker run --rm -p 8000:8000 --env-file .env -e GUNICORN_WORKER_CLASS=gevent -v "$PWD/secrets:/run/secrets:ro" \
#     ayrshare-connect      (gevent: header reads time out; nothing buffers in front of a bare container)
# Dependencies come from requirements.lock (fully pinned, with hashes); no secret is ever part of the build.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: a virtualenv with the pinned dependencies, and the app's byte-code ---------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
# The venv gets no pip of its own: the base image's pip installs into it, so the runtime carries no installer.
RUN python -m venv --without-pip /opt/venv
COPY requirements.lock /tmp/requirements.lock
# The lock pins every package with its hashes (make lock: uv pip compile), markers included (async-timeout before
# Python 3.11.3): --require-hashes refuses anything unpinned or altered. gevent is in it on purpose: the documented
# bare `docker run` sets GUNICORN_WORKER_CLASS=gevent, and compose's demo runs the emulator (gevent's server) from
# this image. `pip check` proves the installed set is consistent.
RUN python -m pip --python /opt/venv/bin/python install --require-virtualenv --require-hashes \
      -r /tmp/requirements.lock \
 && python -m pip --python /opt/venv/bin/python check
WORKDIR /app
COPY bin ./bin
COPY config ./config
COPY service ./service
COPY emulator ./emulator
RUN /opt/venv/bin/python -m compileall -q service emulator config

# ---- runtime -----------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ayrshare-connect" \
      org.opencontainers.image.description="Sends each user to Ayrshare's account-linking page; keeps the keys server-side"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/var/lib/ayrshare-connect
# No BIND here: the service listens on 0.0.0.0:8000 by default, or on $PORT where a platform sets it (Cloud Run).
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it and volume permissions are predictable.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin app \
 && mkdir -p /var/lib/ayrshare-connect/demo \
 && chown app:app /var/lib/ayrshare-connect /var/lib/ayrshare-connect/demo
COPY --from=build /opt/venv /opt/venv
# Code stays root-owned and read-only to the service user.
COPY --from=build /app /app
WORKDIR /app
USER 10001:10001
# Only the public port: /metrics listens on 9100 (METRICS_BIND), which `docker run -P` must not publish.
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["python", "/app/bin/healthcheck"]
# Exec form: /app/bin/boot execs gunicorn, which becomes PID 1 and gets SIGTERM directly (graceful stop).
ENTRYPOINT ["/app/bin/boot"]
CMD []
