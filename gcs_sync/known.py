"""What this container remembers of the names it wrote: the first look saved on small objects.

For an object up to ``WRITE_AS_NEW_MAX`` the destination is not looked up while S3 answers:

- a name this container has not seen is written create-only (``ifGenerationMatch=0``);
- a name it wrote (or looked up) is planned against what it remembers there (generation and
  provenance, ``plan.remembered_is_older``): when the ordering rule says that state is older than
  the one read, it is written with ``ifGenerationMatch`` = that generation, else it is looked up;
- a name it knows without a usable memory (found held, listed by a sync) is looked up first.

Either way a 412 means the destination changed since (another container, a rival writer, a
delete): ``transfer.Copier.apply`` looks then and decides as usual, so the rule never rests on
the memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any, Callable

from .config import Destination
from .held import HeldObject
from .metadata import SourceState
from .plan import remembered_is_older

# Objects up to this size are written without looking first (see above): a new name saves the
# look, an existing one costs a refused small upload.
WRITE_AS_NEW_MAX = 1024 * 1024
# Names remembered per container, the least recently used forgotten first: ~1 KB each (a
# generation and a source state), ~10 MB at the limit.
KNOWN_NAMES_MAX = 10_000


class KnownNames:
    """(destination, name) -> what this container last wrote or saw there (None: known to exist,
    nothing to plan on). Bounded; thread-safe."""

    def __init__(self, limit: int = KNOWN_NAMES_MAX):
        self._names: OrderedDict[tuple[str, str], HeldObject | None] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def __contains__(self, target: tuple[Destination, str]) -> bool:
        with self._lock:
            return (target[0].url, target[1]) in self._names

    def add(self, target: tuple[Destination, str], held: HeldObject | None = None) -> None:
        """Remember ``target``; ``held``: what it holds now, as this container wrote or read it."""
        key = (target[0].url, target[1])
        if held is not None and (held.source is None or not held.generation):
            held = None  # not a copy of ours, or no generation to write against: look first
        with self._lock:
            self._names[key] = held
            self._names.move_to_end(key)
            while len(self._names) > self._limit:
                self._names.popitem(last=False)

    def forget(self, target: tuple[Destination, str]) -> None:
        """``target`` no longer exists (this container deleted it): written create-only next."""
        with self._lock:
            self._names.pop((target[0].url, target[1]), None)

    def recall(self, target: tuple[Destination, str]) -> tuple[bool, HeldObject | None]:
        """(known, what it held when this container last wrote or saw it)."""
        key = (target[0].url, target[1])
        with self._lock:
            if key not in self._names:
                return False, None
            self._names.move_to_end(key)
            return True, self._names[key]


class Remembered:
    """A first look answered from memory: the held copy to plan on, no request made."""

    __slots__ = ("held",)

    def __init__(self, held: HeldObject):
        self.held = held


def first_looks(known: KnownNames, slots: list, small: bool, look: Callable[[Any], Future]) -> dict:
    """Per slot, how its destination is first looked at while S3 answers: a ``Future`` of the look,
    ``Remembered``, or None (written create-only). ``small``: the event gives a size up to
    ``WRITE_AS_NEW_MAX`` (else every destination is looked up)."""
    looks: dict = {}
    for slot in slots:
        seen, held = known.recall((slot.destination, slot.name)) if small else (True, None)
        looks[slot] = Remembered(held) if held is not None else look(slot) if seen else None
    return looks


def held_for(first: Any, state: SourceState, size: int, look: Callable[[], Any]) -> Any:
    """What to plan ``state`` (read from S3, ``size`` bytes) against after ``first_looks``: a
    remembered copy the ordering rule puts before ``state``, None (create-only), or the look's
    answer (a ``HeldObject``, None, or the error)."""
    if isinstance(first, Future):
        return first.result()
    if size > WRITE_AS_NEW_MAX:  # the object grew past the size the event gave: look first
        return look()
    if first is None:
        return None
    return first.held if remembered_is_older(state, first.held) else look()


def settled(looks: dict) -> None:
    """Wait for the looks in flight (their answers are not needed)."""
    for first in looks.values():
        if isinstance(first, Future):
            first.result()
