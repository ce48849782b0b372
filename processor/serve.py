"""`processor run`: wire settings, broker, models, metrics and the stream processor together."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from processor.broker import EmbeddedBroker, ensure_topics
from processor.config import Settings, load_settings
from processor.device import choose_device
from processor.metrics import Health, Metrics, MetricsServer
from processor.models import artifact
from processor.models.embedder import TextEmbedder
from processor.pipeline.service import RunStats, StreamProcessor
from processor.pipeline.worker import Models

log = logging.getLogger(__name__)


def load_models(settings: Settings) -> Models:
    device = choose_device(settings.device)
    bundle = artifact.load(settings.model_dir, device.device)
    return Models(TextEmbedder(device), bundle, device)


def serve(settings: Settings, models: Models | None = None) -> RunStats:
    """Run the processor until SIGTERM/SIGINT (or, if so set, until the input is drained)."""
    stop_requested = _install_signal_handlers()
    metrics, health = Metrics(), Health()
    server = MetricsServer(metrics, health, settings.metrics_host, settings.metrics_port).start()
    broker = None
    try:
        bootstrap = settings.bootstrap_servers
        if settings.embedded:
            broker = EmbeddedBroker(settings.embedded_broker_port).start()
            bootstrap = broker.bootstrap_servers
            log.info("no PROCESSOR_BOOTSTRAP_SERVERS: using the embedded broker %s", bootstrap)
        if settings.embedded or settings.create_topics:
            ensure_topics(bootstrap, settings.topics.all(), settings.partitions, settings.kafka)
        health.broker_reachable = True
        models = models or load_models(settings)
        metrics.model_info.labels(
            models.bundle.version, models.embedder.name, str(models.device.device)
        ).set(1)
        processor = StreamProcessor(settings, bootstrap, models, metrics, health)
        stop_requested["processor"] = processor
        if stop_requested.get("early"):
            processor.stop()  # a signal came while loading: start, then drain at once
        return processor.run()
    finally:
        server.stop()
        if broker is not None:
            broker.stop()


def _install_signal_handlers() -> dict:
    """SIGTERM/SIGINT drain the processor; one that comes before it exists is remembered."""
    state: dict = {}

    def handle(signum: int, frame: object) -> None:
        log.info("signal received signal=%s: draining", signal.Signals(signum).name)
        if "processor" in state:
            state["processor"].stop()
        else:
            state["early"] = True

    try:
        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
    except ValueError:  # not the main thread (tests run the processor in a thread)
        pass
    return state


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="JSON file of settings (environment variables override it; "
        "PROCESSOR_CONFIG_FILE names one too)",
    )
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="model artifact folder (PROCESSOR_MODEL_DIR)"
    )
    parser.add_argument(
        "--stop-when-drained",
        action="store_true",
        default=None,
        help="exit once every input partition is read and delivered",
    )
    parser.add_argument(
        "--stats-file",
        type=Path,
        default=None,
        help="write the run's counters as JSON here on exit",
    )


def main(args: argparse.Namespace) -> int:
    settings = load_settings(
        args.config,
        model_dir=args.model_dir,
        stop_when_drained=args.stop_when_drained,
        stats_file=args.stats_file,
    )
    stats = serve(settings).as_dict()
    print(
        f"consumed {stats['consumed']}: enriched {stats['enriched']}, "
        f"dead-lettered {stats['dead_lettered']}, skipped {stats['skipped']}"
    )
    return 0
