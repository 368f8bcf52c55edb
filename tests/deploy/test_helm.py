"""The Helm chart (helm/podgate), rendered by Helm itself and checked as Kubernetes would.

Rendering uses Helm's own engine: ``helm-python-sdk`` binds Helm's Go SDK (libhelm_c) through
ctypes, so no ``helm`` binary is needed. Values files are read as ``helm -f`` reads them
(``values_from_yaml``) and coalesced with the chart's defaults by Helm. A chart is loaded
afresh for every render: Helm drops disabled subcharts from the loaded chart while it
renders, so a second render from the same handle could miss the Redis subchart.

Every rendered manifest is validated against the JSON schemas of Kubernetes 1.34
(``kubernetes-validate``, strict: an unknown field is an error). The ServiceMonitor is a
Prometheus Operator CRD, for which kubernetes-validate ships no schema: it alone is skipped,
the test asserts that it is the only kind skipped, and its few fields are checked by hand.

Then what the chart means, through podgate's own code: the ConfigMap's podgate.toml decodes
with ``proxy.settings.parse_settings``; the client keys Secret decodes as ``[[keys]]``; the
grace period covers preStop + drain; probes, security context, Secrets and Redis are wired
as the contract (/work/briefs/contract.md) says.

The settings the chart itself writes (``CHART_SETTINGS``: the drain, the log format, the
/health poll, Redis, ``keys_file``) are each checked to decode to what the values asked for.
"""

from __future__ import annotations

import base64
import copy
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from proxy.settings import ProxySettings, SettingsError, parse_settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "podgate"
FULL_VALUES = Path(__file__).with_name("values-full.yaml")
KUBERNETES = "1.34.0"
RELEASE = "demo"
CONFIG_PATH = "/etc/podgate/podgate.toml"
KEYS_PATH = "/etc/podgate/keys/keys.toml"
ENV = {"RUNPOD_API_KEY": "x"}

# Settings the chart writes from its own values; (path, value the full values file gives them).
CHART_SETTINGS: list[tuple[tuple[str, ...], Any]] = [
    (("server", "drain_s"), 45.5),
    (("server", "log_format"), "json"),
    (("metrics", "health_interval_s"), 30),
    (("redis", "url"), f"redis://{RELEASE}-redis:6379/0"),
    (("keys_file",), KEYS_PATH),
    (("keys", "rpm"), None),  # checked on the keys (test_keys_secret_decodes_as_keys)
    (("keys", "tpm"), None),
]


# --- rendering ---------------------------------------------------------------------------

def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def full_values(**over: Any) -> dict[str, Any]:
    return _merge(helm.values_from_yaml(FULL_VALUES.read_text()), over)


