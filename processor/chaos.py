"""`processor chaos`: SIGKILL the real `processor run` at random moments, then check delivery.

Per delivery mode, on a fresh embedded broker (topics with 6 partitions):

1. produce part of the input up front, and the rest from a producer thread at a steady rate
   while the processor runs: real sparkov transactions to ``transactions.raw`` (a row used
   again gets a ``-r<round>`` suffix on its event id, so every event id is unique), and mixed
   into the same stream, real SROIE receipts to ``documents.raw``, malformed records of four
   kinds and tombstones (``--documents-every``, ``--malformed-every``, ``--tombstones-every``);
2. start ``python -m processor run`` as a subprocess configured by environment variables only,
   let it take its partitions and make progress for a random time, SIGKILL it, restart it;
   ``--kills`` times (seeded, ``--seed``);
3. start it once more and let it run until every input offset is committed for the group
   (compared with the offsets the harness produced, not the broker's high watermarks), then
   SIGTERM it;
4. read ``transactions.enriched``, ``documents.enriched``, ``events.dlq`` and ``alerts`` back
   (read committed) and count losses and duplicates per event id (:mod:`processor.checker`); a
   malformed record counts by its key, and must be dead-lettered with the reason its kind
   has. Tombstones have no output: their offsets are among those that must be committed.

At-least-once must show no loss; exactly-once no loss and no duplicate. The exit status is 1
when a guarantee is broken or the processor stalled, exited by itself or did not stop cleanly.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from processor import brokercheck, checker
from processor.broker import EmbeddedBroker, ensure_topics, free_port
from processor.config import Topics
from processor.replay import encode_event
from processor.sources import SourceEvent, open_source

ROOT = Path(__file__).resolve().parent.parent
SPARKOV = ROOT / "data" / "sparkov"
STREAM_FILES = [
    SPARKOV / "fraudTest_first5116rows.csv.gz",
    SPARKOV / "fraudTrain_first5039rows.csv.gz",
    SPARKOV / "fraudTest_1072fraud_1072normal.csv.gz",
]
HISTORY = SPARKOV / "fraudTrain_first5039rows.csv.gz"
RECEIPTS = [
    ROOT / "data" / "sroie" / "sroie_train_metadata.jsonl.gz",
    ROOT / "data" / "sroie" / "sroie_test_metadata.jsonl.gz",
]
MALFORMED_KINDS = ("not_json", "not_utf8", "schema_invalid", "empty_payload")
MODES = ("at-least-once", "exactly-once")
READY_MARK = "partitions assigned"
POLL_S = 0.5


class HarnessError(Exception):
    """The harness itself could not run (broker, training, producing); not a verdict."""


class CrashLoop(Exception):
    """The processor keeps exiting by itself: the mode stops and is judged on what it did."""


def exactly_once_available() -> bool:
    """Whether this processor has a ``delivery`` setting (checked now, not at import)."""
    from processor.config import Settings

    return "delivery" in Settings.model_fields


def say(mode: str, text: str) -> None:
    print(f"[{mode}] {text}", flush=True)


# -- events --------------------------------------------------------------------------------


def build_events(count: int) -> list[SourceEvent]:
    """``count`` real sparkov transactions with unique ids: a reused row gets ``-r<round>``."""
    rows = [e for path in STREAM_FILES for e in open_source("sparkov", path)]
    used: Counter = Counter()
    events = []
    for i in range(count):
        row = rows[i % len(rows)]
        original = row.event["event_id"]
        round_ = used[original]
        used[original] += 1
        if round_:
            event = {**row.event, "event_id": f"{original}-r{round_}"}
            row = SourceEvent(event, row.key, row.label)
        events.append(row)
    return events


@dataclass(frozen=True)
class Record:
    """One input record of the run and what the outputs must show for it."""

    role: str  # "transactions" or "documents": the input topic
    key: bytes | None
    value: bytes | None
    expected_id: str | None  # the id its output is counted by; None for a tombstone
    reason: str | None = None  # malformed: the dead-letter reason it must get


def transaction_record(event: SourceEvent) -> Record:
    """A valid transaction's input record, counted by its event id."""
    return Record(
        "transactions", event.key.encode(), encode_event(event.event), event.event["event_id"]
    )


