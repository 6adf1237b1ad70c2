"""Static checks of the deployment files (no Docker engine, no cluster here).

Every file is parsed, validated against its official schema (compose-spec, Kubernetes
OpenAPI), and cross-checked against the code: environment variables and config files
against ``Settings``, container commands against the real CLI, ports and probe paths
against the metrics endpoint, dashboard queries against the live metrics registry.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import typer.main
import yaml
from prometheus_client import CollectorRegistry

from stream_ae.cli import app
from stream_ae.config import Settings
from stream_ae.metrics import Health, MetricsServer, ServiceMetrics

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
EXAMPLE_CONFIG = DEPLOY / "config.example.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "stream-ae.json"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
PROM_RULES = DEPLOY / "prometheus" / "alerts.yml"
K8S_VERSION = "1.30"
ENV_PREFIX = "STREAM_AE_"
YAML_FILES = sorted([COMPOSE, *DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


# --------------------------------------------------------------------------- file helpers
def _yaml_docs(path: pathlib.Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@functools.cache
def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _k8s_objects(include_examples: bool = False) -> list[tuple[pathlib.Path, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml" or (".example." in path.name and not include_examples):
            continue
        out += [(path, doc) for doc in _yaml_docs(path)]
    return out


def _k8s(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in _k8s_objects() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _container() -> dict[str, Any]:
    containers = _k8s("StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- Dockerfile
def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line[:-1].strip()}" if line.endswith("\\") else f"{pending} {line}"
        if not line.endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            pending = ""
    return out


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile()
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    return instructions[last_from:]


def _exec_form(args: str) -> list[str]:
    value = json.loads(args) if args.startswith("[") else shlex.split(args)
    assert isinstance(value, list)
    return [str(v) for v in value]


def _one(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [a for k, a in stage if k == keyword]
    assert len(found) == 1, f"{keyword}: {found}"
    return found[0]


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in _final_stage():
        if keyword == "ENV":
            env.update(kv.split("=", 1) for kv in shlex.split(args))  # type: ignore[misc]
    return env


def _image_argv(command: list[str] | None = None) -> list[str]:
    stage = _final_stage()
    return [*_exec_form(_one(stage, "ENTRYPOINT")), *(command or _exec_form(_one(stage, "CMD")))]


# --------------------------------------------------------------------------- compose
def _compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _our_services() -> dict[str, dict[str, Any]]:
    """Compose services running the stream-ae image."""
    return {
        name: svc
        for name, svc in _compose()["services"].items()
        if "build" in svc or str(svc.get("image", "")).startswith("stream-ae:")
    }


def _detector_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in _our_services().items() if _image_argv(s.get("command"))[1] == "run"}


# --------------------------------------------------------------------------- Kubernetes env
_FIELD_REFS = {"metadata.name": "stream-ae-0", "metadata.namespace": "sensors"}


def _k8s_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's env as the kubelet would expand it (secrets as placeholders)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), item["value"])
        elif "fieldRef" in item["valueFrom"]:
            value = _FIELD_REFS[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            value = "from-secret"
        env[item["name"]] = value
    return env


# --------------------------------------------------------------------------- deployments
# Container paths of config files, and the repository file that is placed there.
def _container_files(tmp: pathlib.Path) -> dict[str, pathlib.Path]:
    configmap = tmp / "configmap-config.yaml"
    configmap.write_text(_k8s("ConfigMap")["data"]["config.yaml"])
    return {
        "/etc/stream-ae/config.yaml": EXAMPLE_CONFIG,  # COPY in the Dockerfile
        "/etc/stream-ae/conf/config.yaml": configmap,  # the ConfigMap volume in k8s
    }


def _deployments() -> dict[str, tuple[dict[str, str], list[str]]]:
    """name -> (environment, argv) of every container that runs stream-ae."""
    image_env = _image_env()
    out = {"dockerfile": (image_env, _image_argv())}
    for name, svc in _our_services().items():
        out[f"compose:{name}"] = (
            {**image_env, **_compose_env(svc)},
            _image_argv(svc.get("command")),
        )
    container = _container()
    argv = container.get("command") or _exec_form(_one(_final_stage(), "ENTRYPOINT"))
    out["k8s:statefulset"] = ({**image_env, **_k8s_env(container)}, [*argv, *container["args"]])
    return out


DEPLOYMENTS = sorted(_deployments())
DETECTORS = sorted(n for n, (_, argv) in _deployments().items() if argv[1] == "run")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    return monkeypatch


def _effective_settings(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> Settings:
    """Settings as the container would load them: its --config file plus its env."""
    env, argv = _deployments()[name]
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)  # nothing from the test process or an earlier container
    for key, value in env.items():
        if key.startswith(ENV_PREFIX):
            monkeypatch.setenv(key, value)
    config = argv[argv.index("--config") + 1] if "--config" in argv else None
    return Settings.load(_container_files(tmp_path)[config] if config else None)


# --------------------------------------------------------------------------- CLI
# typer ships its own copy of click: take its classes from typer, not from `click`
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _parse_cli(argv: list[str]) -> typer.Context:
    """Parse argv with the real CLI down to the leaf command, without running it."""
    assert argv[0] == "stream-ae", argv
    command: Any = typer.main.get_command(app)
    ctx: typer.Context = command.make_context("stream-ae", list(argv[1:]))
    while hasattr(command, "resolve_command"):  # a group: descend into the subcommand
        rest = [*ctx._protected_args, *ctx.args]
        name, sub, args = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None, f"unknown command in {argv}"
        ctx = sub.make_context(name, args, parent=ctx)
        command = sub
    return ctx


# --------------------------------------------------------------------------- settings
def _leaf_paths(model: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            yield from _leaf_paths(ann, (*prefix, name))
        else:
            yield (*prefix, name)


def _env_path(name: str) -> tuple[str, ...]:
    return tuple(name[len(ENV_PREFIX) :].lower().split("__"))


# --------------------------------------------------------------------------- metrics
def _live_metrics() -> dict[str, set[str]]:
    """Sample name -> label names, read from the registry that stream_ae.metrics builds."""
    registry = CollectorRegistry()
    ServiceMetrics(registry)
    names = registry._names_to_collectors  # every sample name, even before first use
    out: dict[str, set[str]] = {}
    for sample, collector in names.items():
        labels = set(getattr(collector, "_labelnames", ()))
        out[sample] = labels | ({"le"} if sample.endswith("_bucket") else set())
    return out


def _promql_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    rules = yaml.safe_load(PROM_RULES.read_text())["groups"]
    return exprs + [r["expr"] for g in rules for r in g["rules"]]


_PROMQL_WORDS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "rate",
    "increase",
    "deriv",
    "histogram_quantile",
    "by",
    "without",
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "offset",
    "bool",
}


def _metric_names(expr: str) -> set[str]:
    no_strings = re.sub(r'"[^"]*"', "", expr)
    no_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without)\s*\([^)]*\)", "", no_strings)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", no_labels))
    return {w for w in words if w not in _PROMQL_WORDS}


def _grouping_labels(expr: str) -> set[str]:
    groups = re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
    selectors = re.findall(r"\{([^}]*)\}", expr)
    labels = {x.strip() for g in groups for x in g.split(",") if x.strip()}
    return labels | {m for s in selectors for m in re.findall(r"(\w+)\s*=", s)}


# =========================================================================== tests: files
@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_loads(path: pathlib.Path) -> None:
    docs = _yaml_docs(path)
    assert docs and all(isinstance(d, dict) for d in docs)


def test_compose_file_matches_the_compose_spec() -> None:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath("compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(_compose())]
    assert errors == []
    broken = {"services": {"x": {"image": "a:1", "helthcheck": {}}}}
    assert list(validator.iter_errors(broken)), "the schema must reject unknown keys"


@pytest.mark.parametrize(
    ("path", "doc"),
    _k8s_objects(include_examples=True),
    ids=lambda v: v.name if isinstance(v, pathlib.Path) else f"{v['kind']}/{v['metadata']['name']}",
)
def test_k8s_manifest_matches_the_kubernetes_schema(
    path: pathlib.Path, doc: dict[str, Any]
) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_k8s_strict_validation_rejects_a_typo() -> None:
    doc = json.loads(json.dumps(_k8s("StatefulSet")))
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    manifests = {p.name for p, _ in _k8s_objects()}
    assert listed == manifests
    assert all((K8S / name).is_file() for name in listed)


def test_images_are_pinned() -> None:
    images = [s["image"] for s in _compose()["services"].values() if "image" in s]
    images += [a.split()[0] for k, a in _dockerfile() if k == "FROM"]
    for image in images:
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert tag and tag != "latest", image


# =========================================================================== tests: config
@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_env_vars_map_to_settings_fields(name: str) -> None:
    env, _ = _deployments()[name]
    leaves = set(_leaf_paths(Settings))
    ours = [k for k in env if k.startswith(ENV_PREFIX)]
    assert ours, f"{name} sets no {ENV_PREFIX}* variable"
    unknown = [k for k in ours if _env_path(k) not in leaves]
    assert unknown == []


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_settings_validate(
    name: str, clean_env: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    settings = _effective_settings(name, clean_env, tmp_path)
    assert settings.metrics.enabled
    assert settings.metrics.host == "0.0.0.0"
    if name.startswith("k8s:"):  # state moves with the partition: no shared volume
        assert settings.checkpoint.store == "kafka"
    else:
        assert settings.checkpoint.store == "directory"
        assert settings.checkpoint.directory == pathlib.Path("/var/lib/stream-ae/checkpoints")


def test_example_config_validates(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings.load(EXAMPLE_CONFIG)
    assert settings.kafka.guarantee == "exactly_once"
    assert settings.kafka.transactional_id is None  # per instance, never in a shared file
    assert settings.kafka.sasl_password is None  # secrets come from the environment


def test_configmap_config_validates(clean_env: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    settings = Settings.load(_container_files(tmp_path)["/etc/stream-ae/conf/config.yaml"])
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.ssl_ca_location is not None
    mounts = {m["mountPath"] for m in _container()["volumeMounts"]}
    assert str(pathlib.PurePosixPath(settings.kafka.ssl_ca_location).parent) in mounts


def test_k8s_secrets_reach_the_sasl_fields() -> None:
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in _container()["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert set(refs) == {"STREAM_AE_KAFKA__SASL_USERNAME", "STREAM_AE_KAFKA__SASL_PASSWORD"}
    example = {d["metadata"]["name"]: d for d in _yaml_docs(K8S / "secret.example.yaml")}
    for ref in refs.values():
        assert ref["key"] in example[ref["name"]]["stringData"]


# =========================================================================== tests: commands
@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_container_command_parses_with_the_real_cli(name: str, tmp_path: pathlib.Path) -> None:
    _, argv = _deployments()[name]
    ctx = _parse_cli(argv)
    assert ctx.info_name == argv[1]
    if "--config" in argv:
        assert str(ctx.params["config"]) == argv[argv.index("--config") + 1]
        assert argv[argv.index("--config") + 1] in _container_files(tmp_path)


def test_cli_parser_rejects_unknown_options() -> None:
    with pytest.raises(UsageError):
        _parse_cli(["stream-ae", "config", "show", "--no-such-option"])
    with pytest.raises(UsageError):
        _parse_cli(["stream-ae", "no-such-command"])
    assert _parse_cli(["stream-ae", "config", "show", "-c", "x.yaml"]).info_name == "show"


def test_dockerfile_structure() -> None:
    instructions = _dockerfile()
    froms = [a for k, a in instructions if k == "FROM"]
    assert len(froms) >= 2 and " AS " in froms[0].upper()
    user = _one(_final_stage(), "USER").split(":")[0]
    assert user not in {"0", "root"}
    assert _exec_form(_one(_final_stage(), "ENTRYPOINT")) == ["stream-ae"]
    assert any(k == "COPY" and "--from=build" in a for k, a in _final_stage())


def test_k8s_runs_as_the_image_user() -> None:
    uid, gid = _one(_final_stage(), "USER").split(":")
    pod = _k8s("StatefulSet")["spec"]["template"]["spec"]["securityContext"]
    assert (str(pod["runAsUser"]), str(pod["runAsGroup"])) == (uid, gid)
    assert pod["runAsNonRoot"] is True
    useradd = " ".join(a for k, a in _final_stage() if k == "RUN")
    assert f"--uid {uid}" in useradd and f"--gid {gid}" in useradd


def test_dockerfile_installs_cpu_torch_pinned_like_the_makefile() -> None:
    args = {
        a.split("=", 1)[0]: a.split("=", 1)[1] for k, a in _dockerfile() if k == "ARG" and "=" in a
    }
    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"TORCH_SPEC \?= torch==(\S+)", makefile)
    assert pinned is not None and args["TORCH_VERSION"] == pinned[1]
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    runs = [a for k, a in _dockerfile() if k == "RUN"]
    assert any('--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in r for r in runs)
    assert any("--constraint" in r and "pip install" in r for r in runs)


def test_dockerfile_copies_existing_files_the_build_context_keeps() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for keyword, args in _dockerfile():
        if keyword == "COPY" and not args.startswith("--from"):
            for src in shlex.split(args)[:-1]:
                assert (ROOT / src).exists(), src
                assert src.rstrip("/") in kept, f"{src} is excluded from the build context"


# =========================================================================== tests: ports
def _metrics_port(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> int:
    return _effective_settings(name, monkeypatch, tmp_path).metrics.port


def test_dockerfile_ports_agree(clean_env: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    port = _metrics_port("dockerfile", clean_env, tmp_path)
    assert _one(_final_stage(), "EXPOSE") == str(port)
    healthcheck = _one(_final_stage(), "HEALTHCHECK")
    assert "/healthz" in healthcheck and f"'STREAM_AE_METRICS__PORT', '{port}'" in healthcheck


@pytest.mark.parametrize("name", [n for n in DETECTORS if n.startswith("compose:")])
def test_compose_ports_agree(
    name: str, clean_env: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    port = _metrics_port(name, clean_env, tmp_path)
    service = _compose()["services"][name.split(":", 1)[1]]
    healthcheck = " ".join(service["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in healthcheck
    assert [p.rsplit(":", 1)[1] for p in service["ports"]] == [str(port)]


def test_k8s_ports_and_probes_agree(clean_env: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    port = _metrics_port("k8s:statefulset", clean_env, tmp_path)
    container = _container()
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named == {"metrics": port}
    probes = {
        k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert {k: named.get(v["port"], v["port"]) for k, v in probes.items()} == dict.fromkeys(
        probes, port
    )
    assert [probes[k]["path"] for k in sorted(probes)] == ["/healthz", "/readyz", "/healthz"]
    service = _k8s("Service")["spec"]["ports"]
    assert [named.get(p["targetPort"], p["targetPort"]) for p in service] == [port]
    annotations = _k8s("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


def test_prometheus_scrapes_every_detector(
    clean_env: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    jobs = yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]
    targets = {t for job in jobs for sc in job["static_configs"] for t in sc["targets"]}
    expected = set()
    for name in DETECTORS:
        if name.startswith("compose:"):
            port = _metrics_port(name, clean_env, tmp_path)
            expected.add(f"{name.split(':', 1)[1]}:{port}")
    assert targets == expected


@pytest.mark.parametrize(("path", "healthy"), [("/healthz", True), ("/healthz", False)])
def test_dockerfile_healthcheck_command_against_a_live_endpoint(path: str, healthy: bool) -> None:
    """Run the image's HEALTHCHECK command against the real /healthz of stream_ae.metrics."""
    health = Health(stale_after=60.0 if healthy else 0.0)
    server = MetricsServer(CollectorRegistry(), health, "127.0.0.1", 0)
    port = server.start()
    try:
        cmd = _exec_form(_one(_final_stage(), "HEALTHCHECK").split(" CMD ", 1)[1])
        assert cmd[0] == "python"
        env = {**os.environ, "STREAM_AE_METRICS__PORT": str(port)}
        proc = subprocess.run([sys.executable, *cmd[1:]], env=env, capture_output=True, timeout=30)
    finally:
        server.stop()
    assert (proc.returncode == 0) is healthy, proc.stderr.decode()[-500:]


