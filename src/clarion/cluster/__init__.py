"""The one door to other nodes: fan-out between nodes and the shared channel state."""
