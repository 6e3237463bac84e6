"""The shipped deployments (docker-compose.yml, the Dockerfile, the Kubernetes manifests in deploy/kubernetes/):
what they publish and what they protect, read from the files themselves (tests/test_kubernetes_manifests.py checks
the Kubernetes ones in depth)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = (ROOT / "docker-compose.yml").read_text()
DOCKERFILE = (ROOT / "Dockerfile").read_text()
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
KUBERNETES = ROOT / "deploy" / "kubernetes"
METRICS_PORT = "9100"  # METRICS_BIND's default port


def published_container_ports(compose: str) -> set[str]:
    """Container ports of every `ports:` entry ("host:port:container" or "host-range:container")."""
    return {match.rpartition(":")[2] for match in re.findall(r'^\s*- "([0-9.:\-\[\]]+)"\s*$', compose, re.MULTILINE)}


def kubernetes_documents() -> list[dict]:
    return [doc for path in sorted(KUBERNETES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_compose_never_publishes_the_metrics_port():
    ports = published_container_ports(COMPOSE)
    assert ports and METRICS_PORT not in ports


def test_the_image_does_not_expose_the_metrics_port():
    # `docker run -P` publishes every EXPOSEd port.
    exposed = " ".join(re.findall(r"^EXPOSE (.+)$", DOCKERFILE, re.MULTILINE))
    assert METRICS_PORT not in exposed


def test_the_kubernetes_service_and_ingress_route_only_the_http_port():
    documents = kubernetes_documents()
    # Every Service with a cluster IP, and every Ingress. The headless metrics Service has no address to route to:
    # it only lists the pods' metrics ports for Prometheus, and nothing points at it.
    routed = [
        doc
        for doc in documents
        if doc["kind"] == "Ingress" or (doc["kind"] == "Service" and doc["spec"].get("clusterIP") != "None")
    ]
    assert {doc["kind"] for doc in routed} == {"Service", "Ingress"}
    for doc in routed:
        text = yaml.safe_dump(doc)
        assert "metrics" not in text and METRICS_PORT not in text
    (headless,) = [doc for doc in documents if doc["kind"] == "Service" and doc not in routed]
    assert [port["port"] for port in headless["spec"]["ports"]] == [int(METRICS_PORT)]
    assert not any(
        path["backend"]["service"]["name"] == headless["metadata"]["name"]
        for doc in routed
        if doc["kind"] == "Ingress"
        for rule in doc["spec"]["rules"]
        for path in rule["http"]["paths"]
    )


# -- slow clients: every shipped deployment reads requests with header timeouts (tests/test_slow_clients.py) -------
def compose_service(name: str) -> str:
    match = re.search(rf"^  {name}:\n(.*?)(?=^  [a-z-]+:\n|^\S)", COMPOSE, re.MULTILINE | re.DOTALL)
    assert match, name
    return match.group(1)


def test_compose_sends_every_client_through_the_buffering_proxy():
    proxy, service = compose_service("proxy"), compose_service("service")
    assert "./config/nginx/ayrshare-connect.conf:/etc/nginx/conf.d/default.conf:ro" in proxy
    assert published_container_ports(proxy) == {"8080"}
    assert "ports:" not in service  # reachable through the proxy only
    assert 'TRUSTED_PROXY_COUNT: "1"' in service  # the proxy's X-Forwarded-For gives the client address


def test_the_documented_docker_run_uses_the_worker_that_times_out_header_reads():
    docker_run = re.search(r"```bash\n(.*?docker run .*?)```", OPERATIONS, re.DOTALL).group(1)
    assert "GUNICORN_WORKER_CLASS=gevent" in docker_run
    assert "GUNICORN_WORKER_CLASS=gevent" in DOCKERFILE.split("FROM")[0]  # the header comment's docker run


def test_the_kubernetes_example_says_the_ingress_buffers():
    assert re.search(r"[Ii]ngress[^.]*buffer", OPERATIONS)
    (ingress,) = [doc for doc in kubernetes_documents() if doc["kind"] == "Ingress"]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    (config,) = [
        doc
        for doc in kubernetes_documents()
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "ayrshare-connect"
    ]
    assert "GUNICORN_WORKER_CLASS" not in config["data"]  # behind it the default gthread worker is right
    assert config["data"]["TRUSTED_PROXY_COUNT"] == "1"


def test_compose_redis_requires_the_password_from_a_secret_and_the_service_uses_it():
    redis, service = compose_service("redis"), compose_service("service")
    assert "--requirepass" in redis and "/run/secrets/redis_password" in redis
    assert "redis_password" in redis.split("secrets:")[1]
    assert "REDIS_URL_FILE: /run/secrets/redis_url" in service and "REDIS_URL:" not in service
    assert re.search(r"^  redis_password:\n    file:", COMPOSE, re.MULTILINE)
    assert re.search(r"^  redis_url:\n    file:", COMPOSE, re.MULTILINE)
