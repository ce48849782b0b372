"""Checks of the deployment files that run without Docker or a GPU.

Covers docker-compose.yml, Dockerfile.backend.gpu, .dockerignore, ops/prometheus/ and
ops/grafana/ against the fixed contract: service names, environment variables, metric names.
The promtool checks run when promtool is on PATH (Debian: `apt-get install prometheus`);
`docker compose config` runs when the Compose plugin is installed.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile.backend.gpu"
DOCKERIGNORE = ROOT / ".dockerignore"
REQUIREMENTS = ROOT / "requirements.txt"
PROM_DIR = ROOT / "ops" / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
PROM_RULES = PROM_DIR / "alerts.yml"
PROM_RULES_TEST = PROM_DIR / "alerts_test.yml"
GRAFANA_DIR = ROOT / "ops" / "grafana"
GRAFANA_DATASOURCE = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARD = GRAFANA_DIR / "dashboards" / "processor.json"
OPS_README = ROOT / "ops" / "README.md"

# --- the contract ---------------------------------------------------------------------------

COUNTERS = {
    "processor_events_consumed_total",
    "processor_events_total",
    "processor_dead_letters_total",
    "processor_outputs_produced_total",
    "processor_alerts_total",
    "processor_commits_total",
    "processor_commit_failures_total",
    "processor_delivery_failures_total",
    "processor_producer_queue_full_total",
}
HISTOGRAMS = {
    "processor_batch_size",
    "processor_inference_seconds",
    "processor_end_to_end_latency_seconds",
}
GAUGES = {
    "processor_in_flight_events",
    "processor_paused_partitions",
    "processor_consumer_lag_messages",
    "processor_ready",
    "processor_model_info",
    "processor_gpu_available",
    "processor_gpu_utilization_ratio",
    "processor_gpu_memory_used_bytes",
    "processor_gpu_memory_total_bytes",
    "processor_torch_cuda_allocated_bytes",
}
HISTOGRAM_SERIES = {h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
ALLOWED_SERIES = COUNTERS | GAUGES | HISTOGRAM_SERIES

ENV_CONTRACT = {
    "PROCESSOR_BOOTSTRAP_SERVERS",
    "PROCESSOR_GROUP_ID",
    "PROCESSOR_MODEL_DIR",
    "PROCESSOR_METRICS_PORT",
    "PROCESSOR_DEVICE",
    "PROCESSOR_KAFKA",
    "HF_HUB_OFFLINE",
}
RAW_TOPICS = {"transactions.raw", "documents.raw"}
OUTPUT_TOPICS = {"transactions.enriched", "documents.enriched", "alerts", "events.dlq"}
REQUIRED_SERVICES = {"kafka", "topics", "processor", "prometheus", "grafana"}
METRICS_PORT = 9400

METRIC_NAME = re.compile(r"\bprocessor_[A-Za-z0-9_:]+")
COMPOSE_VAR = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


# --- helpers --------------------------------------------------------------------------------


def load_yaml(path: Path):
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def resolve(value) -> str:
    """A compose value with each ${VAR:-default} replaced by its default and $$ by $."""
    text = str(value)
    text = COMPOSE_VAR.sub(lambda m: m.group(2) or "", text)
    return text.replace("$$", "$")


def env_dict(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: resolve(val) for key, val in env.items()}


def metric_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


def check_expression(expr: str, where: str) -> None:
    """Every processor_* name is a contract series; histograms only through their series;
    counters only through rate()/increase(); quantiles only over _bucket by le."""
    names = metric_names(expr)
    unknown = names - ALLOWED_SERIES
    assert not unknown, f"{where}: not in the metrics contract: {sorted(unknown)}\n{expr}"
    for name in names & COUNTERS:
        assert re.search(rf"(rate|increase)\(\s*{name}\b", expr), (
            f"{where}: counter {name} must be read with rate() or increase()\n{expr}"
        )
    if "histogram_quantile" in expr:
        assert "_bucket" in expr and re.search(r"\ble\b", expr), (
            f"{where}: histogram_quantile needs the _bucket series aggregated by le\n{expr}"
        )


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        lines.append(pending)
    result = []
    for line in lines:
        instr, _, args = line.partition(" ")
        result.append((instr.upper(), re.sub(r"\s+", " ", args).strip()))
    return result


def github_slug(heading: str) -> str:
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def dashboard_targets(dashboard: dict):
    """(panel title, target) for every query of every panel, rows' nested panels included."""

    def walk(panels):
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels") or [])

    for panel in walk(dashboard["panels"]):
        for target in panel.get("targets") or []:
            yield panel.get("title", "?"), target


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool is not on PATH; install it (Debian/Ubuntu: apt-get install prometheus) "
            "to check the Prometheus config and run the alert rule tests"
        )
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rules() -> list[dict]:
    doc = load_yaml(PROM_RULES)
    return [rule for group in doc["groups"] for rule in group["rules"]]


