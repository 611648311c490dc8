"""The table of requests in flight keeps the id of the last notification recorded after
its slots, where the shim's whole-slot reading of the table does not reach it."""

from __future__ import annotations

import os

from hvfs.intercept.inflight import NOTIF, SLOT, InflightTable


def _notification(notif_id: int) -> bytes:
    return notif_id.to_bytes(8, "little") + bytes(NOTIF - 8)


def test_the_last_id_recorded_is_kept_for_the_next_manager() -> None:
    table = InflightTable(4)
    assert table.last_id() is None  # nothing recorded yet: nowhere to look
    table.record(2, _notification(0xFFFF_FFFF_FFFF_FFF0))
    table.record(0, _notification(0xFFFF_FFFF_FFFF_FFF1))
    table.clear(0)  # answered: its slot is empty, its id stays the last one
    taken = InflightTable(0, fd=os.dup(table.fd))
    assert taken.slots == 4
    assert taken.last_id() == 0xFFFF_FFFF_FFFF_FFF1
    assert [p.notification[:8] for p in taken.pending()] == [_notification(0xFFFF_FFFF_FFFF_FFF0)[:8]]
    size = os.fstat(table.fd).st_size
    assert size // SLOT == 4 and 0 < size % SLOT < SLOT  # the shim's loop sees 4 slots, no more
    taken.close()
    table.close()


def test_a_table_of_an_earlier_manager_gets_room_for_the_id() -> None:
    fd = os.memfd_create("old-table", os.MFD_CLOEXEC)
    os.ftruncate(fd, 3 * SLOT)
    os.pwrite(fd, _notification(77), SLOT)
    table = InflightTable(0, fd=fd)
    assert table.slots == 3
    assert table.last_id() is None
    assert [p.notification[:8] for p in table.pending()] == [_notification(77)[:8]]
    table.record(1, _notification(78))
    assert table.last_id() == 78
    table.close()
