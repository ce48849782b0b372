"""`processor run` as an operator starts it: a separate process, environment variables only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from itertools import islice
from pathlib import Path

import pytest

from processor.broker import ensure_topics, free_port
from processor.pipeline.worker import Models
from processor.reader import read_topic
from processor.replay import replay
from processor.sources import open_source
from tests.conftest import ROOT, SPARKOV_STREAM
from tests.pipeline_helpers import fresh_topics, settings_for, start_processor

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except urllib.error.URLError:  # not listening yet
        return 0, ""


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise TimeoutError(f"timed out waiting for {what}")


def test_run_with_environment_variables_processes_and_stops_cleanly_on_sigterm(
    broker: str, model_dir: Path, tmp_path: Path
) -> None:
    topics = fresh_topics()
    ensure_topics(broker, topics.all(), partitions=3)
    port = free_port()
    stats_file = tmp_path / "stats.json"
    env = {
        **os.environ,
        "PROCESSOR_BOOTSTRAP_SERVERS": broker,
        "PROCESSOR_GROUP_ID": "test-run-command",
        "PROCESSOR_MODEL_DIR": str(model_dir),
        "PROCESSOR_METRICS_PORT": str(port),
        "PROCESSOR_CONSUMER_KAFKA": '{"session.timeout.ms": 6000}',
        "PROCESSOR_STATS_FILE": str(stats_file),
        "PROCESSOR_EMBEDDING_ENCODING": "base64_f16",
        **{f"PROCESSOR_TOPICS__{k.upper()}": v for k, v in topics.model_dump().items()},
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "run"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 90, "/readyz")
        events = list(islice(open_source("sparkov", SPARKOV_STREAM), 100))
        replay(events, topics.transactions, {"bootstrap.servers": broker}, progress=False)
        wait_for(
            lambda: sum(1 for _ in read_topic(broker, topics.transactions_enriched)) >= 100,
            90,
            "100 enriched records",
        )
        status, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        line = f'processor_events_total{{outcome="enriched",topic="{topics.transactions}"}} 100.0'
        assert line in metrics
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "signal received signal=SIGTERM" in output
    assert json.loads(stats_file.read_text())["enriched"] == 100
    enriched = [json.loads(r.value) for r in read_topic(broker, topics.transactions_enriched)]
    assert {e["embedding"]["encoding"] for e in enriched} == {"base64_f16"}


def test_a_restarted_processor_resumes_after_the_committed_offsets(
    broker: str, model_dir: Path, bundle, embedder, device
) -> None:
    topics = fresh_topics()
    settings = settings_for(broker, topics, model_dir, group_id="test-restart")
    models = Models(embedder, bundle, device)
    events = list(islice(open_source("sparkov", SPARKOV_STREAM), 300))
    config = {"bootstrap.servers": broker}

    first = start_processor(settings, models)
    replay(events[:150], topics.transactions, config, progress=False)
    first.wait_done(150)
    first.stop()

    second = start_processor(settings, models)
    replay(events[150:], topics.transactions, config, progress=False)
    second.wait_done(150)
    assert second.stop().as_dict()["consumed"] == 150  # nothing read twice after a clean stop

    ids = [
        json.loads(r.value)["event_id"] for r in read_topic(broker, topics.transactions_enriched)
    ]
    assert sorted(ids) == sorted(e.event["event_id"] for e in events)


def run_command(**variables: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "processor", "run"],
        env={**os.environ, **variables},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_without_a_model_says_how_to_train_one(tmp_path: Path) -> None:
    done = run_command(
        PROCESSOR_BOOTSTRAP_SERVERS="127.0.0.1:1",
        PROCESSOR_MODEL_DIR=str(tmp_path / "missing"),
        PROCESSOR_METRICS_PORT="0",
    )
    assert done.returncode == 2
    assert "processor train" in done.stderr and "PROCESSOR_MODEL_DIR" in done.stderr


def test_invalid_settings_name_the_variable() -> None:
    done = run_command(PROCESSOR_BATCH_SIZE="zero")
    assert done.returncode == 2
    assert "PROCESSOR_BATCH_SIZE" in done.stderr


@pytest.mark.broker
def test_an_unknown_client_property_names_the_settings_without_a_traceback(
    broker: str, model_dir: Path
) -> None:
    done = run_command(
        PROCESSOR_BOOTSTRAP_SERVERS=broker,
        PROCESSOR_MODEL_DIR=str(model_dir),
        PROCESSOR_METRICS_PORT="0",
        PROCESSOR_PRODUCER_KAFKA='{"bogus.setting": 1}',
    )
    assert done.returncode == 2
    assert 'No such configuration property: "bogus.setting"' in done.stderr
    assert "PROCESSOR_PRODUCER_KAFKA" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.broker
def test_sigterm_to_the_broker_command_stops_tansu_too() -> None:
    from processor.broker import port_open

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "broker", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: port_open("127.0.0.1", port), 30, "the broker port")
        time.sleep(1.0)  # let it create the topics
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: not port_open("127.0.0.1", port), 15, "Tansu to release the port")
