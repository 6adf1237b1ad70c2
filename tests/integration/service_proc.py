"""Fault-test harness: ``stream-ae run`` as a real process (SIGKILLed and restarted), its RSS
sampled over time, and the loss / duplicate accounting of what it published.

Used by the crash tests (``test_crash_catch_up.py``) and the soak (``tests/soak/soak.py``).
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaException
from kafka_helpers import committed

from stream_ae.schema import DecisionMessage


class ServiceProcess:
    """``python -m stream_ae run -c CONFIG`` in a subprocess, logging JSON lines to ``log``.

    ``start`` (re)starts it, ``kill`` SIGKILLs it (no shutdown of any kind), ``stop`` sends
    SIGTERM and returns the exit status. ``rss`` samples the live process's resident memory
    (``sample_every`` seconds, in a thread) as ``(seconds since the first start, pid, KiB)``.
    """

    def __init__(self, config: pathlib.Path, log: pathlib.Path,
                 decisions_topic: str | None = None, sample_every: float = 1.0) -> None:
        self.config = config
        self.log = log
        self.decisions_topic = decisions_topic
        self.sample_every = sample_every
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.rss: list[tuple[float, int, int]] = []
        self._t0 = time.monotonic()
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self) -> None:
        extra = ["--decisions-topic", self.decisions_topic] if self.decisions_topic else []
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream_ae", "run", "-c", str(self.config), *extra],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        self.starts += 1
        if self._sampler is None:
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        assert self.proc is not None and self.alive(), self.tail()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.kills += 1

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM; the exit status (the sampler stops too)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._stop_sampling.set()

    def close(self) -> None:
        """Kill a process still running (after a failed test) and stop sampling."""
        self._stop_sampling.set()
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def _sample(self) -> None:
        while not self._stop_sampling.wait(self.sample_every):
            proc = self.proc
            if proc is None or proc.poll() is not None:
                continue
            kib = rss_kib(proc.pid)
            if kib is not None:
                self.rss.append((time.monotonic() - self._t0, proc.pid, kib))

    def peak_rss_mib(self) -> float:
        return max((kib for _, _, kib in self.rss), default=0) / 1024

    def events(self, name: str) -> list[dict[str, Any]]:
        """The log events called ``name``, in order, over every run so far."""
        out = []
        for line in self.log.read_bytes().splitlines():
            if name.encode() in line and line.startswith(b"{"):
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:  # a line cut by SIGKILL
                    continue
                if doc.get("event") == name:
                    out.append(doc)
        return out

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def rss_kib(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (``VmRSS`` of /proc/PID/status); None when gone."""
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def committed_now(bootstrap: str, group: str, topic: str, partitions: int,
                  attempts: int = 5) -> list[int]:
    """The group's committed offsets (0 for none), retried: a loaded broker can miss the
    10 s timeout of one query."""
    for attempt in range(attempts):
        try:
            return [max(o, 0) for o in committed(bootstrap, group, topic, partitions)]
        except KafkaException:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def total_committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    return sum(committed_now(bootstrap, group, topic, partitions))


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 120.0,
             alive: Callable[[], bool] = lambda: True, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        assert alive(), f"gave up waiting for {what}: the service died"
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def strip_time(value: bytes) -> dict[str, Any]:
    doc = orjson.loads(value)
    doc.pop("detected_at", None)
    return dict(doc)


