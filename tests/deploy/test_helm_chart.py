"""deploy/helm/meterline renders objects Kubernetes accepts, configured the way meterline reads it.

Rendered by the pinned Helm (deploy/helm/helm-tools.sh builds it when missing) and
checked against the Kubernetes API schemas that kubernetes-validate ships.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "meterline"
MANAGED = ROOT / "deploy" / "helm" / "examples" / "managed.yaml"
CLUSTER = ROOT / "deploy" / "helm" / "examples" / "cluster.yaml"
KUBE = "1.33.0"


@pytest.fixture(scope="module")
def helm() -> str:
    tool = subprocess.run(
        ["bash", str(ROOT / "deploy" / "helm" / "helm-tools.sh")],
        capture_output=True,
        text=True,
        check=True,
    )
    return tool.stdout.strip()


def render(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, "template", "m", str(CHART), "--kube-version", KUBE, *args],
        capture_output=True,
        text=True,
    )


def objects(helm: str, *args: str) -> list[dict[str, Any]]:
    result = render(helm, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    [found] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    return found


def containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c
        for d in docs
        if d["kind"] in ("Deployment", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
    ]


@pytest.mark.parametrize("values", [[], ["-f", str(MANAGED)]], ids=["default", "managed"])
def test_every_rendered_object_passes_the_strict_kubernetes_schema(
    helm: str, values: list[str]
) -> None:
    docs = objects(helm, *values)
    assert {d["kind"] for d in docs} >= {
        "Deployment",
        "Job",
        "ConfigMap",
        "Service",
        "PodDisruptionBudget",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE, strict=True)


def test_schema_check_refuses_a_misspelled_field(helm: str) -> None:
    gateway = one(objects(helm), "Deployment", "-gateway")
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(gateway, KUBE, strict=True)


def test_more_processor_members_than_partitions_is_refused_at_render(helm: str) -> None:
    result = render(
        helm,
        "--set",
        "kafka.partitions=6",
        "--set",
        "processor.replicas=4",
        "--set",
        "processor.workers=2",
    )
    assert result.returncode != 0
    assert "= 8 consumer-group members, more than kafka.partitions (6)" in result.stderr


def test_sasl_without_a_sasl_protocol_is_refused_at_render(helm: str) -> None:
    result = render(
        helm,
        "--set",
        "kafka.saslMechanism=PLAIN",
        "--set",
        "secrets.kafkaSaslUsername=u",
        "--set",
        "secrets.kafkaSaslPassword=p",
    )
    assert result.returncode != 0
    assert 'kafka.securityProtocol is ""' in result.stderr


@pytest.mark.parametrize(
    "values",
    [[], ["-f", str(MANAGED)], ["-f", str(CLUSTER)]],
    ids=["default", "managed", "cluster"],
)
def test_every_variable_the_chart_sets_is_a_valid_meterline_setting(
    helm: str, values: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = objects(helm, *values)
    env = dict(one(docs, "ConfigMap", "-config")["data"])
    for container in containers(docs):
        for var in container.get("env", []):
            env.setdefault(var["name"], "from-a-secret")
    names = {n for n in env if n.startswith("METERLINE_")}
    fields = {f"METERLINE_{f.upper()}" for f in Settings.model_fields}
    assert names - fields == set()  # a typo here would be silently ignored at run time
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.log == "kafka" and settings.store == "clickhouse"
    assert settings.host == "0.0.0.0"  # the processor's /metrics must be reachable
    if MANAGED.name in "".join(values):
        assert settings.kafka_config()["security.protocol"] == "sasl_ssl"
        assert settings.kafka_config()["sasl.password"] == "from-a-secret"
    if CLUSTER.name in "".join(values):
        # clickhouse.cluster / insertQuorum reach every process (the migrate Job too).
        assert (settings.clickhouse_cluster, settings.clickhouse_insert_quorum) == ("billing", 2)
    else:
        assert (settings.clickhouse_cluster, settings.clickhouse_insert_quorum) == (None, None)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            ["--set", "clickhouse.insertQuorum=2"],
            "clickhouse.insertQuorum is 2 but clickhouse.cluster is empty",
        ),
        (
            ["--set", "clickhouse.cluster=billing", "--set", "clickhouse.insertQuorum=1"],
            "clickhouse.insertQuorum is 1, which ClickHouse treats as no quorum",
        ),
    ],
    ids=["quorum-without-cluster", "quorum-of-one"],
)
def test_an_insert_quorum_that_cannot_work_is_refused_at_render(
    helm: str, values: list[str], message: str
) -> None:
    result = render(helm, *values)
    assert result.returncode != 0
    assert message in result.stderr


def test_migrate_job_is_a_hook_that_runs_after_the_config_it_reads(helm: str) -> None:
    docs = objects(helm)
    job = one(docs, "Job", "-migrate")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["meterline", "migrate"]
    hooks = {
        d["kind"]: d["metadata"].get("annotations", {})
        for d in docs
        if d["kind"] in ("Job", "ConfigMap", "Secret", "ServiceAccount")
    }
    assert hooks["Job"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    for kind in ("ConfigMap", "Secret", "ServiceAccount"):
        # Regular objects are created after pre-install hooks: the Job needs these first.
        assert hooks[kind]["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(hooks[kind]["helm.sh/hook-weight"]) < int(hooks["Job"]["helm.sh/hook-weight"])


def test_every_container_runs_as_non_root_on_a_read_only_root(helm: str) -> None:
    docs = objects(helm, "-f", str(MANAGED))
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] != 0
            assert pod["automountServiceAccountToken"] is False
    for container in containers(docs):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/data", "/tmp"} <= mounts  # the only writable places


def test_gateway_probes_readyz_and_healthz_and_both_roles_are_scraped(helm: str) -> None:
    docs = objects(helm)
    gateway = one(docs, "Deployment", "-gateway")["spec"]["template"]
    [container] = gateway["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    processor = one(docs, "Deployment", "-processor")["spec"]["template"]
    assert processor["metadata"]["annotations"]["prometheus.io/port"] == "9464"
    assert processor["spec"]["containers"][0]["ports"][0]["containerPort"] == 9464


def test_credentials_reach_pods_only_through_the_secret(helm: str) -> None:
    docs = objects(
        helm,
        "--set",
        "secrets.clickhousePassword=ch-pass-7f3a",
        "--set",
        "kafka.securityProtocol=sasl_ssl",
        "--set",
        "kafka.saslMechanism=SCRAM-SHA-512",
        "--set",
        "secrets.kafkaSaslUsername=kafka-user",
        "--set",
        "secrets.kafkaSaslPassword=kafka-pass-91bc",
    )
    for doc in docs:
        text = yaml.safe_dump(doc)
        if doc["kind"] == "Secret":
            assert "ch-pass-7f3a" in text and "kafka-pass-91bc" in text
        else:
            assert "ch-pass-7f3a" not in text and "kafka-pass-91bc" not in text
    refs = {
        v["name"]: v["valueFrom"]["secretKeyRef"]["key"] for c in containers(docs) for v in c["env"]
    }
    assert refs == {
        "METERLINE_CLICKHOUSE_PASSWORD": "clickhouse-password",
        "METERLINE_KAFKA_SASL_USERNAME": "kafka-sasl-username",
        "METERLINE_KAFKA_SASL_PASSWORD": "kafka-sasl-password",
    }


def test_a_credential_in_kafka_extra_is_refused_at_render(helm: str) -> None:
    result = render(helm, "--set", "kafka.extra.sasl\\.password=oops")
    assert result.returncode != 0
    assert "kafka.extra.sasl.password: set it with its own value" in result.stderr


def test_the_compose_file_sets_only_real_settings() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    env = compose["x-meterline-app"]["environment"]
    fields = {f"METERLINE_{f.upper()}" for f in Settings.model_fields}
    assert set(env) - fields == set()
    assert "METERLINE_CLICKHOUSE_PASSWORD" in env  # not inside the URL, where it would print