def build_records(
    count: int, documents_every: int = 0, malformed_every: int = 0, tombstones_every: int = 0
) -> list[Record]:
    """``count`` input records: transactions, with every n-th a receipt, a malformed record or
    a tombstone (0: none of that kind). Every id is unique."""
    transactions = iter(build_events(count))
    receipts = (
        [e for path in RECEIPTS for e in open_source("sroie", path)] if documents_every else []
    )
    records: list[Record] = []
    malformed = 0
    for n in range(1, count + 1):
        if tombstones_every and n % tombstones_every == 0:
            records.append(Record("transactions", f"chaos-tombstone-{n}".encode(), None, None))
        elif malformed_every and n % malformed_every == 0:
            kind = MALFORMED_KINDS[malformed % len(MALFORMED_KINDS)]  # each kind in turn
            malformed += 1
            records.append(_malformed(n, kind, next(transactions)))
        elif documents_every and n % documents_every == 0:
            used = n // documents_every - 1
            doc = receipts[used % len(receipts)]
            event = {**doc.event, "event_id": f"{doc.event['event_id']}-c{used}"}
            records.append(
                Record("documents", doc.key.encode(), encode_event(event), event["event_id"])
            )
        else:
            records.append(transaction_record(next(transactions)))
    return records


def _malformed(n: int, kind: str, template: SourceEvent) -> Record:
    """A record the processor must dead-letter with ``kind`` as the reason; counted by key
    (by its event id when it has one)."""
    key = f"chaos-bad-{n}"
    if kind == "schema_invalid":  # valid JSON, an amount written as an exponent
        event = {**template.event, "event_id": key, "amount": "1E+3"}
        return Record("transactions", key.encode(), encode_event(event), key, kind)
    value = {
        "not_json": b'{"type": "transaction", "event_id": "' + key.encode(),  # cut short
        "not_utf8": b'{"event_id": "' + key.encode() + b'\xff\xfe"}',
        "empty_payload": b"  \n ",
    }[kind]
    return Record("transactions", key.encode(), value, checker.key_id(key.encode()), kind)


class Feeder:
    """Produces the input records and remembers what the broker acknowledged."""

    def __init__(self, bootstrap: str, topics: dict[str, str]) -> None:
        self.topics = topics  # role -> topic name
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "log.connection.close": False,
            }
        )
        self.lock = threading.Lock()
        self.acked: list[str] = []  # expected ids of acknowledged records
        self.acked_records = 0  # tombstones included
        self.reasons: dict[str, str] = {}  # malformed id -> the dead-letter reason it needs
        self.kinds: Counter = Counter()  # acknowledged records by kind
        self.ends: dict[tuple[str, int], int] = {}  # one past the highest acknowledged offset
        self.failed: list[str] = []
        self.unplaced = 0  # acknowledged records whose offset was not reported
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _on_delivery(self, record: Record):
        def report(err, msg) -> None:
            with self.lock:
                if err is not None:
                    self.failed.append(f"{record.expected_id or record.key}: {err.str()}")
                    return
                self.acked_records += 1
                self.kinds[_kind(record)] += 1
                if record.expected_id is not None:
                    self.acked.append(record.expected_id)
                if record.reason is not None:
                    self.reasons[record.expected_id] = record.reason
                if msg.offset() is None or msg.offset() < 0:
                    # delivered, but librdkafka did not learn the offset (it can happen for a
                    # retried record after the broker was unreachable)
                    self.unplaced += 1
                    return
                end = msg.offset() + 1
                tp = (msg.topic(), msg.partition())
                if end > self.ends.get(tp, 0):
                    self.ends[tp] = end

        return report

    def send(self, records: list[Record], rate: float | None = None) -> None:
        """Produce ``records`` (paced to ``rate`` per second when given); wait for all acks."""
        started = time.monotonic()
        for n, record in enumerate(records):
            if rate:
                while (wait := started + n / rate - time.monotonic()) > 0:
                    self.producer.poll(min(wait, 0.1))
            report = self._on_delivery(record)
            while True:
                try:
                    self.producer.produce(
                        self.topics[record.role],
                        value=record.value,
                        key=record.key,
                        on_delivery=report,
                    )
                    break
                except BufferError:
                    self.producer.poll(0.1)
            self.producer.poll(0)
        left = self.producer.flush(120)
        if left:
            with self.lock:
                self.failed.append(f"{left} records not acknowledged within 120 s")

    def start(self, records: list[Record], rate: float | None) -> None:
        def target() -> None:
            try:
                self.send(records, rate)
            except BaseException as exc:  # reported by the harness
                self.error = exc
            finally:
                self.done.set()

        self._thread = threading.Thread(target=target, name="chaos-feeder", daemon=True)
        self._thread.start()

    def snapshot(self) -> tuple[int, dict[tuple[str, int], int]]:
        with self.lock:
            return self.acked_records, dict(self.ends)