# --- docker-compose.yml ---------------------------------------------------------------------


def test_compose_has_the_five_services(services):
    missing = REQUIRED_SERVICES - set(services)
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"
    extra = set(services) - REQUIRED_SERVICES
    for name in extra:
        assert services[name].get("profiles"), (
            f"extra service {name!r} must sit behind a profile so `up` starts only the stack"
        )


def test_compose_images_are_pinned(services):
    for name, service in services.items():
        image = service.get("image")
        assert image, f"service {name} names no image (a built one needs a name:tag too)"
        image = resolve(image)
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"service {name}: image {image!r} has no tag"
        assert tag != "latest", f"service {name}: image {image!r} is not pinned"
        assert re.search(r"\d", tag), f"service {name}: tag of {image!r} names no version"


def test_processor_builds_from_the_gpu_dockerfile(services):
    build = services["processor"]["build"]
    assert build["dockerfile"] == DOCKERFILE.name
    assert (ROOT / build.get("context", ".") / build["dockerfile"]).is_file()


def test_processor_requests_one_nvidia_gpu(services):
    devices = services["processor"]["deploy"]["resources"]["reservations"]["devices"]
    gpus = [
        d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
    ]
    assert gpus, "processor reserves no nvidia device with the gpu capability"
    assert gpus[0].get("count") == 1, "processor should reserve exactly one GPU per replica"


@pytest.mark.parametrize("name", ["processor", "replay"])
def test_processor_env_follows_the_contract(services, name):
    if name not in services:
        pytest.skip(f"no {name} service")
    env = env_dict(services[name])
    unknown = set(env) - ENV_CONTRACT
    assert not unknown, f"{name}: environment names outside the contract: {sorted(unknown)}"
    assert env.get("HF_HUB_OFFLINE") == "1", f"{name}: HF_HUB_OFFLINE must be 1"
    # Empty would start the embedded broker instead of using the compose Kafka.
    assert env.get("PROCESSOR_BOOTSTRAP_SERVERS") == "kafka:9092"
    if "PROCESSOR_DEVICE" in env:
        assert env["PROCESSOR_DEVICE"] in {"auto", "cuda", "cpu"}
    if "PROCESSOR_KAFKA" in env:
        assert isinstance(json.loads(env["PROCESSOR_KAFKA"]), dict), "PROCESSOR_KAFKA: JSON object"


def test_processor_serves_metrics_on_the_contract_port(services):
    service = services["processor"]
    env = env_dict(service)
    assert int(env.get("PROCESSOR_METRICS_PORT", METRICS_PORT)) == METRICS_PORT
    container_ports = set()
    for entry in service.get("ports", []):
        text = str(entry["target"] if isinstance(entry, dict) else entry)
        container_ports.add(int(text.rsplit(":", 1)[-1].split("/")[0]))
    assert METRICS_PORT in container_ports


