"""Per-app state on this node (channels, subscribers, presence members, cache) and the one
place that publishes."""
