"""Swarm bursts: a swarm driver publishes every robot's state at once, one topic per robot."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from rclpy.subscription import Subscription


def take_waiting(subscriptions: Sequence[Subscription], skip: int) -> Iterator[tuple[int, bytes]]:
    """Take the serialized messages waiting in the raw ``subscriptions`` (created with ``raw=True``) other than
    number ``skip``, whose callback is running: ``(index, bytes)`` in subscription order, oldest first per
    subscription. A message taken here is not delivered to its own callback (the executor's take finds the
    queue empty), so a callback can handle the burst its own message arrived with in one pass."""
    for index, subscription in enumerate(subscriptions):
        if index != skip:
            while (taken := subscription.handle.take_message(subscription.msg_type, True)) is not None:
                yield index, taken[0]
