"""The command line: `processor <command>` (also `python -m processor`)."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import time

from confluent_kafka import KafkaError, KafkaException

from processor import __version__
from processor.errors import ProcessorError
from processor.logs import setup_logging

log = logging.getLogger("processor.cli")

COMMANDS = {
    "demo": ("processor.demo", "the quick start: broker, train, replay real data, run, summary"),
    "run": ("processor.serve", "the service: consume, validate, embed, score, produce, commit"),
    "train": ("processor.train", "fit the anomaly model on history and write an artifact"),
    "evaluate": ("processor.evaluate", "score a labelled file; ROC-AUC, AP, precision/recall"),
    "replay": ("processor.replay", "produce a real data file to a topic, rate-limited"),
    "chaos": ("processor.chaos", "crash harness: SIGKILL the processor mid-stream, count losses"),
    "bench": ("processor.bench", "model throughput per device (CPU and CUDA side by side)"),
    "broker": ("processor.cli", "start the embedded Kafka-compatible broker and the topics"),
    "check-broker": ("processor.brokercheck", "check a broker's transactions for exactly-once"),
    "schemas": ("processor.cli", "write the JSON Schemas of every event and output"),
}

EPILOG = """\
Settings of `run` come from PROCESSOR_* environment variables (see README.md, "Configuration").
With no PROCESSOR_BOOTSTRAP_SERVERS, `run` and `demo` start an embedded broker.
Run `processor <command> --help` for a command's options.
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s options are loaded, so `processor --help` stays fast."""
    parser = argparse.ArgumentParser(
        prog="processor",
        description="GPU stream processor for financial transaction and document events.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        child.set_defaults(module=module_name)
        if name != command:
            continue
        if module_name == "processor.cli":
            _configure_local(name, child)
        else:
            importlib.import_module(module_name).configure_parser(child)
    return parser


def _command_in(argv: list[str]) -> str | None:
    return next((a for a in argv if a in COMMANDS), None)


def _configure_local(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "broker":
        parser.add_argument("--port", type=int, default=9092, help="default: %(default)s")
        parser.add_argument("--partitions", type=int, default=3, help="default: %(default)s")
    elif name == "schemas":
        parser.add_argument("--out", default=None, help="folder (default: schemas/json)")
        parser.add_argument(
            "--check",
            action="store_true",
            help="exit 1 if the files on disk differ from the models",
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_in(argv)).parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.module == "processor.cli":
            return _broker(args) if args.command == "broker" else _schemas(args)
        return importlib.import_module(args.module).main(args)
    except KeyboardInterrupt:
        return 130
    except (ProcessorError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KafkaException as exc:
        err = exc.args[0]
        if err.code() != KafkaError._INVALID_ARG:
            raise
        print(
            f"error: a Kafka client setting was refused: {err.str()}. Check PROCESSOR_KAFKA, "
            "PROCESSOR_CONSUMER_KAFKA and PROCESSOR_PRODUCER_KAFKA against librdkafka's "
            "CONFIGURATION.md (github.com/confluentinc/librdkafka)",
            file=sys.stderr,
        )
        return 2


def _broker(args: argparse.Namespace) -> int:
    from processor.broker import EmbeddedBroker, ensure_topics
    from processor.config import Topics

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # leaves the `with`, which stops Tansu

    signal.signal(signal.SIGTERM, stop)
    with EmbeddedBroker(args.port) as broker:
        ensure_topics(broker.bootstrap_servers, Topics().all(), args.partitions)
        print(f"broker ready at {broker.bootstrap_servers} (in memory; Ctrl-C stops it)")
        while True:
            time.sleep(3600)


def _schemas(args: argparse.Namespace) -> int:
    from pathlib import Path

    from schemas.export import DEFAULT_DIR, export, render

    folder = Path(args.out) if args.out else DEFAULT_DIR
    if args.check:
        stale = [
            n
            for n, t in render().items()
            if not (folder / n).exists() or (folder / n).read_text() != t
        ]
        for name in stale:
            print(f"stale: {folder / name} (run `processor schemas`)")
        return 1 if stale else 0
    for path in export(folder):
        print(path)
    return 0