class Rendered:
    """One render of the chart: manifests by kind and name, and podgate's files in them."""

    def __init__(self, values: dict[str, Any] | None) -> None:
        with helm.Chart.load(CHART) as chart:
            files = chart.render(values=values, name=RELEASE, namespace="llm")
        self.notes = files.pop("podgate/templates/NOTES.txt")
        self.manifests = [doc for text in files.values() for doc in yaml.safe_load_all(text) if doc]
        self.text = "\n".join(files.values())

    def get(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [m for m in self.manifests if m["kind"] == kind and name in (None, m["metadata"]["name"])]
        assert len(found) == 1, f"{kind} {name or ''}: {len(found)} rendered"
        return found[0]

    def has(self, kind: str) -> bool:
        return any(m["kind"] == kind for m in self.manifests)

    @property
    def deployment(self) -> dict[str, Any]:
        return self.get("Deployment", f"{RELEASE}-podgate")

    @property
    def pod(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod["containers"]
        return container

    @property
    def toml(self) -> str:
        return self.get("ConfigMap")["data"]["podgate.toml"]

    def secret_data(self, name: str = f"{RELEASE}-podgate") -> dict[str, str]:
        data = self.get("Secret", name)["data"]
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    def env(self) -> dict[str, Any]:
        return {e["name"]: e for e in self.container.get("env", [])}


def render_error(values: dict[str, Any]) -> str:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmRenderError) as caught:
        chart.render(values=values, name=RELEASE)
    return str(caught.value)


@pytest.fixture(scope="module")
def default() -> Rendered:
    return Rendered(None)


@pytest.fixture(scope="module")
def full() -> Rendered:
    return Rendered(full_values())


# --- decoding with podgate's own settings decoder ------------------------------------------

def without(toml: str, paths: set[tuple[str, ...]]) -> str:
    """``toml`` (as the chart writes it: one ``key = value`` a line) without ``paths``: a
    top-level key ``(key,)`` or a whole table, or a key of a table ``(table, key)``."""
    kept, table = [], None
    for line in toml.splitlines():
        header = line.strip().strip("[]") if line.startswith("[") else None
        if header is not None:
            table = header
        key = line.split("=", 1)[0].strip() if "=" in line and header is None else None
        if (table,) in paths or (table is None and (key,) in paths) or (table, key) in paths:
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def decode(toml: str, *, keys_file: bool = False) -> ProxySettings:
    """podgate's settings from the chart's TOML, less ``keys_file`` unless asked: that file is
    the keys Secret mounted in the pod, absent here (test_chart_setting_decodes[keys_file]
    reads a copy of it)."""
    return parse_settings(toml if keys_file else without(toml, {("keys_file",)}), ENV, source="podgate.toml")


def value_at(settings: ProxySettings, path: tuple[str, ...]) -> Any:
    value: Any = settings
    for name in path:
        value = getattr(value, name)
    return value


# --- Helm's lint and Kubernetes' schemas ---------------------------------------------------

@pytest.mark.parametrize("values", [None, "full"])
def test_lint_is_clean(values: str | None) -> None:
    report = helm.lint(CHART, full_values() if values else None, strict=True, with_subcharts=True,
                       kube_version=f"v{KUBERNETES}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("values, skipped", [(None, set()), ("full", {"ServiceMonitor"})])
def test_every_manifest_is_valid_for_kubernetes(values: str | None, skipped: set[str]) -> None:
    rendered = Rendered(full_values() if values else None)
    no_schema, invalid = set(), []
    for manifest in rendered.manifests:
        try:
            kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            no_schema.add(manifest["kind"])
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(map(str, exc.path))
            invalid.append(f"{manifest['kind']} {manifest['metadata']['name']}: {where}: {exc.message}")
    assert not invalid, "\n".join(invalid)
    assert no_schema == skipped


def test_full_values_render_every_part(full: Rendered) -> None:
    kinds = sorted(m["kind"] for m in full.manifests)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "Secret", "Service", "Service", "ServiceAccount",
                     "ServiceMonitor"]


def test_service_monitor_scrapes_metrics(full: Rendered) -> None:
    """Checked by hand: kubernetes-validate has no schema for this CRD."""
    monitor = full.get("ServiceMonitor")
    service = full.get("Service", f"{RELEASE}-podgate")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= full.get("Service", f"{RELEASE}-redis")["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "5s"}
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


# --- podgate.toml -------------------------------------------------------------------------

def test_default_values_need_only_models(default: Rendered) -> None:
    """The defaults render, and podgate's decoder finds one thing missing: the models."""
    with pytest.raises(SettingsError, match=r"podgate.toml: models: at least one \[\[models\]\] entry is required"):
        decode(default.toml)
    models = {"config": {"models": [{"name": "m", "endpoint": "abc123", "format": "vllm"}]}}
    settings = decode(Rendered(models).toml)
    assert [m.name for m in settings.models] == ["m"]
    assert settings.runpod.base_url == "https://api.runpod.ai/v2"


def test_full_config_decodes(full: Rendered) -> None:
    settings = decode(full.toml)
    assert [(m.name, m.endpoint, m.format) for m in settings.models] == [
        ("llama-3-8b", "abc123xyz", "vllm"), ("qwen", "def456uvw", "openai"), ("bge", "ghi789rst", "infinity")]
    assert settings.models[0].served_model == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert (settings.models[1].queue_format, settings.models[1].passthrough_max_tokens) == ("vllm", 4096)
    assert settings.server.cors_origins == ["https://chat.example.com"]
    timing = settings.timing
    assert (timing.keepalive_s, timing.first_byte_wait_s, timing.request_timeout_s) == (15, 0.5, 900)
    assert (timing.max_connections, timing.cancel_retries) == (200, 5)
    assert settings.runpod.api_key_env == "RUNPOD_API_KEY" and settings.api_key == "x"
    assert settings.keys == []  # the client keys are in the Secret (keys_file), not here


@pytest.mark.parametrize("path, expected", [(p, v) for p, v in CHART_SETTINGS if v is not None],
                         ids=lambda p: ".".join(p) if isinstance(p, tuple) else None)
def test_chart_setting_decodes(full: Rendered, path: tuple[str, ...], expected: Any, tmp_path: Path) -> None:
    toml = full.toml
    if path == ("keys_file",):  # the file must exist to be read: the Secret's, on disk
        keys_file = tmp_path / "keys.toml"
        keys_file.write_text(full.secret_data()["keys.toml"])
        assert toml.count(f'"{KEYS_PATH}"') == 1
        toml = toml.replace(f'"{KEYS_PATH}"', f'"{keys_file}"')
        expected = str(keys_file)
    settings = decode(toml, keys_file=path == ("keys_file",))
    assert value_at(settings, path) == expected
    if path == ("keys_file",):
        assert [k.name for k in settings.keys] == ["team-a", "team-b"]


def test_budgets_are_split_between_the_most_replicas_there_may_be(default: Rendered, full: Rendered) -> None:
    """RunPod's per-endpoint limits, split between the replicas: replicaCount, or the HPA's
    maximum; config.budgets.replicas wins."""
    models = {"models": [{"name": "m", "endpoint": "abc123", "format": "vllm"}]}
    assert decode(Rendered({"config": models}).toml).budgets.replicas == 2  # replicaCount
    assert decode(full.toml).budgets.replicas == 12  # autoscaling.maxReplicas
    chosen = Rendered({"config": {**models, "budgets": {"replicas": 5}}})
    assert decode(chosen.toml).budgets.replicas == 5


def test_keys_secret_decodes_as_keys(full: Rendered) -> None:
    """keys.toml holds ``[[keys]]`` entries that podgate's decoder takes (checked inline in
    podgate.toml, so that the models they name are checked too)."""
    keys_toml = full.secret_data()["keys.toml"]
    assert set(tomllib.loads(keys_toml)) == {"keys"}
    settings = decode(full.toml + "\n" + keys_toml)
    assert [(k.name, k.sha256, k.models) for k in settings.keys] == [
        ("team-a", "8879f6a4ae35c420a15d35fed3b8dd07577207803d404f6d4cc4fa829dafa910", ["llama-3-8b"]),
        ("team-b", "292d075b18c9240a48b848c521422c5f418f7dd16b5c66755fe58d0fb6a43e1f", None)]
    assert [(k.rpm, k.tpm) for k in settings.keys] == [(600, 200000), (None, None)]


def test_toml_values_survive_any_characters() -> None:
    odd = 'meta/"quoted" \\ back\tslash <&> ünïcode ✓'
    rendered = Rendered({"config": {"models": [{"name": "m", "endpoint": "e1", "format": "tgi", "served_model": odd}]}})
    assert decode(rendered.toml).models[0].served_model == odd


def test_chart_owned_settings_are_refused() -> None:
    assert "shutdown.drainSeconds" in render_error({"config": {"server": {"drain_s": 5}}})
    assert "container's args" in render_error({"config": {"server": {"port": 9000}}})
    assert "clientKeys" in render_error({"config": {"keys": [{"name": "a", "sha256": "0" * 64}]}})
    assert "tables at this depth" in render_error({"config": {"timing": {"nested": {"a": 1}}}})


# --- the pod -------------------------------------------------------------------------------

@pytest.mark.parametrize("values", [None, "full"])
def test_container_runs_podgate_with_its_config(values: str | None) -> None:
    rendered = Rendered(full_values() if values else None)
    container = rendered.container
    assert container["command"] == ["podgate"]
    assert container["args"] == ["serve", "--config", CONFIG_PATH, "--host", "0.0.0.0", "--port", "8000"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    config = mounts[CONFIG_PATH]
    assert config["subPath"] == "podgate.toml" and config["readOnly"] is True
    assert volumes[config["name"]]["configMap"]["name"] == rendered.get("ConfigMap")["metadata"]["name"]
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]
    service = rendered.get("Service", f"{RELEASE}-podgate")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"].items() <= rendered.deployment["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("values", [None, "full"])
def test_probes(values: str | None) -> None:
    container = Rendered(full_values() if values else None).container
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


@pytest.mark.parametrize("values", [None, "full"])
def test_security_context(values: str | None) -> None:
    rendered = Rendered(full_values() if values else None)
    pods = [rendered.pod] + ([rendered.get("Deployment", f"{RELEASE}-redis")["spec"]["template"]["spec"]]
                             if values else [])
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
    assert rendered.pod["securityContext"]["runAsUser"] == 10001
    assert rendered.pod["securityContext"]["runAsGroup"] == 10001


@pytest.mark.parametrize("values, hook", [(None, "exec"), ("full", "sleep")])
def test_grace_period_covers_prestop_and_drain(values: str | None, hook: str) -> None:
    rendered = Rendered(full_values() if values else None)
    pre_stop = rendered.container["lifecycle"]["preStop"]
    assert list(pre_stop) == [hook]
    if hook == "sleep":
        seconds = pre_stop["sleep"]["seconds"]
    else:
        command = pre_stop["exec"]["command"]
        assert command[:2] == ["python", "-c"]
        seconds = float(command[2].removeprefix("import time; time.sleep(").removesuffix(")"))
    drain_s = tomllib.loads(rendered.toml)["server"]["drain_s"]
    expected = (5, 20) if values is None else (7, 45.5)  # shutdown.preStopSeconds, drainSeconds
    assert (seconds, drain_s) == expected
    assert rendered.pod["terminationGracePeriodSeconds"] > seconds + drain_s


def test_no_prestop_hook_when_zero() -> None:
    rendered = Rendered({"shutdown": {"preStopSeconds": 0, "drainSeconds": 3, "marginSeconds": 2}})
    assert "lifecycle" not in rendered.container
    assert rendered.pod["terminationGracePeriodSeconds"] == 5


def test_checksums_roll_the_pods_on_changes() -> None:
    def annotations(values: dict[str, Any]) -> dict[str, str]:
        return Rendered(_merge({"runpod": {"apiKey": "rp-1"}}, values)).deployment["spec"]["template"]["metadata"]["annotations"]

    base = annotations({})
    config = annotations({"config": {"server": {"cors_origins": ["https://a.example.com"]}}})
    secret = annotations({"runpod": {"apiKey": "rp-2"}})
    assert config["checksum/config"] != base["checksum/config"] and config["checksum/secret"] == base["checksum/secret"]
    assert secret["checksum/secret"] != base["checksum/secret"] and secret["checksum/config"] == base["checksum/config"]


def test_autoscaling_and_disruption_budget(full: Rendered, default: Rendered) -> None:
    assert default.deployment["spec"]["replicas"] == 2
    assert not (default.has("HorizontalPodAutoscaler") or default.has("PodDisruptionBudget") or default.has("ServiceMonitor"))
    assert "replicas" not in full.deployment["spec"]  # the HPA owns the count
    hpa = full.get("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{RELEASE}-podgate"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    pdb = full.get("PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 2
    pod_labels = full.deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()


# --- Secrets: RunPod key, client keys, Redis -----------------------------------------------

def test_runpod_key_from_the_charts_secret_never_in_the_configmap() -> None:
    key = "rp_live_0123456789abcdef"
    rendered = Rendered({"runpod": {"apiKey": key}, "config": {"runpod": {"api_key_env": "RP_KEY"}}})
    assert rendered.secret_data() == {"runpod-api-key": key}
    ref = rendered.env()["RP_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": f"{RELEASE}-podgate", "key": "runpod-api-key"}
    texts = [yaml.safe_dump(m) for m in rendered.manifests if m["kind"] != "Secret"]
    assert not any(key in text for text in texts) and key not in rendered.notes
    assert key not in rendered.toml and 'api_key_env = "RP_KEY"' in rendered.toml


def test_existing_secrets_are_referenced(full: Rendered) -> None:
    """values-full takes the RunPod key from an existing Secret: the chart's Secret holds
    only the client keys; with every secret existing, the chart makes no Secret at all."""
    ref = full.env()["RUNPOD_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "runpod-credentials", "key": "api-key"}
    assert set(full.secret_data()) == {"keys.toml"}
    rendered = Rendered(full_values(
        clientKeys={"keys": [], "existingSecret": "team-keys", "existingSecretKey": "podgate-keys"}))
    assert not rendered.has("Secret")
    volume = next(v for v in rendered.pod["volumes"] if "secret" in v)
    assert volume["secret"] == {"secretName": "team-keys", "items": [{"key": "podgate-keys", "path": "keys.toml"}]}
    mount = next(m for m in rendered.container["volumeMounts"] if m["name"] == volume["name"])
    assert mount["mountPath"] + "/keys.toml" == KEYS_PATH
    assert tomllib.loads(rendered.toml)["keys_file"] == KEYS_PATH


def test_no_client_keys_no_keys_file(default: Rendered) -> None:
    assert "keys_file" not in tomllib.loads(default.toml)
    assert not default.has("Secret")
    assert all("secret" not in v for v in default.pod["volumes"])
    assert "OPEN to everyone" in default.notes


def test_redis_subchart_url_names_its_service(full: Rendered) -> None:
    url = tomllib.loads(full.toml)["redis"]["url"]
    service = full.get("Service", f"{RELEASE}-redis")
    port = service["spec"]["ports"][0]["port"]
    assert url == f"redis://{service['metadata']['name']}:{port}/0"
    redis = full.get("Deployment", f"{RELEASE}-redis")["spec"]
    assert service["spec"]["selector"].items() <= redis["template"]["metadata"]["labels"].items()
    (container,) = redis["template"]["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == port
    assert container["args"][container["args"].index("--save") + 1] == ""  # no persistence
    assert "PODGATE_REDIS_URL" not in full.env()


def test_external_redis_url_goes_through_a_secret() -> None:
    url = "redis://:s3cret-pass@redis.example.com:6380/2"
    rendered = Rendered(full_values(redis={"enabled": False, "url": url}))
    assert [m["metadata"]["name"] for m in rendered.manifests if m["kind"] == "Deployment"] == [f"{RELEASE}-podgate"]
    assert "redis" not in tomllib.loads(rendered.toml)
    assert rendered.secret_data()["redis-url"] == url
    ref = rendered.env()["PODGATE_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": f"{RELEASE}-podgate", "key": "redis-url"}
    assert "s3cret-pass" not in rendered.toml


def test_external_redis_from_an_existing_secret() -> None:
    rendered = Rendered({"redis": {"existingSecret": "redis-auth", "existingSecretKey": "url"}})
    ref = rendered.env()["PODGATE_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "redis-auth", "key": "url"}
    assert not rendered.has("Secret") and "redis" not in tomllib.loads(rendered.toml)


def test_one_redis_source_only() -> None:
    message = render_error({"redis": {"enabled": True, "url": "redis://r:6379/0"}})
    assert "choose one of redis.enabled" in message