def _kind(record: Record) -> str:
    if record.value is None:
        return "tombstones"
    if record.reason is not None:
        return "malformed"
    return record.role


class GroupOffsets:
    """The group's committed offsets of the input topics (OffsetFetch; never joins the group)."""

    def __init__(self, bootstrap: str, group: str, topics: list[str], partitions: int) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "log.connection.close": False,
            }
        )
        self.tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        self.last: dict[tuple[str, int], int] = {}

    def committed(self) -> dict[tuple[str, int], int]:
        try:
            tps = self.consumer.committed(self.tps, timeout=10)
            self.last = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in tps}
        except KafkaException:
            pass  # coordinator busy (rebalance): keep the last answer
        return self.last

    def close(self) -> None:
        self.consumer.close()


# -- the processor under test --------------------------------------------------------------


@dataclass
class Incarnation:
    """One `processor run` process."""

    number: int
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    started: float = 0.0
    ready_at: float | None = None
    _log: object = field(default=None, repr=False)
    _seen: int = 0

    def start(self) -> Incarnation:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in wait_exit)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "processor", "run"],
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.started = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> bool:
        """True once the log says it holds at least one partition."""
        if self.ready_at is None:
            text = self.log_path.read_text(errors="replace")
            for line in text.splitlines():
                if READY_MARK in line and "(none)" not in line:
                    self.ready_at = time.monotonic()
                    break
        return self.ready_at is not None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.wait_exit(30)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def processor_env(bootstrap: str, model_dir: Path, group: str, mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSOR_")}
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "PROCESSOR_BOOTSTRAP_SERVERS": bootstrap,
            "PROCESSOR_MODEL_DIR": str(model_dir.resolve()),
            "PROCESSOR_GROUP_ID": group,
            "PROCESSOR_METRICS_PORT": "0",
            "PROCESSOR_CONSUMER_KAFKA": '{"session.timeout.ms": 6000}',
            "PROCESSOR_EMBEDDING_ENCODING": "none",
            "PROCESSOR_LOG_LEVEL": "INFO",
        }
    )
    if exactly_once_available():
        env["PROCESSOR_DELIVERY"] = mode
    return env


# -- one mode ------------------------------------------------------------------------------