@dataclass
class Accounting:
    """What was published against what should have been, per input partition.

    ``lost``: expected alerts (or input offsets) with no output; ``extra``: outputs nobody
    expected; duplicates are re-published copies (the test broker leaks aborted transactions
    to read_committed readers), ``non_identical`` those that differ from their first copy
    in anything but ``detected_at``."""

    alerts: int = 0
    lost_alerts: int = 0
    extra_alerts: int = 0
    duplicate_alerts: int = 0
    non_identical_alerts: int = 0
    decided_offsets: int = 0
    undecided_offsets: int = 0
    unexpected_decisions: int = 0
    duplicate_decisions: int = 0
    conflicting_decisions: int = 0
    decision_alert_mismatch: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost_alerts or self.extra_alerts or self.non_identical_alerts
                    or self.undecided_offsets or self.unexpected_decisions
                    or self.conflicting_decisions
                    or self.decision_alert_mismatch)

    def note(self, what: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(what)


def first_copies(messages: Iterable[Any], acc: Accounting) -> dict[str, dict[str, Any]]:
    """Alerts by ``alert_id`` (first copy); counts duplicates and non-identical ones."""
    first: dict[str, dict[str, Any]] = {}
    for m in messages:
        doc = strip_time(m.value())
        prev = first.setdefault(doc["alert_id"], doc)
        if prev is not doc:
            acc.duplicate_alerts += 1
            if prev != doc:
                acc.non_identical_alerts += 1
                acc.note(f"non-identical duplicate {doc['alert_id']}")
    acc.alerts = len(first)
    return first


def account(alert_msgs: Iterable[Any], decision_msgs: Iterable[Any],
            lengths: Mapping[int, int],
            expected_alerts: Mapping[int, Sequence[int]] | None = None,
            ) -> tuple[Accounting, dict[str, dict[str, Any]]]:
    """Every input offset ``[0, lengths[p])`` has exactly one outcome in the decision trail
    (re-published decisions agree), the alerts topic holds exactly the alerted offsets, and
    (when given) the alerts of an uninterrupted offline run per partition."""
    acc = Accounting()
    first = first_copies(alert_msgs, acc)
    outcome: dict[tuple[int, int], str] = {}
    for m in decision_msgs:
        d = DecisionMessage.model_validate_json(m.value())
        alerted, dead = set(d.alert_offsets), set(d.dead_letter_offsets)
        for o in range(d.start_offset, d.end_offset):
            what = "alert" if o in alerted else "dead" if o in dead else "normal"
            key = (d.partition, o)
            if key not in outcome:
                outcome[key] = what
                continue
            acc.duplicate_decisions += 1
            if outcome[key] != what:
                acc.conflicting_decisions += 1
                acc.note(f"decisions disagree at {d.partition}/{o}: {outcome[key]} vs {what}")
    want = {(p, o) for p, n in lengths.items() for o in range(n)}
    acc.decided_offsets = len(want & outcome.keys())
    acc.undecided_offsets = len(want - outcome.keys())
    acc.unexpected_decisions = len(outcome.keys() - want)
    if acc.undecided_offsets:
        acc.note(f"undecided e.g. {sorted(want - outcome.keys())[:3]}")
    if acc.unexpected_decisions:
        acc.note(f"decisions for no input e.g. {sorted(outcome.keys() - want)[:3]}")
    published = {(d["source"]["partition"], d["source"]["offset"]) for d in first.values()}
    decided_alert = {po for po, what in outcome.items() if what == "alert"}
    acc.decision_alert_mismatch = len(published ^ decided_alert)
    if expected_alerts is not None:
        expected = {(p, o) for p, offs in expected_alerts.items() for o in offs}
        acc.lost_alerts = len(expected - published)
        acc.extra_alerts = len(published - expected)
        if expected - published:
            acc.note(f"lost e.g. {sorted(expected - published)[:3]}")
        if published - expected:
            acc.note(f"extra e.g. {sorted(published - expected)[:3]}")
    else:  # the decision trail is the reference
        acc.lost_alerts = len(decided_alert - published)
        acc.extra_alerts = len(published - decided_alert)
    return acc, first


def ready_events(svc: ServiceProcess) -> list[dict[str, Any]]:
    return svc.events("partition_ready")


def restored_after_first(events: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(handovers, of which re-warmed): a partition's readiness after its first one must
    come from a restored engine checkpoint, or from its origin checkpoint (a fresh engine
    where the partition first started, written before its first record: the replay from
    there rebuilds the same state). A fresh engine anywhere else is a re-warm."""
    origin: dict[int, int] = {}
    handovers = rewarmed = 0
    for e in events:
        if e["partition"] in origin:
            handovers += 1
            rewarmed += not e["restored"] and e["start"] != origin[e["partition"]]
        origin.setdefault(e["partition"], e["start"])
    return handovers, rewarmed
