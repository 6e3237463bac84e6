"""deploy/kubernetes/: each manifest against the Kubernetes schemas, offline, and the manifests against each other and
against the service.

The schemas are the copies kubernetes-validate bundles (no network): every manifest of a core kind is checked in
strict mode (an unknown or misspelt field fails) against every Kubernetes version the package carries. The
ServiceMonitor is a Prometheus Operator CRD, not in those schemas, so its apiVersion, kind and required fields are
checked here by hand; kustomization.yaml likewise. Then the cross-references: selectors and labels, port names and
numbers, the settings the pods get (names the service knows, files that exist in the mounted Secret and ConfigMaps).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from service.config.schema import SettingsSchema
from service.config.settings import SECRET_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(path.name for path in KUBERNETES.glob("*.yaml") if path.name != "kustomization.yaml")
EXAMPLES = {"secret.example.yaml", "ingress.example.yaml"}  # placeholders to fill in: not in the kustomization
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}  # CRDs: checked structurally below
SCHEMA_VERSIONS = sorted(
    {kubernetes_validate.major_minor(version) for version in kubernetes_validate.all_versions()},
    key=lambda version: tuple(map(int, version.split("."))),
)
SETTINGS = {field.data_key for field in SettingsSchema().fields.values()}
FILE_SETTINGS = {f"{name}_FILE" for name in SECRET_SETTINGS} | {"PROFILE_KEYS_FILE"}
INGRESS_NAMESPACE, MONITORING_NAMESPACE = "ingress-nginx", "monitoring"


def load(name: str) -> dict:
    (document,) = [doc for doc in yaml.safe_load_all((KUBERNETES / name).read_text()) if doc]
    return document


def kustomization() -> dict:
    return load("kustomization.yaml")


def pod_spec(name: str) -> dict:
    return load(name)["spec"]["template"]["spec"]


def selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are used here"
    return selector["matchLabels"].items() <= labels.items()


def port_of(url: str) -> int:
    return urlsplit(url).port


DEPLOYMENT = "deployment.yaml"
JOB = "migrate-job.yaml"
WORKLOADS = (DEPLOYMENT, JOB)


# -- each manifest on its own -------------------------------------------------------------------------------------
def test_the_schemas_are_bundled_for_the_versions_checked():
    numbers = [tuple(map(int, version.split("."))) for version in SCHEMA_VERSIONS]
    assert numbers[0] <= (1, 30) and numbers[-1] >= (1, 37), SCHEMA_VERSIONS


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_is_valid(name):
    document = load(name)
    metadata = document["metadata"]
    assert metadata["name"].startswith("ayrshare-connect")
    assert metadata["labels"]["app.kubernetes.io/name"] == "ayrshare-connect"
    assert "namespace" not in metadata  # set by `kubectl -n`, or `namespace:` in an overlay
    if (document["apiVersion"], document["kind"]) in CUSTOM_KINDS:
        check_custom_resource(document)
        return
    failures: dict[str, list[str]] = {}  # what is wrong -> the Kubernetes versions it is wrong for
    for version in SCHEMA_VERSIONS:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            failures.setdefault(f"{'.'.join(map(str, error.path))}: {error.message}", []).append(version)
    assert not failures, "\n".join(f"{problem} (Kubernetes {', '.join(v)})" for problem, v in failures.items())


def check_custom_resource(document: dict) -> None:
    """ServiceMonitor (monitoring.coreos.com/v1): the fields the operator's CRD requires and the ones used here."""
    assert document["kind"] == "ServiceMonitor"
    assert set(document) == {"apiVersion", "kind", "metadata", "spec"}
    spec = document["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels"}
    assert spec["selector"]["matchLabels"]  # required by the CRD
    assert spec["endpoints"]
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
        assert isinstance(endpoint["port"], str)  # the Service port's name
        assert endpoint["path"] == "/metrics"
        for key in ("interval", "scrapeTimeout"):
            assert re.fullmatch(r"\d+(ms|s|m|h)", endpoint.get(key, "30s")), key


