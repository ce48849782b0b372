"""The HTTP port: /metrics (Prometheus text), /healthz and /readyz."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from processor.metrics import Health, Metrics, MetricsServer


@dataclass
class Served:
    metrics: Metrics
    health: Health
    base: str


@pytest.fixture(scope="module")
def server() -> Iterator[Served]:
    """One server for the module: stopping one waits for serve_forever's 0.5 s poll."""
    metrics, health = Metrics(), Health()
    running = MetricsServer(metrics, health, "127.0.0.1", 0).start()
    try:
        yield Served(metrics, health, f"http://127.0.0.1:{running.port}")
    finally:
        running.stop()


@pytest.fixture
def served(server: Served) -> Served:
    """The shared server, with every health flag down again."""
    server.health.broker_reachable = False
    server.health.assignment_held = False
    server.health.model_loaded = False
    return server


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def _nvml_sees_a_gpu() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:
        return False


def test_server_binds_an_ephemeral_port(served: Served) -> None:
    port = int(served.base.rsplit(":", 1)[1])

    assert port > 0


def test_healthz_is_200_even_when_not_ready(served: Served) -> None:
    status, content_type, body = _get(served.base + "/healthz")

    assert status == 200
    assert content_type == "application/json"
    assert json.loads(body) == {"status": "ok"}


def test_readyz_is_503_until_every_health_flag_is_set(served: Served) -> None:
    flags = ["broker_reachable", "assignment_held", "model_loaded"]
    for flag in flags:
        status, _, body = _get(served.base + "/readyz")
        assert status == 503
        assert json.loads(body)["ready"] is False
        setattr(served.health, flag, True)

    status, content_type, body = _get(served.base + "/readyz")

    assert status == 200
    assert content_type == "application/json"
    assert json.loads(body) == {
        "ready": True,
        "broker_reachable": True,
        "assignment_held": True,
        "model_loaded": True,
    }


def test_readyz_names_each_flag_that_is_missing(served: Served) -> None:
    served.health.broker_reachable = True
    served.health.model_loaded = True

    status, _, body = _get(served.base + "/readyz")

    assert status == 503
    assert json.loads(body) == {
        "ready": False,
        "broker_reachable": True,
        "assignment_held": False,
        "model_loaded": True,
    }


def test_readyz_goes_back_to_503_when_a_flag_is_lost(served: Served) -> None:
    served.health.broker_reachable = True
    served.health.assignment_held = True
    served.health.model_loaded = True
    assert _get(served.base + "/readyz")[0] == 200

    served.health.assignment_held = False

    assert _get(served.base + "/readyz")[0] == 503


def test_metrics_is_prometheus_text_with_gpu_availability(served: Served) -> None:
    status, content_type, body = _get(served.base + "/metrics")

    assert status == 200
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    gpu = families["processor_gpu_available"]
    assert gpu.type == "gauge"
    assert [s.value for s in gpu.samples] == [1.0 if _nvml_sees_a_gpu() else 0.0]


def test_event_counter_appears_with_its_labels(served: Served) -> None:
    served.metrics.events.labels("t", "enriched").inc()  # the only test to count on topic "t"

    body = _get(served.base + "/metrics")[2]

    assert 'processor_events_total{outcome="enriched",topic="t"} 1.0' in body.splitlines()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    totals = [s for s in families["processor_events"].samples if s.name.endswith("_total")]
    assert [(s.labels, s.value) for s in totals] == [({"topic": "t", "outcome": "enriched"}, 1.0)]


def test_ready_gauge_follows_health_on_scrape(served: Served) -> None:
    def ready_value() -> float:
        body = _get(served.base + "/metrics")[2]
        families = {f.name: f for f in text_string_to_metric_families(body)}
        return families["processor_ready"].samples[0].value

    assert ready_value() == 0.0
    served.health.broker_reachable = True
    served.health.assignment_held = True
    served.health.model_loaded = True
    assert ready_value() == 1.0


def test_metric_names_follow_prometheus_conventions(served: Served) -> None:
    served.metrics.latency.labels("transaction").observe(0.2)
    body = _get(served.base + "/metrics")[2]

    families = list(text_string_to_metric_families(body))

    names = {f.name for f in families}
    assert {
        "processor_events",
        "processor_events_consumed",
        "processor_dead_letters",
        "processor_commits",
        "processor_inference_seconds",
        "processor_end_to_end_latency_seconds",
        "processor_gpu_memory_used_bytes",
        "processor_in_flight_events",
    } <= names
    for family in families:
        assert family.name.startswith("processor_"), family.name
        if family.type == "counter":
            for sample in family.samples:
                assert sample.name in (f"{family.name}_total", f"{family.name}_created")
        if family.type == "histogram" and family.name != "processor_batch_size":
            assert family.name.endswith("_seconds"), family.name
        if "memory" in family.name or "allocated" in family.name:
            assert family.name.endswith("_bytes"), family.name
        if "utilization" in family.name:
            assert family.name.endswith("_ratio"), family.name
    counters = {f.name for f in families if f.type == "counter"}
    assert "processor_alerts" in counters
    assert "processor_delivery_failures" in counters
    latency = next(f for f in families if f.name == "processor_end_to_end_latency_seconds")
    count = next(s for s in latency.samples if s.name.endswith("_count"))
    assert count.value == 1.0


def test_query_string_is_ignored(served: Served) -> None:
    assert _get(served.base + "/healthz?probe=1")[0] == 200


@pytest.mark.parametrize("path", ["/", "/metric", "/health", "/readyz/extra"])
def test_unknown_path_is_404(served: Served, path: str) -> None:
    status, content_type, body = _get(served.base + path)

    assert status == 404
    assert content_type == "text/plain"
    assert "/metrics" in body


def test_metrics_without_gpu_collector_omit_gpu_families() -> None:
    metrics = Metrics(gpu=False)
    server = MetricsServer(metrics, Health(), "127.0.0.1", 0).start()
    try:
        body = _get(f"http://127.0.0.1:{server.port}/metrics")[2]
    finally:
        server.stop()

    names = {f.name for f in text_string_to_metric_families(body)}
    assert "processor_events" in names
    assert not any(name.startswith("processor_gpu_") for name in names)
