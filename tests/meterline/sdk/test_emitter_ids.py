"""Client-generated event ids stay unique, also across a fork (a repeated id is
deduplicated downstream: real usage dropped)."""

from __future__ import annotations

import os
import uuid

from meterline.sdk._ids import new_id


def test_ids_are_distinct_random_uuid4_across_pool_refills() -> None:
    ids = [new_id() for _ in range(1_000)]  # several 256-id pools
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {4}


def test_a_forked_child_does_not_repeat_the_parents_next_ids() -> None:
    new_id()  # a pool with ids left in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next ids and leave at once
        os.write(write, ",".join(new_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 4096).decode().split(",")
    os.waitpid(pid, 0)
    parent = [new_id() for _ in range(5)]
    assert len(child) == 5 and not set(child) & set(parent)
