"""Prometheus metrics, GPU metrics, and the one HTTP port for /metrics, /healthz and /readyz."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from processor.config import ConfigError

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class GpuCollector:
    """GPU utilisation and memory from NVML, and torch's CUDA allocator; never fails a scrape."""

    def __init__(self) -> None:
        self._nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception as exc:  # no driver, no GPU: report unavailable
            log.info("GPU metrics unavailable reason=%r", str(exc) or type(exc).__name__)

    def collect(self):
        available = GaugeMetricFamily("processor_gpu_available", "1 when NVML sees a GPU")
        util = GaugeMetricFamily(
            "processor_gpu_utilization_ratio", "GPU busy share (NVML)", labels=["gpu"]
        )
        used = GaugeMetricFamily(
            "processor_gpu_memory_used_bytes", "GPU memory used", labels=["gpu"]
        )
        total = GaugeMetricFamily(
            "processor_gpu_memory_total_bytes", "GPU memory in all", labels=["gpu"]
        )
        count = 0
        if self._nvml is not None:
            try:
                count = self._nvml.nvmlDeviceGetCount()
                for i in range(count):
                    handle = self._nvml.nvmlDeviceGetHandleByIndex(i)
                    rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                    memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                    util.add_metric([str(i)], rates.gpu / 100.0)
                    used.add_metric([str(i)], float(memory.used))
                    total.add_metric([str(i)], float(memory.total))
            except Exception as exc:
                log.warning("NVML read failed error=%r", str(exc))
                count = 0
        available.add_metric([], 1.0 if count else 0.0)
        yield available
        yield util
        yield used
        yield total
        allocated = GaugeMetricFamily(
            "processor_torch_cuda_allocated_bytes", "bytes held by torch's CUDA allocator"
        )
        allocated.add_metric([], float(_torch_allocated()))
        yield allocated


def _torch_allocated() -> int:
    try:
        import torch

        return torch.cuda.memory_allocated() if torch.cuda.is_initialized() else 0
    except Exception:
        return 0


class Metrics:
    """Every metric the processor exports, on its own registry."""

    def __init__(self, gpu: bool = True) -> None:
        r = self.registry = CollectorRegistry()
        self.consumed = Counter(
            "processor_events_consumed", "records read from input topics", ["topic"], registry=r
        )
        self.events = Counter(
            "processor_events", "input records by final outcome", ["topic", "outcome"], registry=r
        )
        self.dead_letters = Counter(
            "processor_dead_letters",
            "records sent to the dead-letter topic",
            ["reason"],
            registry=r,
        )
        self.produced = Counter(
            "processor_outputs_produced", "output records acknowledged", ["topic"], registry=r
        )
        self.delivery_failures = Counter(
            "processor_delivery_failures",
            "output records the broker refused",
            ["topic"],
            registry=r,
        )
        self.queue_full = Counter(
            "processor_producer_queue_full",
            "times an output waited for room in the producer's local queue",
            registry=r,
        )
        self.alerts = Counter("processor_alerts", "alerts raised", registry=r)
        self.commits = Counter("processor_commits", "offset commits", registry=r)
        self.commit_failures = Counter("processor_commit_failures", "failed commits", registry=r)
        self.batch_size = Histogram(
            "processor_batch_size",
            "events per inference batch",
            ["kind"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "processor_inference_seconds",
            "model time per batch",
            ["kind"],
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "processor_end_to_end_latency_seconds",
            "input record timestamp to output acknowledged",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "processor_in_flight_events", "records read, not yet done", registry=r
        )
        self.paused = Gauge("processor_paused_partitions", "partitions paused", registry=r)
        self.lag = Gauge(
            "processor_consumer_lag_messages",
            "high watermark minus position",
            ["topic"],
            registry=r,
        )
        self.ready = Gauge("processor_ready", "1 when /readyz answers 200", registry=r)
        self.model_info = Gauge(
            "processor_model_info",
            "the loaded models",
            ["anomaly_model", "embedding_model", "device"],
            registry=r,
        )
        if gpu:
            r.register(GpuCollector())


class Health:
    """What /readyz reports: broker reachable, assignment held, model loaded."""

    def __init__(self) -> None:
        self.broker_reachable = False
        self.assignment_held = False
        self.model_loaded = False

    def ready(self) -> bool:
        return self.broker_reachable and self.assignment_held and self.model_loaded

    def as_dict(self) -> dict[str, bool]:
        return {
            "ready": self.ready(),
            "broker_reachable": self.broker_reachable,
            "assignment_held": self.assignment_held,
            "model_loaded": self.model_loaded,
        }


class MetricsServer:
    """Serves /metrics, /healthz and /readyz on one port, in a daemon thread."""

    def __init__(self, metrics: Metrics, health: Health, host: str, port: int) -> None:
        handler = _handler(metrics, health)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror}): set "
                "PROCESSOR_METRICS_PORT to a free port (0 picks one)"
            ) from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics server listening port=%d paths=/metrics,/healthz,/readyz", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(metrics: Metrics, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?")[0]
            if path == "/metrics":
                metrics.ready.set(1 if health.ready() else 0)
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b'{"status": "ok"}\n', "application/json")
            elif path == "/readyz":
                body = json.dumps(health.as_dict()).encode() + b"\n"
                self._send(200 if health.ready() else 503, body, "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler
