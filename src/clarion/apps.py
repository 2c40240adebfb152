"""The app registry: look an app up by id (HTTP API) or by key (WebSocket, auth_key)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from clarion import metrics
from clarion.config import AppConfig
from clarion.protocol.names import EventLimits
from clarion.protocol.signing import Credentials


class App:
    """One configured app, with what the data plane needs at hand."""

    __slots__ = ("config", "credentials", "id", "key", "limits", "opened", "received")

    def __init__(self, config: AppConfig) -> None:
        self.id = config.id
        self.update(config)
        # Metric children, resolved once per app.
        self.opened = metrics.connections_opened.labels(config.id)
        self.received = (
            metrics.messages_received.labels(config.id),
            metrics.bytes_received.labels(config.id),
        )

    def update(self, config: AppConfig) -> None:
        """Take a changed configuration in place: open connections hold this object, so a
        rotated secret or a changed setting applies to them at once."""
        self.config = config
        self.key = config.key
        self.credentials = Credentials(config.key, config.secret)
        self.limits = limits_of(config)

    @property
    def enabled(self) -> bool:
        return self.config.enabled


def limits_of(config: AppConfig) -> EventLimits:
    return EventLimits(
        max_event_payload_bytes=config.max_event_payload_kb * 1024,
        max_event_name_length=config.max_event_name_length,
        max_channel_name_length=config.max_channel_name_length,
        max_event_channels=config.max_event_channels,
        max_batch_size=config.max_batch_size,
    )


class AppRegistry:
    def __init__(self, configs: Iterable[AppConfig]) -> None:
        self._by_id: dict[str, App] = {}
        self._by_key: dict[str, App] = {}
        self.replace(configs)

    def replace(self, configs: Iterable[AppConfig]) -> list[str]:
        """Swap in a new set of apps at once (an app store was read again); an existing
        app is updated in place. Returns the ids whose configuration changed."""
        by_id: dict[str, App] = {}
        by_key: dict[str, App] = {}
        changed: list[str] = []
        for config in configs:
            app = self._by_id.get(config.id)
            if app is None:
                app = App(config)
            elif app.config != config:
                app.update(config)
                changed.append(app.id)
            by_id[app.id] = app
            by_key[app.key] = app
        self._by_id, self._by_key = by_id, by_key
        return changed

    def by_id(self, app_id: str) -> App | None:
        return self._by_id.get(app_id)

    def by_key(self, key: str) -> App | None:
        return self._by_key.get(key)

    def __iter__(self) -> Iterator[App]:
        return iter(self._by_id.values())
