"""A batch is acked with one frame (multiple=True) only when that settles nothing else: every
delivery tag of the channel up to the batch's last is settled already or in the batch."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumers.acks import ChannelAcks


@given(
    settled=st.sets(st.integers(min_value=1, max_value=60)),
    batch=st.sets(st.integers(min_value=1, max_value=60), min_size=1),
)
def test_one_frame_only_when_every_tag_below_the_last_is_settled_or_in_the_batch(
    settled: set[int], batch: set[int]
) -> None:
    batch -= settled  # a batch holds unsettled deliveries
    if not batch:
        return
    acks = ChannelAcks()
    for tag in sorted(settled, reverse=True):  # settled in any order
        acks.settled(tag)
    expected = all(tag in batch or tag in settled for tag in range(1, max(batch) + 1))
    assert acks.settles_only(batch) == expected


def test_a_tag_settled_twice_or_unknown_changes_nothing() -> None:
    acks = ChannelAcks()
    for tag in (1, 2, 2, None, 1):
        acks.settled(tag)
    assert acks.settles_only({3, 4})
    assert not acks.settles_only({4, 5})  # 3 is still being handled
