"""Each presence member announced once, across nodes.

A join or leave of a presence channel gets a cluster-wide version from the channel
state. The member events it causes travel between nodes with that version
(:func:`versioned`), and the hub drops one for any socket whose member list was read at
that version or later, so a socket learns of each other member exactly once: in its
list or as ``member_added``, never both. Frames that reach a socket while its subscribe
is under way wait in a :class:`JoinBuffer` and follow ``subscription_succeeded``.
"""

from __future__ import annotations

# A presence member event travels between nodes as VERSIONED, its version in decimal,
# VERSIONED again, then the frame (a frame itself starts with "{"): see Hub.deliver.
VERSIONED = b"\x00"
# Frames for one socket held while its subscribe is under way (see JoinBuffer).
JOIN_BUFFER_BYTES = 1 << 20


def versioned(frame: bytes, version: int | None) -> bytes:
    """``frame`` (a presence member event) with the cluster version of its change."""
    return frame if version is None else b"%b%d%b%b" % (VERSIONED, version, VERSIONED, frame)


def unversioned(frame: bytes) -> tuple[bytes, int | None]:
    """The frame a broker carried, and its version when it has one."""
    if frame[:1] != VERSIONED:
        return frame, None
    end = frame.index(VERSIONED, 1)
    return frame[end + 1 :], int(frame[1:end])


class JoinBuffer:
    """The frames of a channel that reach a socket while its subscribe is under way: they
    go out after subscription_succeeded, those its member list already accounts for
    left out. Bounded in bytes: a socket that overflows it is closed (4100)."""

    __slots__ = ("frames", "overflowed", "size")

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, int | None]] = []
        self.size = 0
        self.overflowed = False

    def add(self, frame: bytes, version: int | None) -> None:
        self.size += len(frame)
        if self.size > JOIN_BUFFER_BYTES:
            self.overflowed = True
            self.frames.clear()
        elif not self.overflowed:
            self.frames.append((frame, version))

    def after(self, version: int | None) -> list[bytes]:
        """The frames held, but member events of a version <= ``version``."""
        return [f for f, v in self.frames if v is None or version is None or v > version]
