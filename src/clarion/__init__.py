"""Clarion: a self-hosted realtime server that speaks the Pusher Channels protocols."""

__version__ = "0.2.0"