def test_processor_waits_for_kafka_and_topics(services):
    depends = services["processor"]["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"
    assert depends["topics"]["condition"] == "service_completed_successfully"


def test_kafka_is_single_node_kraft_with_a_healthcheck(services):
    kafka = services["kafka"]
    assert resolve(kafka["image"]).startswith("apache/kafka:")
    assert kafka.get("healthcheck", {}).get("test"), "kafka needs a healthcheck"
    env = env_dict(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"], (
        "the processor's PROCESSOR_BOOTSTRAP_SERVERS=kafka:9092 must be an advertised listener"
    )


def test_topics_job_creates_every_topic(services):
    topics = services["topics"]
    assert resolve(topics["image"]) == resolve(services["kafka"]["image"])
    script = resolve(" ".join(topics.get("entrypoint", [])) + " " + " ".join(topics["command"]))
    assert "/opt/kafka/bin/kafka-topics.sh" in script
    assert "--create" in script and "--if-not-exists" in script
    for topic in sorted(RAW_TOPICS | OUTPUT_TOPICS):
        assert re.search(rf"\b{re.escape(topic)}\b", script), f"topics job never creates {topic}"
    raw = int(env_dict(topics)["RAW_PARTITIONS"])
    assert raw >= 2, "raw topics need several partitions for the processor to scale out"


def test_bind_mounts_exist(services):
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith(("./", "../")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"


def test_prometheus_and_grafana_mount_the_ops_files(services):
    prom_mounts = [v.split(":") for v in services["prometheus"]["volumes"]]
    assert ["./ops/prometheus", "/etc/prometheus", "ro"] in prom_mounts
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]

    grafana = services["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["./ops/grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = load_yaml(GRAFANA_PROVIDERS)["providers"]
    assert mounts["./ops/grafana/dashboards"] == providers[0]["options"]["path"]
    env = env_dict(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert any(str(p).split(":")[-1] == "3000" for p in grafana["ports"])


def test_docker_compose_config_validates():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on PATH")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        pytest.skip(
            "the docker client has no compose plugin here (`docker compose version` fails)"
        )
    proc = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "--profile", "replay", "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr


# --- Dockerfile.backend.gpu and .dockerignore -----------------------------------------------


def test_dockerfile_base_image_is_a_pinned_cuda_image():
    froms = [args for instr, args in dockerfile_instructions() if instr == "FROM"]
    assert froms, "no FROM"
    image = froms[-1].split()[0]
    assert image.startswith("nvidia/cuda:"), f"final stage should start from nvidia/cuda: {image}"
    tag = image.split(":", 1)[1]
    assert re.match(r"\d+\.\d+\.\d+-", tag), f"base image tag not pinned to a CUDA version: {tag}"


def test_dockerfile_installs_the_same_requirements_file():
    instructions = dockerfile_instructions()
    copies = [args for instr, args in instructions if instr == "COPY"]
    assert any(args.split()[0] == "requirements.txt" for args in copies)
    installs = [args for instr, args in instructions if instr == "RUN" and "pip install" in args]
    assert any(re.search(r"-r\s+requirements\.txt\b", args) for args in installs), (
        "the image must `pip install -r requirements.txt`, the file of the local install"
    )
    for args in installs:
        for req in re.findall(r"-r\s+(\S+)", args):
            assert req == "requirements.txt", f"image installs another requirements file: {req}"


def test_dockerfile_base_image_was_chosen_for_the_pinned_torch():
    pinned = re.search(r"^torch==(\S+)", REQUIREMENTS.read_text(encoding="utf-8"), re.M)
    assert pinned, "requirements.txt pins no torch"
    noted = re.search(r"#\s*torch==(\S+)\s*->\s*CUDA", DOCKERFILE.read_text(encoding="utf-8"))
    assert noted, "Dockerfile.backend.gpu should note the torch pin its CUDA base was chosen for"
    assert noted.group(1) == pinned.group(1), (
        f"requirements.txt moved torch to {pinned.group(1)}; check that wheel's CUDA version, "
        f"update the nvidia/cuda base tag and the note (torch=={noted.group(1)})"
    )


def test_dockerfile_runtime_settings():
    instructions = dockerfile_instructions()
    text = "\n".join(f"{instr} {args}" for instr, args in instructions)

    healthchecks = [args for instr, args in instructions if instr == "HEALTHCHECK"]
    assert healthchecks and "/healthz" in healthchecks[-1], "HEALTHCHECK must probe /healthz"

    users = [args.split(":")[0] for instr, args in instructions if instr == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the image must end as a non-root USER"

    assert re.search(r"\bHF_HUB_OFFLINE=1\b", text), "ENV HF_HUB_OFFLINE=1 missing"
    assert any(instr == "EXPOSE" and str(METRICS_PORT) in args for instr, args in instructions)
    entry = [json.loads(args) for instr, args in instructions if instr == "ENTRYPOINT"]
    cmd = [json.loads(args) for instr, args in instructions if instr == "CMD"]
    assert entry and entry[-1] == ["processor"]
    assert cmd and cmd[-1] == ["run"]
    assert re.search(r"processor train --source sparkov \S+ --out artifacts/model", text), (
        "the image should bake a default model with `processor train`"
    )


def test_dockerfile_trains_on_a_shipped_sample():
    text = " ".join(args for _, args in dockerfile_instructions())
    sample = re.search(r"processor train --source sparkov (\S+)", text).group(1)
    if not (ROOT / "data" / "sparkov").is_dir():
        pytest.skip("data/sparkov/ is not in the tree yet")
    assert (ROOT / sample).is_file(), f"the Dockerfile trains on {sample}, which is not shipped"


def test_dockerignore_keeps_what_the_image_needs():
    patterns = [
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for excluded in (".git", ".venv", "artifacts"):
        assert excluded in patterns, f".dockerignore should exclude {excluded}"
    for needed in ("requirements.txt", "pyproject.toml", "processor", "schemas", "data"):
        hits = [p for p in patterns if not p.startswith("!") and fnmatch.fnmatch(needed, p)]
        assert not hits, f".dockerignore drops {needed}, which the image build needs ({hits})"


# --- Prometheus -----------------------------------------------------------------------------


def test_prometheus_scrapes_every_processor_replica(services):
    config = load_yaml(PROM_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sd = jobs["processor"]["dns_sd_configs"]
    assert any(
        "processor" in entry["names"] and entry["type"] == "A" and entry["port"] == METRICS_PORT
        for entry in sd
    ), "the processor job should resolve every replica of the `processor` service (type A)"
    assert "processor" in services
    for rule_file in config["rule_files"]:
        assert (PROM_DIR / rule_file).is_file(), f"rule file {rule_file} missing"


def test_alert_rules_are_complete_and_use_contract_metrics(rules):
    names = {rule["alert"] for rule in rules}
    required = {
        "ProcessorConsumerLagGrowing",
        "ProcessorDeadLetters",
        "ProcessorNotReady",
        "ProcessorHighEndToEndLatency",
        "ProcessorGpuUnavailable",
    }
    assert required <= names, f"missing alerts {sorted(required - names)}"
    headings = {
        github_slug(line.lstrip("#"))
        for line in OPS_README.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    for rule in rules:
        check_expression(rule["expr"], f"alert {rule['alert']}")
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook"):
            assert annotations.get(key), f"{rule['alert']} has no {key}"
        path, _, anchor = annotations["runbook"].partition("#")
        assert ROOT / path == OPS_README and anchor in headings, (
            f"{rule['alert']}: runbook {annotations['runbook']} has no heading in ops/README.md"
        )


def test_every_alert_has_a_unit_test(rules):
    tested = set()
    for case in load_yaml(PROM_RULES_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            if check.get("exp_alerts"):
                tested.add(check["alertname"])
    untested = {rule["alert"] for rule in rules} - tested
    assert not untested, f"alerts without a firing test in alerts_test.yml: {sorted(untested)}"


def test_promtool_check_config():
    run_promtool("check", "config", str(PROM_CONFIG))


def test_promtool_check_rules():
    run_promtool("check", "rules", str(PROM_RULES))


def test_promtool_test_rules():
    run_promtool("test", "rules", str(PROM_RULES_TEST))


# --- Grafana --------------------------------------------------------------------------------


def test_grafana_datasource_points_at_the_compose_prometheus():
    sources = load_yaml(GRAFANA_DATASOURCE)["datasources"]
    prom = [s for s in sources if s["type"] == "prometheus"]
    assert len(prom) == 1 and prom[0]["uid"]
    assert prom[0]["url"] == "http://prometheus:9090"


def test_dashboard_uses_the_provisioned_datasource(dashboard):
    uid = load_yaml(GRAFANA_DATASOURCE)["datasources"][0]["uid"]
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
    for title, target in dashboard_targets(dashboard):
        assert target["datasource"]["uid"] == uid, title
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == uid, variable["name"]


def test_dashboard_queries_use_only_contract_metrics(dashboard):
    exprs = list(dashboard_targets(dashboard))
    assert exprs, "dashboard has no queries"
    for title, target in exprs:
        check_expression(target["expr"], f"panel {title!r}")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            unknown = metric_names(query) - ALLOWED_SERIES
            assert not unknown, f"variable {variable['name']}: {sorted(unknown)}"


def test_dashboard_shows_every_contract_metric(dashboard):
    used = set()
    for _, target in dashboard_targets(dashboard):
        used |= metric_names(target["expr"])
    shown = {n for n in used if n in COUNTERS | GAUGES}
    shown |= {h for h in HISTOGRAMS if any(n.startswith(h + "_") for n in used)}
    missing = (COUNTERS | GAUGES | HISTOGRAMS) - shown
    assert not missing, f"dashboard shows nothing of {sorted(missing)}"


def test_dashboard_layout(dashboard):
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']} runs off the 24-column grid"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]
        if panel["type"] != "row":
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), panel["title"]


def test_dashboard_promql_parses(dashboard, tmp_path):
    """promtool parses each query as a recording rule (Grafana's variables filled in)."""
    exe = promtool()
    rules = []
    for i, (_, target) in enumerate(dashboard_targets(dashboard)):
        expr = target["expr"].replace("$__rate_interval", "1m").replace("$instance", ".*")
        assert "$" not in expr, f"unhandled Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(
        [exe, "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