@dataclass
class ModeRun:
    mode: str
    args: argparse.Namespace
    model_dir: Path
    records: list[Record]
    rng: random.Random
    problems: list[str] = field(default_factory=list)
    incarnations: list[dict] = field(default_factory=list)
    crashes: int = 0
    unexpected_exits: int = 0
    broker_checks: brokercheck.TransactionChecks | None = None
    offsets: GroupOffsets | None = None

    def run(self) -> dict:
        started = time.monotonic()
        args = self.args
        topics = Topics()
        logs = args.workdir / "logs" / self.mode
        logs.mkdir(parents=True, exist_ok=True)
        with EmbeddedBroker(free_port(), log_file=logs / "broker.log") as broker:
            bootstrap = broker.bootstrap_servers
            ensure_topics(bootstrap, topics.all(), args.partitions)
            say(self.mode, f"broker at {bootstrap}; topics with {args.partitions} partitions")
            if self.mode == "exactly-once":
                say(self.mode, "checking the broker's transactions (up to 25 s) ...")
                self.broker_checks = brokercheck.check_transactions(bootstrap)
                for problem in self.broker_checks.problems():
                    say(self.mode, f"broker check failed: {problem}")
            feeder = Feeder(
                bootstrap, {"transactions": topics.transactions, "documents": topics.documents}
            )
            preload = int(len(self.records) * args.preload)
            feeder.send(self.records[:preload])
            if feeder.failed:
                raise HarnessError(f"producing the input failed: {feeder.failed[:3]}")
            say(
                self.mode,
                f"pre-loaded {preload} records; {len(self.records) - preload} more follow at "
                f"{args.rate:g}/s while the processor runs",
            )
            feeder.start(self.records[preload:], args.rate)
            group = f"chaos-{self.mode}"
            offsets = GroupOffsets(
                bootstrap, group, [topics.transactions, topics.documents], args.partitions
            )
            self.offsets = offsets
            env = processor_env(bootstrap, self.model_dir, group, self.mode)
            try:
                self._kill_phase(env, logs, feeder, offsets)
                completed = self._final_phase(env, logs, feeder, offsets)
            except CrashLoop as exc:
                self.problems.append(str(exc))
                completed = False
            finally:
                offsets.close()
            feeder.done.wait()
            if feeder.error is not None or feeder.failed:
                raise HarnessError(f"producing the input failed: {feeder.error or feeder.failed}")
            say(self.mode, "reading the outputs back (read committed) ...")
            result = checker.check(
                bootstrap, feeder.acked, topics, timeout=args.read_timeout, reasons=feeder.reasons
            )
        wall = time.monotonic() - started
        ok = result.holds(self.mode) and completed and not self.problems
        if not result.holds(self.mode):
            self.problems.append(
                f"guarantee broken: {result.losses} lost, {result.duplicates} duplicated, "
                f"{result.unexpected} unexpected ids, {result.wrong_reasons} dead letters with "
                "the wrong reason"
            )
        return {
            "mode": self.mode,
            "ok": ok,
            "events_sent": result.sent + feeder.kinds["tombstones"],
            "records_by_kind": dict(feeder.kinds),
            "crashes": self.crashes,
            "crashes_by_moment": dict(
                Counter(i["end"] for i in self.incarnations if i["end"].startswith("SIGKILL"))
            ),
            "kills_with_backlog": sum(
                1
                for i in self.incarnations
                if i["end"].startswith("SIGKILL") and i["committed_at_end"] < i["produced_at_end"]
            ),
            "losses": result.losses,
            "duplicates": result.duplicates,
            "wall_seconds": round(wall, 1),
            "unexpected_exits": self.unexpected_exits,
            "all_committed": completed,
            "problems": self.problems,
            "check": result.as_dict(),
            "incarnations": self.incarnations,
            "broker_transactions": self.broker_checks.as_dict() if self.broker_checks else None,
        }

    def _start(self, env: dict, logs: Path) -> Incarnation:
        number = len(self.incarnations) + 1
        proc = Incarnation(number, logs / f"run-{number:02d}.log", env).start()
        return proc

    def _wait_ready(self, proc: Incarnation) -> bool:
        deadline = time.monotonic() + self.args.ready_timeout
        while time.monotonic() < deadline:
            if not proc.alive() or proc.ready():
                break
            time.sleep(0.2)
        return proc.ready() and proc.alive()

    def _record(self, proc: Incarnation, how: str, committed: int, produced: int, **extra):
        ready_s = proc.ready_at - proc.started if proc.ready_at else None
        self.incarnations.append(
            {
                "number": proc.number,
                "pid": proc.pid,
                "end": how,
                "ready_s": round(ready_s, 1) if ready_s is not None else None,
                "uptime_s": round(time.monotonic() - proc.started, 1),
                "committed_at_end": committed,
                "produced_at_end": produced,
                # the group's offsets as last read (what ``committed`` was summed from)
                "committed_by_partition": {
                    f"{t}[{p}]": o for (t, p), o in sorted(self.offsets.last.items())
                },
                "log": str(proc.log_path),
                **extra,
            }
        )

    def _exited(self, proc: Incarnation, produced: int, committed: int) -> None:
        code = proc.wait_exit(5)
        self.unexpected_exits += 1
        self.problems.append(
            f"run #{proc.number} (pid {proc.pid}) exited by itself with code {code}; "
            f"log {proc.log_path}"
        )
        say(self.mode, f"run #{proc.number} EXITED by itself (code {code}):\n{proc.tail()}")
        self._record(proc, f"exited {code}", committed, produced)
        if self.unexpected_exits >= 3:
            raise CrashLoop(
                f"crash loop: the processor exited by itself {self.unexpected_exits} times"
            )

    def _kill_phase(self, env: dict, logs: Path, feeder: Feeder, offsets: GroupOffsets) -> None:
        """``--kills`` SIGKILLs mid-stream, ``--startup-kills`` while a run starts and
        ``--drain-kills`` during the drain after SIGTERM, in a seeded random order."""
        args = self.args
        pending = (
            ["mid-stream"] * args.kills
            + ["start-up"] * args.startup_kills
            + ["drain"] * args.drain_kills
        )
        self.rng.shuffle(pending)
        while pending:
            proc = self._start(env, logs)
            if pending[0] == "start-up":
                if self._startup_kill(proc, feeder, offsets):
                    pending.pop(0)
                continue
            before = sum(offsets.committed().values())
            if not self._wait_ready(proc):
                produced = feeder.snapshot()[0]
                if not proc.alive():
                    self._exited(proc, produced, before)
                    continue
                self.problems.append(
                    f"run #{proc.number} held no partition {args.ready_timeout:.0f} s after start"
                )
                say(self.mode, f"run #{proc.number} NOT READY after {args.ready_timeout:.0f} s")
            uptime = self.rng.uniform(args.min_uptime, args.max_uptime)
            produced, done = feeder.snapshot()[0], before
            kill_at = (proc.ready_at or time.monotonic()) + uptime
            progress_deadline = kill_at + args.stall_timeout
            while proc.alive():
                now = time.monotonic()
                produced, ends = feeder.snapshot()
                committed = offsets.committed()
                done = sum(committed.values())
                caught_up = all(committed.get(p, 0) >= e for p, e in ends.items())
                if now >= kill_at and (done > before or caught_up):
                    break
                if now >= progress_deadline:
                    self.problems.append(
                        f"run #{proc.number}: no offset committed for {args.stall_timeout:.0f} s "
                        f"after the kill was due (stall); committed {done} of {produced}"
                    )
                    say(self.mode, f"run #{proc.number} STALLED at {done}/{produced} committed")
                    break
                time.sleep(POLL_S)
            if not proc.alive():
                self._exited(proc, produced, done)
                continue
            kind = pending.pop(0)
            if kind == "drain":
                self._drain_kill(proc, feeder, offsets, uptime)
                continue
            proc.kill()
            self.crashes += 1
            self._record(proc, "SIGKILL", done, produced, planned_uptime_s=round(uptime, 1))
            say(
                self.mode,
                f"kill {self.crashes}: SIGKILL run #{proc.number} (pid {proc.pid}) "
                f"{time.monotonic() - proc.started:.1f} s after start; committed {done} of "
                f"{produced} produced so far",
            )

    def _startup_kill(self, proc: Incarnation, feeder: Feeder, offsets: GroupOffsets) -> bool:
        """SIGKILL a run at a random moment of its start (loading models, joining the group,
        its first batches); False when it exited by itself first."""
        delay = self.rng.uniform(0.3, self.args.startup_window)
        deadline = proc.started + delay
        while proc.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        produced, done = feeder.snapshot()[0], sum(offsets.committed().values())
        if not proc.alive():
            self._exited(proc, produced, done)
            return False
        held = proc.ready()
        proc.kill()
        self.crashes += 1
        self._record(proc, "SIGKILL in start-up", done, produced, planned_uptime_s=round(delay, 1))
        say(
            self.mode,
            f"kill {self.crashes}: SIGKILL run #{proc.number} in its start-up, {delay:.1f} s "
            f"after start ({'holding' if held else 'before it held'} partitions)",
        )
        return True

    def _drain_kill(
        self, proc: Incarnation, feeder: Feeder, offsets: GroupOffsets, uptime: float
    ) -> None:
        """SIGTERM a run mid-stream, then SIGKILL it at a random moment of its drain."""
        proc.proc.send_signal(signal.SIGTERM)
        delay = self.rng.uniform(0.05, self.args.drain_window)
        code = proc.wait_exit(delay)
        produced, done = feeder.snapshot()[0], sum(offsets.committed().values())
        if code is not None:  # the drain finished first: a clean stop, not a crash
            if code != 0:
                self.problems.append(f"run #{proc.number} exited {code} after SIGTERM")
            self._record(proc, f"SIGTERM, exit {code} before the kill", done, produced)
            say(self.mode, f"run #{proc.number} drained within {delay:.2f} s of SIGTERM")
            return
        proc.kill()
        self.crashes += 1
        self._record(
            proc, "SIGKILL in the drain", done, produced, planned_uptime_s=round(uptime, 1)
        )
        say(
            self.mode,
            f"kill {self.crashes}: SIGKILL run #{proc.number} {delay:.2f} s into its drain "
            f"after SIGTERM; committed {done} of {produced} produced so far",
        )

    def _final_phase(self, env: dict, logs: Path, feeder: Feeder, offsets: GroupOffsets) -> bool:
        args = self.args
        for _ in range(3):  # a run that exits by itself is restarted (and reported)
            proc = self._start(env, logs)
            say(self.mode, f"final run #{proc.number} (pid {proc.pid}): running until drained")
            if not self._wait_ready(proc) and proc.alive():
                self.problems.append(
                    f"final run #{proc.number} held no partition {args.ready_timeout:.0f} s "
                    "after start"
                )
            last_done, last_change, last_print = -1, time.monotonic(), 0.0
            while proc.alive():
                produced, ends = feeder.snapshot()
                committed = offsets.committed()
                done = sum(committed.values())
                now = time.monotonic()
                if feeder.done.is_set() and all(committed.get(p, 0) >= e for p, e in ends.items()):
                    return self._stop_final(proc, done, produced)
                if done != last_done:
                    last_done, last_change = done, now
                elif now - last_change > args.stall_timeout:
                    self.problems.append(
                        f"final run #{proc.number}: no offset committed for "
                        f"{args.stall_timeout:.0f} s at {done} of {produced} (stall)"
                    )
                    say(self.mode, f"final run STALLED at {done}/{produced}: killing it")
                    proc.kill()
                    self._record(proc, "stalled, SIGKILL", done, produced)
                    return False
                if now - last_print >= 10:
                    say(self.mode, f"  committed {done} of {produced} produced")
                    last_print = now
                time.sleep(POLL_S)
            self._exited(proc, feeder.snapshot()[0], sum(offsets.committed().values()))
        return False

    def _stop_final(self, proc: Incarnation, done: int, produced: int) -> bool:
        say(self.mode, f"all {done} input offsets committed; SIGTERM run #{proc.number}")
        proc.proc.send_signal(signal.SIGTERM)
        code = proc.wait_exit(self.args.stop_timeout)
        if code is None:
            self.problems.append(
                f"final run #{proc.number} did not stop within {self.args.stop_timeout:.0f} s "
                "of SIGTERM"
            )
            proc.kill()
            self._record(proc, "SIGTERM ignored, SIGKILL", done, produced)
            return True
        if code != 0:
            self.problems.append(f"final run #{proc.number} exited {code} after SIGTERM")
        self._record(proc, f"SIGTERM, exit {code}", done, produced)
        return True