def test_probe_paths_are_served(tmp_path: pathlib.Path) -> None:
    import urllib.error
    import urllib.request

    health = Health()
    server = MetricsServer(CollectorRegistry(), health, "127.0.0.1", 0)
    port = server.start()
    codes = {}
    try:
        for path in ("/healthz", "/readyz", "/metrics", "/nope"):
            try:
                codes[path] = urllib.request.urlopen(f"http://127.0.0.1:{port}{path}").status
            except urllib.error.HTTPError as exc:
                codes[path] = exc.code
    finally:
        server.stop()
    assert codes == {"/healthz": 200, "/readyz": 503, "/metrics": 200, "/nope": 404}


# =========================================================================== tests: topology
def test_compose_detectors_have_distinct_stable_transactional_ids() -> None:
    detectors = _detector_services()
    assert len(detectors) == 2
    envs = {n: _compose_env(s) for n, s in detectors.items()}
    ids = {e["STREAM_AE_KAFKA__TRANSACTIONAL_ID"] for e in envs.values()}
    assert len(ids) == len(detectors)
    assert len({e["STREAM_AE_KAFKA__GROUP_ID"] for e in envs.values()}) == 1
    assert all("deploy" not in s or "replicas" not in s["deploy"] for s in detectors.values())


def test_k8s_transactional_id_is_per_pod() -> None:
    env = {e["name"]: e for e in _container()["env"]}
    assert "$(POD_NAME)" in env["STREAM_AE_KAFKA__TRANSACTIONAL_ID"]["value"]
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert _k8s("StatefulSet")["spec"]["replicas"] >= 1


