"""Batches of an iterable: every item once, in order, none longer than asked."""

from __future__ import annotations

from collections.abc import Iterator

from worker.runtime.iterables import batched


def test_items_come_in_batches_of_the_size_the_last_shorter_and_none_empty() -> None:
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched(range(6), 3)) == [[0, 1, 2], [3, 4, 5]]
    assert list(batched([], 3)) == []


def test_a_stream_is_read_a_batch_at_a_time() -> None:
    read: list[int] = []

    def stream() -> Iterator[int]:
        for i in range(10):
            read.append(i)
            yield i

    batches = batched(stream(), 4)
    assert next(batches) == [0, 1, 2, 3]
    assert read == [0, 1, 2, 3]  # nothing read ahead of the batch in hand
