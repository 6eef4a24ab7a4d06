"""Slots: where images live. A slot is a partition (block device) or, on the emulated board, a file of full size.

Slots are rewritten in place, never truncated or re-created, exactly like a partition: the bytes beyond the image
are left alone and the size never changes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from firmware.errors import SlotError

SLOT_NAMES = ("a", "b", "golden")


@dataclass(frozen=True)
class Slot:
    name: str
    path: Path
    size: int | None = None   # capacity override for character devices and tests; None = the device/file size

    def capacity(self) -> int:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise SlotError(f"slot {self.name}: {self.path} does not exist; check [update.slots] in the config "
                            "(slot files must exist at full size, like partitions)") from None
        if self.size is not None:
            return self.size
        if stat.S_ISBLK(st.st_mode):
            fd = os.open(self.path, os.O_RDONLY)
            try:
                return os.lseek(fd, 0, os.SEEK_END)
            finally:
                os.close(fd)
        return st.st_size

    def check_fits(self, image_size: int) -> None:
        capacity = self.capacity()
        if image_size > capacity:
            raise SlotError(f"image is {image_size} bytes but slot {self.name} ({self.path}) holds only {capacity}; "
                            "build a smaller image or repartition. Nothing was written")

    def open_for_write(self) -> int:
        try:
            # O_RDWR, never O_TRUNC/O_CREAT: a slot is a partition; resuming reads back what is already there
            return os.open(self.path, os.O_RDWR)
        except OSError as exc:
            if exc.errno in (1, 13, 30):   # EPERM, EACCES, EROFS
                raise SlotError(f"slot {self.name} ({self.path}) is read-only ({exc.strerror}); remount it "
                                "read-write or fix its permissions. Nothing was written") from None
            raise SlotError(f"cannot open slot {self.name} ({self.path}): {exc.strerror}") from None