def _created_topics() -> dict[str, int]:
    script = " ".join(_compose()["services"]["topic-init"]["command"])
    return {t: int(n) for t, n in re.findall(r"^\s*create (\S+) (\d+)\s*$", script, re.M)}


def test_compose_creates_every_topic_the_detectors_use(
    clean_env: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    created = _created_topics()
    detectors = [n for n in DETECTORS if n.startswith("compose:")]
    settings = _effective_settings(detectors[0], clean_env, tmp_path)
    k = settings.kafka
    used = {*k.input_topics, k.alerts_topic, k.dead_letter_topic, k.events_topic} - {None}
    assert used <= set(created)
    for topic in k.input_topics:
        assert created[topic] >= max(4, len(detectors))
    simulator = _compose()["services"]["simulator"]["command"]
    assert simulator[simulator.index("--topic") + 1] in k.input_topics


def test_compose_checkpoints_are_shared_storage(
    clean_env: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    volumes = set()
    for name, service in _detector_services().items():
        directory = _effective_settings(f"compose:{name}", clean_env, tmp_path).checkpoint.directory
        volumes |= {
            v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == str(directory)
        }
    assert len(volumes) == 1 and volumes <= set(_compose()["volumes"])


def test_k8s_needs_no_shared_volume(clean_env: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    """The kafka store keeps state in a changelog topic: no PersistentVolumeClaim, no
    ReadWriteMany, nothing mounted for checkpoints; the RWX claim is only an example for
    the directory store."""
    settings = _effective_settings("k8s:statefulset", clean_env, tmp_path)
    assert settings.checkpoint.store == "kafka"
    assert "{topic}" in settings.checkpoint.kafka.topic
    assert "PersistentVolumeClaim" not in [doc["kind"] for _, doc in _k8s_objects()]
    pod = _k8s("StatefulSet")["spec"]
    assert "volumeClaimTemplates" not in pod
    claims = [v for v in pod["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == []
    example = _yaml_docs(K8S / "pvc-directory-store.example.yaml")
    assert [d["spec"]["accessModes"] for d in example] == [["ReadWriteMany"]]


# =========================================================================== tests: metrics
def test_dashboard_and_rules_use_only_real_metrics() -> None:
    live = _live_metrics()
    exprs = _promql_exprs()
    assert len(exprs) >= 8
    for expr in exprs:
        names = _metric_names(expr)
        assert names, expr
        ours = names - {"up"}
        assert ours <= set(live), f"{expr}: unknown {ours - set(live)}"
        allowed = {"instance", "job"}.union(*(live[n] for n in ours))
        assert _grouping_labels(expr) <= allowed, expr


def test_metric_name_extraction_can_fail() -> None:
    assert _metric_names('sum by (topic) (rate(stream_ae_nope_total{a="b"}[5m]))') == {
        "stream_ae_nope_total"
    }
    assert "stream_ae_nope_total" not in _live_metrics()
    assert _grouping_labels('max by (topic, le) (x{quantile="0.9"})') == {"topic", "le", "quantile"}


def test_dashboard_covers_the_operational_signals() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in (
        "records_in_total",
        "consumer_lag",
        "alerts_total",
        "threshold",
        "drift_events_total",
        "checkpoint_age_seconds",
    ):
        assert f"stream_ae_{metric}" in exprs, metric
    assert len({p["id"] for p in panels}) == len(panels)


def test_grafana_provisioning_is_consistent() -> None:
    grafana = DEPLOY / "grafana"
    source = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yml").read_text())
    [ds] = source["datasources"]
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {ds["uid"]}
    prometheus = _compose()["services"]["prometheus"]
    assert ds["url"] == f"http://prometheus:{prometheus['ports'][0].split(':')[-1]}"
    provider = yaml.safe_load((grafana / "provisioning/dashboards/stream-ae.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    mounts = {
        v.split(":")[1]: v.split(":")[0] for v in _compose()["services"]["grafana"]["volumes"]
    }
    assert (ROOT / mounts[path]).resolve() == DASHBOARD.parent.resolve()


# =========================================================================== smoke: real broker
def _local_run_env(
    name: str, bootstrap: str, rename: dict[str, str], tag: str, tmp: pathlib.Path
) -> tuple[dict[str, str], list[str], int]:
    """A compose detector's env and argv, pointed at a local broker, unique names, free port."""
    from stream_ae.apps.broker import free_port

    env, argv = _deployments()[f"compose:{name}"]
    env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    for key in ("ALERTS_TOPIC", "DEAD_LETTER_TOPIC", "EVENTS_TOPIC", "INPUT_TOPICS"):
        var = f"STREAM_AE_KAFKA__{key}"
        env[var] = ",".join(rename[t] for t in env[var].split(","))
    port = free_port()
    env |= {
        "STREAM_AE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_AE_KAFKA__GROUP_ID": f"{env['STREAM_AE_KAFKA__GROUP_ID']}-{tag}",
        "STREAM_AE_KAFKA__TRANSACTIONAL_ID": f"{env['STREAM_AE_KAFKA__TRANSACTIONAL_ID']}-{tag}",
        "STREAM_AE_KAFKA__SESSION_TIMEOUT_MS": "6000",  # quick group joins (broker notes)
        "STREAM_AE_CHECKPOINT__DIRECTORY": str(tmp / "checkpoints"),  # one shared directory
        "STREAM_AE_METRICS__HOST": "127.0.0.1",
        "STREAM_AE_METRICS__PORT": str(port),
        "STREAM_AE_ENGINE__TRAINING__WARMUP": "200",
    }
    config = argv[argv.index("--config") + 1]
    argv = [*argv[: argv.index("--config") + 1], str(_container_files(tmp)[config])]
    return env, argv, port


def _spawn(argv: list[str], env: dict[str, str], log: pathlib.Path) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return subprocess.Popen(
        [sys.executable, "-m", "stream_ae.cli", *argv[1:]],
        env={**base, **env, "OMP_NUM_THREADS": "1"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _http(port: int, path: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def _records_in(port: int) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    _, text = _http(port, "/metrics")
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "stream_ae_records_in_total"
    )


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def _simulate(bootstrap: str, topic: str, log: pathlib.Path) -> int:
    _, argv = _deployments()["compose:simulator"]
    argv = list(argv)
    argv[argv.index("--bootstrap") + 1] = bootstrap
    argv[argv.index("--topic") + 1] = topic
    base = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    proc = subprocess.run(
        [sys.executable, "-m", "stream_ae.cli", *argv[1:], "--duration", "4"],
        env=base,
        capture_output=True,
        timeout=120,
    )
    log.write_bytes(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    produced = re.search(r"produced (\d+) records", proc.stdout.decode())
    assert produced is not None, proc.stdout.decode()
    return int(produced[1])


@pytest.mark.integration
@pytest.mark.slow
def test_compose_detectors_share_the_work_on_a_real_broker(
    tmp_path: pathlib.Path, clean_env: pytest.MonkeyPatch
) -> None:
    """The two compose replicas, as configured (example config + their env), split the
    input partitions of one group, serve /readyz and /metrics, count every simulated
    record, write checkpoints to the shared directory and stop cleanly on SIGTERM."""
    import contextlib
    import signal

    from stream_ae.apps.broker import EmbeddedBroker, create_topics
    from stream_ae.testing import external_bootstrap, unique_name

    with contextlib.ExitStack() as stack:
        bootstrap = (
            external_bootstrap()
            or stack.enter_context(EmbeddedBroker(log_path=tmp_path / "broker.log")).bootstrap
        )
        tag = unique_name("deploy")
        rename = {t: f"{t}-{tag}" for t in _created_topics()}
        create_topics(bootstrap, {rename[t]: n for t, n in _created_topics().items()})
        procs = {}
        for name in sorted(_detector_services()):
            env, argv, port = _local_run_env(name, bootstrap, rename, tag, tmp_path)
            procs[name] = (_spawn(argv, env, tmp_path / f"{name}.log"), port)
            stack.callback(_kill, procs[name][0])
        for name, (_, port) in procs.items():
            _wait_for(lambda p=port: _http(p, "/readyz")[0] == 200, 90, f"{name} ready")
        produced = _simulate(bootstrap, rename["sensors"], tmp_path / "simulator.log")
        ports = [port for _, port in procs.values()]
        _wait_for(lambda: sum(map(_records_in, ports)) >= produced, 90, "all records consumed")
        assert sum(map(_records_in, ports)) == produced
        assert all(_records_in(p) > 0 for p in ports), "both replicas own partitions"
        for proc, _ in procs.values():
            proc.send_signal(signal.SIGTERM)
        assert [proc.wait(timeout=60) for proc, _ in procs.values()] == [0] * len(procs)
    written = {p.parent.name for p in (tmp_path / "checkpoints" / rename["sensors"]).rglob("*.bin")}
    assert len(written) == _created_topics()["sensors"]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
