"""Where objects below the streaming threshold are staged between the S3 read and the uploads.

- Up to ``IN_MEMORY_MAX`` bytes: in memory, the bytes of the GET kept and uploaded from memory
  (no file, no directory, no disk-space check).
- Larger (up to ``STREAM_THRESHOLD_MB``): a file in a private directory under the temp dir, one
  directory per invocation, made when its first file is and removed afterwards.

Why 1 MiB: a staged file costs an object a fixed amount whatever its size - a directory, a
disk-space check, a create, a write, an open and a read per upload, an unlink, the directory's
removal - about 2 ms of a warm event as ``bench.small`` measures it (10 KiB to two destinations:
12.2 -> 10.0 ms of CPU per event when it went, against 8.3 / 8.0 for a bare GET and two uploads;
1 MiB: 33-35 -> 31-32 ms per copy, see bench/README.md). That is a tenth of a 10 KiB copy and
still ~6 % of a 1 MiB one, while the bytes themselves are copied in memory at GB/s. Memory holds
at most ``OBJECT_CONCURRENCY`` (2-16) such objects at once: 2 MiB at 128 MB of function memory,
16 MiB at 4 GB, next to the ~2x the object size an upload of it holds anyway (python-storage
sends objects under 8 MiB as one multipart body). The same 1 MiB bounds the names written
without a look first (``known.WRITE_AS_NEW_MAX``): one small-object path.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from .errors import StagingError

STAGING_PREFIX = "gcs-sync-staging-"  # distinct: the sweep removes only these, never a neighbour's gcs-sync-* folder
IN_MEMORY_MAX = 1024 * 1024  # objects up to this size are staged in memory (see above)


class Staged:
    """One object's staged bytes: written once through ``sink()``, then uploaded from ``content``
    (the bytes themselves, or the path of the staged file)."""

    def __init__(self, path: str | None = None):
        self._path = path
        self._memory = io.BytesIO() if path is None else None

    @contextmanager
    def sink(self) -> Iterator[BinaryIO]:
        """Where the source's bytes are written (from the start: a second read starts over)."""
        if self._memory is not None:
            self._memory.seek(0)
            self._memory.truncate()
            yield self._memory
            return
        with open(self._path, "wb") as handle:
            yield handle

    @property
    def content(self) -> bytes | str:
        """What an upload sends: the bytes (in memory) or the staged file's path."""
        return self._memory.getvalue() if self._memory is not None else self._path


class Staging:
    """Staging for one invocation: small objects in memory, the others in a private directory under
    the temp dir, removed afterwards.

    Staged file names are random, never derived from keys. Disk space is reserved before each
    download so concurrent objects cannot overfill the disk together. The directory is made when
    the first object needs a file: an invocation of small objects touches no disk.
    """

    def __init__(self, root: str):
        self.root = root
        self._dir: str | None = None
        self._reserved = 0
        self._lock = threading.Lock()

    @property
    def dir(self) -> str:
        """The invocation's private directory (mode 0700), made on first use."""
        with self._lock:
            if self._dir is None:
                self._dir = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root)
            return self._dir

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
        """Whether an object of ``size`` bytes can be staged now (in memory it always can)."""
        if size <= IN_MEMORY_MAX:
            return True
        with self._lock:
            return size <= shutil.disk_usage(self._dir or self.root).free - self._reserved

    @contextmanager
    def staged(self, size: int, what: str) -> Iterator[Staged]:
        """Where an object of ``size`` bytes is staged: in memory up to ``IN_MEMORY_MAX``, else a
        file (``file``; raises ``StagingError`` when it does not fit). Released on exit."""
        if size <= IN_MEMORY_MAX:
            yield Staged()
            return
        with self.file(size, what) as path:
            yield Staged(path)

    @contextmanager
    def file(self, size: int, what: str) -> Iterator[str]:
        directory = self.dir
        with self._lock:
            free = shutil.disk_usage(directory).free - self._reserved
            if size > free:
                raise StagingError(
                    f"{what}: {size} bytes do not fit in the {free} bytes free under {self.root}; "
                    "raise the function's ephemeral storage (up to 10,240 MB)"
                )
            self._reserved += size
        fd, path = tempfile.mkstemp(dir=directory, prefix="obj-")
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
        with self._lock:
            directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