def test_kustomization_lists_every_manifest_but_the_examples():
    document = kustomization()
    assert document["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and document["kind"] == "Kustomization"
    assert sorted(document["resources"]) == sorted(set(MANIFESTS) - EXAMPLES)
    assert set(MANIFESTS) >= EXAMPLES
    # Its `images:` entry is the image the workloads name, so one tag there sets both.
    (image,) = document["images"]
    for name in WORKLOADS:
        (container,) = pod_spec(name)["containers"]
        assert container["image"].rpartition(":")[0] == image["name"]


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed (its built-in kustomize renders -k)")
def test_kustomize_renders_the_kustomization():
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(rendered) if doc)
    assert kinds == sorted(load(name)["kind"] for name in kustomization()["resources"])


def test_the_secret_example_holds_placeholders_only():
    text = (KUBERNETES / "secret.example.yaml").read_text()
    assert text.startswith("# EXAMPLE ONLY")
    secret = load("secret.example.yaml")
    assert secret["kind"] == "Secret" and secret["type"] == "Opaque" and "data" not in secret
    for key, value in secret["stringData"].items():
        assert re.search(r"<[^<>]+>", value), f"{key} must be a <placeholder>"


def test_the_ingress_example_buffers_and_routes_the_http_port_only():
    ingress = load("ingress.example.yaml")
    assert (KUBERNETES / "ingress.example.yaml").read_text().startswith("# EXAMPLE ONLY")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "on"
    service = load("service.yaml")
    ports = {port["name"] for port in service["spec"]["ports"]}
    backends = [path["backend"]["service"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert backends
    for backend in backends:
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"] == {"name": "http"} and "http" in ports


# -- cross-references: settings and files -------------------------------------------------------------------------
def environment(name: str) -> dict[str, str]:
    """What the workload's container gets: its envFrom ConfigMaps (from their files here), then its env."""
    (container,) = pod_spec(name)["containers"]
    configmaps = {load(file)["metadata"]["name"]: load(file) for file in MANIFESTS if load(file)["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, "settings come from ConfigMaps; secrets as files"
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        assert set(item) == {"name", "value"}, "no secretKeyRef: secrets reach the service as files (*_FILE)"
        env[item["name"]] = item["value"]
    return env


@pytest.mark.parametrize("name", WORKLOADS)
def test_every_setting_is_one_the_service_knows(name):
    env = environment(name)
    assert env
    unknown = sorted(set(env) - SETTINGS - FILE_SETTINGS)
    assert not unknown, f"not settings of service/config/schema.py: {unknown}"
    # Secrets only as files: none of the secret settings is given a value directly.
    assert not set(env) & set(SECRET_SETTINGS)
    assert {"AYRSHARE_API_KEY_FILE", "DATABASE_URL_FILE", "DATA_ENCRYPTION_KEY_FILE", "AYRSHARE_DOMAIN"} <= set(env)


@pytest.mark.parametrize("name", WORKLOADS)
def test_every_file_setting_names_a_key_of_a_mounted_secret_or_configmap(name):
    spec = pod_spec(name)
    (container,) = spec["containers"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in container["volumeMounts"]}
    secret, configmaps = load("secret.example.yaml"), {load(f)["metadata"]["name"]: load(f) for f in MANIFESTS}
    used_secret_keys = set()
    for setting, path in environment(name).items():
        if setting not in FILE_SETTINGS:
            continue
        directory, _, key = path.rpartition("/")
        assert directory in mounts, f"{setting}: {directory} is not mounted"
        volume = mounts[directory]
        if "secret" in volume:
            assert volume["secret"]["secretName"] == secret["metadata"]["name"]
            assert key in secret["stringData"], f"{setting}: no key {key} in secret.example.yaml"
            assert "items" not in volume["secret"]
            used_secret_keys.add(key)
        else:
            assert key in configmaps[volume["configMap"]["name"]]["data"], f"{setting}: no key {key}"
    # Every key of the example Secret is read by the service (nothing to fill in for nothing).
    assert used_secret_keys == set(secret["stringData"])


@pytest.mark.parametrize("name", WORKLOADS)
def test_the_secret_files_are_readable_by_the_service_user_only(name):
    spec = pod_spec(name)
    (volume,) = [volume for volume in spec["volumes"] if "secret" in volume]
    assert volume["secret"]["defaultMode"] == 0o440  # owner root, group fsGroup (10001)
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"] == 10001
    (container,) = spec["containers"]
    assert all(mount["readOnly"] for mount in container["volumeMounts"] if mount["name"] != "tmp")


def test_the_profiles_configmap_is_a_json_object_mounted_without_subpath():
    profiles = json.loads(load("profiles.yaml")["data"]["profiles.json"])
    assert isinstance(profiles, dict)
    (container,) = pod_spec(DEPLOYMENT)["containers"]
    assert all("subPath" not in mount for mount in container["volumeMounts"])  # subPath mounts never update


# -- cross-references: the pods, and what selects them ------------------------------------------------------------
@pytest.mark.parametrize("name", WORKLOADS)
def test_pods_run_as_the_image_user_locked_down(name):
    spec = pod_spec(name)
    dockerfile_user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE).groups()
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert (str(pod["runAsUser"]), str(pod["runAsGroup"])) == dockerfile_user == ("10001", "10001")
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in spec["volumes"]


def test_the_migration_job_runs_boot_migrate():
    job = load(JOB)
    (container,) = pod_spec(JOB)["containers"]
    assert container["args"] == ["migrate"] and "command" not in container  # the image's ENTRYPOINT, bin/boot
    assert re.search(
        r"^  migrate\)\n    exec flask --app service db upgrade$", (ROOT / "bin" / "boot").read_text(), re.M
    )
    assert pod_spec(JOB)["restartPolicy"] in {"OnFailure", "Never"}
    assert job["spec"]["backoffLimit"] >= 1


def test_the_deployment_probes_and_stops_gracefully():
    spec = pod_spec(DEPLOYMENT)
    (container,) = spec["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    graceful = SettingsSchema().fields["graceful_timeout"].load_default  # GUNICORN_GRACEFUL_TIMEOUT, not overridden
    assert "GUNICORN_GRACEFUL_TIMEOUT" not in environment(DEPLOYMENT)
    assert spec["terminationGracePeriodSeconds"] > int(sleep[1]) + graceful
    rolling = load(DEPLOYMENT)["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0  # new pods must pass /readyz (migrated database) before old ones go


def test_the_ports_are_the_ones_the_service_listens_on():
    (container,) = pod_spec(DEPLOYMENT)["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = environment(DEPLOYMENT)
    bind = env.get("BIND") or f"0.0.0.0:{env.get('PORT', '8000')}"  # BIND, else PORT, else 8000 (the settings)
    assert (
        ports
        == {"http": port_of(f"//{bind}"), "metrics": port_of(f"//{env['METRICS_BIND']}")}
        == {
            "http": 8000,
            "metrics": 9100,
        }
    )
    assert env["TRUSTED_PROXY_COUNT"] == "1"  # the ingress controller in front
    assert "GUNICORN_WORKER_CLASS" not in env  # gthread behind a buffering ingress (docs/operations.md)


def test_the_service_routes_the_http_port_only_and_the_metrics_service_is_headless():
    pod_labels = load(DEPLOYMENT)["spec"]["template"]["metadata"]["labels"]
    job_labels = load(JOB)["spec"]["template"]["metadata"]["labels"]
    (container,) = pod_spec(DEPLOYMENT)["containers"]
    container_ports = {port["name"] for port in container["ports"]}
    service, metrics = load("service.yaml"), load("metrics-service.yaml")
    for document in (service, metrics):
        assert document["spec"]["selector"].items() <= pod_labels.items()
        assert not document["spec"]["selector"].items() <= job_labels.items()
        assert {port["targetPort"] for port in document["spec"]["ports"]} <= container_ports
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]
    assert service["spec"]["type"] == "ClusterIP"
    assert [port["targetPort"] for port in metrics["spec"]["ports"]] == ["metrics"]
    assert metrics["spec"]["clusterIP"] == "None"


def test_the_servicemonitor_scrapes_the_metrics_service_only():
    monitor = load("servicemonitor.yaml")
    metrics, service = load("metrics-service.yaml"), load("service.yaml")
    assert selects(monitor["spec"]["selector"], metrics["metadata"]["labels"])
    assert not selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == [
        port["name"] for port in metrics["spec"]["ports"]
    ]


def test_the_deployment_selects_its_own_pods_and_not_the_jobs():
    deployment = load(DEPLOYMENT)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"], pod_labels)
    assert not selects(deployment["spec"]["selector"], load(JOB)["spec"]["template"]["metadata"]["labels"])
    (spread,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["labelSelector"] == deployment["spec"]["selector"]


def test_the_pod_disruption_budget_covers_the_deployments_pods():
    budget = load("poddisruptionbudget.yaml")["spec"]
    assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable") == 1
    deployment = load(DEPLOYMENT)
    assert budget["selector"] == deployment["spec"]["selector"]


def test_the_autoscaler_scales_the_deployment_on_cpu():
    hpa = load("horizontalpodautoscaler.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2"
    deployment = load(DEPLOYMENT)
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        deployment["kind"],
        deployment["metadata"]["name"],
    )
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    (container,) = pod_spec(DEPLOYMENT)["containers"]
    assert container["resources"]["requests"]["cpu"]  # utilization is a share of the request
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it; re-applying must not reset it
    budget = load("poddisruptionbudget.yaml")["spec"]
    assert hpa["spec"]["minReplicas"] > budget.get("maxUnavailable", 0)  # a drain never takes every pod


def test_the_network_policy_admits_the_ingress_and_prometheus_only():
    policy = load("networkpolicy.yaml")["spec"]
    for name in WORKLOADS:
        assert selects(policy["podSelector"], load(name)["spec"]["template"]["metadata"]["labels"])
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    (container,) = pod_spec(DEPLOYMENT)["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    admitted = {}
    for rule in policy["ingress"]:
        (source,) = rule["from"]
        assert set(source) == {"namespaceSelector"}
        namespace = source["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        admitted[namespace] = [(port["protocol"], port["port"]) for port in rule["ports"]]
    assert admitted == {
        INGRESS_NAMESPACE: [("TCP", ports["http"])],
        MONITORING_NAMESPACE: [("TCP", ports["metrics"])],
    }


def test_the_network_policy_lets_out_dns_redis_postgresql_and_https_only():
    policy = load("networkpolicy.yaml")["spec"]
    secret = load("secret.example.yaml")["stringData"]
    egress = {(port["protocol"], port["port"]) for rule in policy["egress"] for port in rule["ports"]}
    redis_port = port_of(secret["redis_url"].replace("<password>", "x"))
    database_port = port_of(secret["database_url"].replace("<password>", "x"))
    https = port_of(SettingsSchema().fields["base_url"].load_default) or 443
    assert egress == {("UDP", 53), ("TCP", 53), ("TCP", redis_port), ("TCP", database_port), ("TCP", https)}
    (https_rule,) = [rule for rule in policy["egress"] if rule["ports"] == [{"protocol": "TCP", "port": 443}]]
    blocks = {block["ipBlock"]["cidr"]: set(block["ipBlock"]["except"]) for block in https_rule["to"]}
    assert set(blocks) == {"0.0.0.0/0", "::/0"}  # Ayrshare's addresses are not fixed: any public address
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= blocks["0.0.0.0/0"]  # not the cluster's own network
