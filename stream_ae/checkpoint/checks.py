"""The contract every checkpoint store keeps, written once (as river's ``river/checks``).

``tests/integration/test_checkpoint_stores.py`` runs every check of :func:`yield_checks`
against every store. A check takes a :class:`Subject`: how to make a fresh (unopened)
store over the same backing storage, as another instance would, how to damage the newest
checkpoint of a partition, and an input topic to use.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from stream_ae.checkpoint import Checkpoint
from stream_ae.checkpoint.base import Store


@dataclass(frozen=True)
class Subject:
    """A store under test: ``make(keep)`` builds one, ``corrupt(store, topic, partition)``
    damages its newest checkpoint of a partition (as a torn write or bit rot would)."""

    make: Callable[[int], Store]
    corrupt: Callable[[Store, str, int], None]
    topic: str


@contextlib.contextmanager
def opened(subject: Subject, keep: int = 3) -> Iterator[Store]:
    store = subject.make(keep)
    store.open()
    try:
        yield store
    finally:
        store.close()


def blob(n: int, seed: int) -> bytes:
    """``n`` deterministic pseudo-random bytes."""
    out = bytearray()
    while len(out) < n:
        out += hashlib.sha256(f"{seed}/{len(out)}".encode()).digest()
    return bytes(out[:n])


def ckpt(topic: str, partition: int, position: int, size: int = 100) -> Checkpoint:
    return Checkpoint(topic, partition, position, blob(size, position), ("a", "b"),
                      meta={"records_seen": position, "model_version": position // 10})


def positions(store: Store, topic: str, partition: int) -> list[int]:
    return [c.position for c in store.valid(topic, partition)]


def check_empty_partition_has_nothing(subject: Subject) -> None:
    with opened(subject) as store:
        assert store.load(subject.topic, 0) is None
        assert list(store.valid(subject.topic, 1)) == []


def check_round_trip_keeps_bytes_and_fields(subject: Subject) -> None:
    """A snapshot larger than any chunk, and an origin checkpoint, come back unchanged."""
    big = ckpt(subject.topic, 0, 1234, size=300_000)
    origin = Checkpoint(subject.topic, 1, 55, None)
    with opened(subject) as store:
        store.save(big)
        store.save(origin)
        got, got_origin = store.load(subject.topic, 0), store.load(subject.topic, 1)
    assert got is not None and got_origin is not None
    assert got.engine == big.engine and got.created_at > 0
    assert (got.position, got.feature_names, dict(got.meta)) == (1234, ("a", "b"),
                                                                  dict(big.meta))
    assert (got_origin.position, got_origin.engine) == (55, None)


def check_newest_first_and_keeps_last_k(subject: Subject) -> None:
    with opened(subject, keep=3) as store:
        for pos in (10, 20, 30, 40, 50):
            store.save(ckpt(subject.topic, 0, pos))
        assert positions(store, subject.topic, 0) == [50, 40, 30]
        assert [r["position"] for r in store.describe(subject.topic, 0)] == [50, 40, 30]


def check_corrupt_newest_falls_back_to_older(subject: Subject) -> None:
    with opened(subject, keep=3) as store:
        for pos in (10, 20, 30):
            store.save(ckpt(subject.topic, 0, pos, size=5000))
        subject.corrupt(store, subject.topic, 0)
        assert positions(store, subject.topic, 0) == [20, 10]
        rows = store.describe(subject.topic, 0)
        assert [r["valid"] for r in rows] == [False, True, True]
        store.save(ckpt(subject.topic, 0, 40))  # writing goes on after the damage
        assert positions(store, subject.topic, 0)[:2] == [40, 20]


def check_partitions_are_separate(subject: Subject) -> None:
    with opened(subject) as store:
        store.save(ckpt(subject.topic, 0, 10))
        store.save(ckpt(subject.topic, 1, 77))
        store.save(ckpt(subject.topic, 0, 20))
        assert positions(store, subject.topic, 0) == [20, 10]
        assert positions(store, subject.topic, 1) == [77]
        assert store.partitions(subject.topic) == [0, 1]


def check_another_instance_takes_over(subject: Subject) -> None:
    """A partition handed to another instance: it reads what the first wrote, continues
    after it, and the first one sees that when it gets the partition back."""
    with opened(subject, keep=2) as first, opened(subject, keep=2) as second:
        first.save(ckpt(subject.topic, 0, 10))
        first.save(ckpt(subject.topic, 0, 20))
        got = second.load(subject.topic, 0)
        assert got is not None and got.engine == ckpt(subject.topic, 0, 20).engine
        second.save(ckpt(subject.topic, 0, 30))
        second.save(ckpt(subject.topic, 0, 40))
        assert positions(first, subject.topic, 0) == [40, 30]
        first.save(ckpt(subject.topic, 0, 50))
        assert positions(second, subject.topic, 0) == [50, 40]


def yield_checks() -> Iterator[Callable[[Subject], None]]:
    """Every contract check, in a stable order."""
    yield check_empty_partition_has_nothing
    yield check_round_trip_keeps_bytes_and_fields
    yield check_newest_first_and_keeps_last_k
    yield check_corrupt_newest_falls_back_to_older
    yield check_partitions_are_separate
    yield check_another_instance_takes_over