# -- command -------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Crash harness: SIGKILL `processor run` at random moments while real transactions "
        "stream through an embedded broker (with receipts, malformed records and tombstones mixed "
        "in), restart it, let it drain, then check every event id in the outputs (losses, "
        "duplicates, dead-letter reasons) per delivery mode."
    )
    parser.add_argument(
        "--modes",
        choices=["auto", "at-least-once", "exactly-once", "both"],
        default="auto",
        help="auto: both when the processor has PROCESSOR_DELIVERY, else at-least-once "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=20_000,
        help="input records produced, transactions and the mixed-in kinds below "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--kills", type=int, default=10, help="SIGKILLs per mode (default: %(default)s)"
    )
    parser.add_argument(
        "--documents-every",
        type=int,
        default=100,
        help="every n-th record is a SROIE receipt on documents.raw; 0: none "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--malformed-every",
        type=int,
        default=250,
        help="every n-th record is malformed (not JSON, not UTF-8, schema-invalid, empty, in "
        "turn); 0: none (default: %(default)s)",
    )
    parser.add_argument(
        "--tombstones-every",
        type=int,
        default=500,
        help="every n-th record is a tombstone (null value); 0: none (default: %(default)s)",
    )
    parser.add_argument(
        "--startup-kills",
        type=int,
        default=2,
        help="further SIGKILLs per mode at a random moment of a run's start (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--drain-kills",
        type=int,
        default=2,
        help="further SIGKILLs per mode during the drain that follows a SIGTERM (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--startup-window",
        type=float,
        default=14.0,
        help="start-up kills land within this many seconds of the start; a start takes about "
        "10 s on 2 cores, so some land in the first batches (default: %(default)s)",
    )
    parser.add_argument(
        "--drain-window",
        type=float,
        default=1.0,
        help="drain kills land within this many seconds of the SIGTERM (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument(
        "--rate",
        type=float,
        default=60.0,
        help="events per second produced while the processor runs (default: %(default)s)",
    )
    parser.add_argument(
        "--preload",
        type=float,
        default=0.3,
        help="share of the events produced before the first start (default: %(default)s)",
    )
    parser.add_argument(
        "--min-uptime",
        type=float,
        default=3.0,
        help="least seconds between holding partitions and SIGKILL (default: %(default)s)",
    )
    parser.add_argument(
        "--max-uptime",
        type=float,
        default=15.0,
        help="most seconds between holding partitions and SIGKILL (default: %(default)s)",
    )
    parser.add_argument(
        "--partitions", type=int, default=6, help="partitions per topic (default: %(default)s)"
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="use this model artifact instead of training one into the work folder",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("runs/chaos"),
        help="model, processor and broker logs (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=180.0,
        help="seconds a start may take to hold partitions (default: %(default)s)",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=180.0,
        help="seconds without a committed offset that count as a stall (default: %(default)s)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=90.0,
        help="seconds the final run may take to exit on SIGTERM (default: %(default)s)",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=180.0,
        help="seconds to read an output topic back (default: %(default)s)",
    )


