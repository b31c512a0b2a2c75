"""Where small objects are staged: a private directory under the temp dir per invocation."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator

from .errors import StagingError

STAGING_PREFIX = "gcs-sync-staging-"  # distinct: the sweep removes only these, never a neighbour's gcs-sync-* folder


class Staging:
    """A private directory under the temp dir for one invocation, removed afterwards.

    Staged file names are random, never derived from keys. Space is reserved before each
    download so concurrent objects cannot overfill the disk together.
    """

    def __init__(self, root: str):
        self.root = root
        self.dir = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root)  # mode 0700
        self._reserved = 0
        self._lock = threading.Lock()

    @staticmethod
    def sweep(root: str) -> None:
        """Remove directories left by earlier invocations of this container that were cut off."""
        try:
            entries = os.listdir(root)
        except OSError:
            return
        for entry in entries:
            if entry.startswith(STAGING_PREFIX):
                shutil.rmtree(os.path.join(root, entry), ignore_errors=True)

    def fits(self, size: int) -> bool:
        with self._lock:
            return size <= shutil.disk_usage(self.dir).free - self._reserved

    @contextmanager
    def file(self, size: int, what: str) -> Iterator[str]:
        with self._lock:
            free = shutil.disk_usage(self.dir).free - self._reserved
            if size > free:
                raise StagingError(
                    f"{what}: {size} bytes do not fit in the {free} bytes free under {self.root}; "
                    "raise the function's ephemeral storage (up to 10,240 MB)"
                )
            self._reserved += size
        fd, path = tempfile.mkstemp(dir=self.dir, prefix="obj-")
        os.close(fd)
        try:
            yield path
        finally:
            with self._lock:
                self._reserved -= size
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
