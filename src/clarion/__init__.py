"""Clarion: a self-hosted realtime server that speaks the Pusher Channels protocols.

``clarion.Server`` embeds one in a program (see :mod:`clarion.embedded`); it is imported
on first use, so ``import clarion`` (the CLI, the pytest plugin) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clarion.embedded import Server

__version__ = "0.2.0"
__all__ = ["Server", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Server":
        from clarion.embedded import Server

        return Server
    raise AttributeError(f"module 'clarion' has no attribute {name!r}")