def choose_modes(requested: str) -> tuple[list[str], str | None]:
    """The modes to run, and a note when exactly-once had to be left out."""
    available = exactly_once_available()
    if requested in ("auto", "both"):
        if available:
            return list(MODES), None
        note = (
            "exactly-once is not available: this processor has no PROCESSOR_DELIVERY setting "
            "(Settings.delivery); running at-least-once only"
        )
        return ["at-least-once"], note
    if requested == "exactly-once" and not available:
        raise HarnessError(
            "exactly-once is not available: this processor has no PROCESSOR_DELIVERY setting "
            "(Settings.delivery)"
        )
    return [requested], None


def train_model(workdir: Path) -> Path:
    out = workdir / "model"
    print(f"training a small model into {out} (5 epochs) ...", flush=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "processor",
            "train",
            "--source",
            "sparkov",
            str(HISTORY),
            "--out",
            str(out),
            "--epochs",
            "5",
        ],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise HarnessError(f"training failed:\n{done.stderr[-2000:]}")
    return out


def _describe_span(span: dict, incarnations: list[dict]) -> str:
    """A block of repeated ids and the kill it follows: the latest run that ended with the
    group's offset of that partition at or below the block's first offset."""
    tp = f"{span['topic']}[{span['partition']}]"
    text = f"{tp} offsets {span['first']}-{span['last']} ({span['ids']} ids)"
    before = [
        (i["committed_by_partition"][tp], i)
        for i in incarnations
        if i["end"].startswith("SIGKILL")
        and i["committed_by_partition"].get(tp, span["first"] + 1) <= span["first"]
    ]
    if before:
        committed, last = max(before, key=lambda pair: pair[0])
        text += (
            f", after run #{last['number']} ({last['end']}) left that partition committed at "
            f"{committed}"
        )
    return text


def summary_table(results: list[dict]) -> str:
    head = (
        f"{'mode':<15}{'events sent':>12}{'crashes':>9}{'losses':>8}{'duplicates':>12}"
        f"{'wall time':>11}  verdict"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        checks = r.get("broker_transactions")
        if r["ok"] and checks is not None and not checks["ok"]:
            # nothing broke, but on this broker it would have, had a kill hit a transaction
            verdict = "PASS, on a broker that fails the transaction checks (see below)"
        elif r["ok"]:
            verdict = "PASS"
        else:
            verdict = "FAIL: " + "; ".join(r["problems"][:2])
        rows.append(
            f"{r['mode']:<15}{r['events_sent']:>12}{r['crashes']:>9}{r['losses']:>8}"
            f"{r['duplicates']:>12}{r['wall_seconds']:>10.0f}s  {verdict}"
        )
    return "\n".join(rows)


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if min(args.startup_kills, args.drain_kills) < 0 or args.startup_window <= 0.3:
        print(
            "chaos: --startup-kills, --drain-kills >= 0; --startup-window > 0.3", file=sys.stderr
        )
        return 2
    if args.drain_window <= 0.05:
        print("chaos: --drain-window > 0.05", file=sys.stderr)
        return 2
    if args.events < 1 or args.kills < 0 or not 0 <= args.preload <= 1:
        print("chaos: --events >= 1, --kills >= 0 and 0 <= --preload <= 1", file=sys.stderr)
        return 2
    if min(args.documents_every, args.malformed_every, args.tombstones_every) < 0:
        print(
            "chaos: --documents-every, --malformed-every, --tombstones-every >= 0", file=sys.stderr
        )
        return 2
    if args.min_uptime > args.max_uptime or args.rate <= 0:
        print("chaos: need --min-uptime <= --max-uptime and --rate > 0", file=sys.stderr)
        return 2
    try:
        modes, note = choose_modes(args.modes)
        if note:
            print(f"note: {note}", flush=True)
        args.workdir.mkdir(parents=True, exist_ok=True)
        model_dir = args.model_dir or train_model(args.workdir)
        records = build_records(
            args.events, args.documents_every, args.malformed_every, args.tombstones_every
        )
        kinds = Counter(_kind(r) for r in records)
        print(
            f"{len(records)} input records: {kinds['transactions']} sparkov transactions, "
            f"{kinds['documents']} SROIE receipts, {kinds['malformed']} malformed, "
            f"{kinds['tombstones']} tombstones; modes: {', '.join(modes)}; SIGKILLs each: "
            f"{args.kills} mid-stream, {args.startup_kills} in start-up, {args.drain_kills} in "
            f"the drain; seed {args.seed}",
            flush=True,
        )
        results = []
        for mode in modes:
            rng = random.Random(f"{args.seed}:{mode}")
            results.append(ModeRun(mode, args, model_dir, records, rng).run())
    except HarnessError as exc:
        print(f"chaos: error: {exc}", file=sys.stderr)
        return 2
    print("\n=== chaos summary ===")
    print(summary_table(results))
    for r in results:
        c = r["check"]
        print(
            f"{r['mode']}: {c['enriched_records']} enriched + {c['dead_letter_records']} "
            f"dead-letter records for {c['sent']} records with an output "
            f"({c['duplicate_records']} extra copies); alerts {c['alert_records']} "
            f"({c['alert_duplicates']} ids repeated)"
        )
        print(
            f"  dead letters by reason {c['dead_letter_reasons']}; wrong reason "
            f"{c['wrong_reasons']}; tombstones {r['records_by_kind'].get('tombstones', 0)} "
            "(no output; their offsets committed)"
        )
        print(
            f"  reprocessed events whose copies differ: {c['divergent_duplicates']} by score "
            f"(largest gap {c['max_score_difference']:.2g}), "
            f"{c['flag_divergent_duplicates']} by is_anomaly"
        )
        moments = ", ".join(f"{n} {end}" for end, n in sorted(r["crashes_by_moment"].items()))
        print(
            f"  kills: {moments}; {r['kills_with_backlog']} of {r['crashes']} hit while input "
            "was produced but not yet committed"
        )
        for problem in r["problems"]:
            print(f"  problem: {problem}")
        checks = r["broker_transactions"]
        if checks is not None:
            verdict = "passed" if checks["ok"] else "failed: " + "; ".join(checks["problems"])
            print(f"  broker transaction checks {verdict}")
            if not checks["ok"]:
                print(
                    "  so a kill that lands after a transaction's first output and before its "
                    "commit makes that batch come out twice (the restarted processor reuses "
                    "the transactional.id, the default) or stalls those partitions (it does "
                    "not); a pass only means that no kill landed there (README: Known "
                    "limitations)"
                )
        if c["lost_ids"]:
            print(f"  lost (first {len(c['lost_ids'])}): {', '.join(c['lost_ids'])}")
        for span in c["duplicate_spans"][:12]:
            print(f"  repeated: {_describe_span(span, r['incarnations'])}")
    report = {
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seed": args.seed,
        "events": args.events,
        "kills": args.kills,
        "rate": args.rate,
        "preload": args.preload,
        "uptime_s": [args.min_uptime, args.max_uptime],
        "partitions": args.partitions,
        "exactly_once_available": exactly_once_available(),
        "note": note,
        "ok": all(r["ok"] for r in results),
        "wall_seconds": round(time.monotonic() - started, 1),
        "modes": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"results written to {args.json}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    from processor.logs import setup_logging

    parser = argparse.ArgumentParser(prog="processor chaos")
    configure_parser(parser)
    setup_logging("WARNING")
    raise SystemExit(main(parser.parse_args()))
