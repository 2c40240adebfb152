"""Signed-in users of one app on this node: each user's sockets, and who watches whom.

"Online" means signed in with ``pusher:signin`` (spec §14): a user goes online with their
first signed-in socket and offline when the last one leaves, whatever the number of tabs.
"""

from __future__ import annotations

from clarion.hub.fanout import Subscriber, write_to_all
from clarion.protocol import messages


class Users:
    __slots__ = ("_sockets", "_watchers", "_watching")

    def __init__(self) -> None:
        self._sockets: dict[str, set[Subscriber]] = {}
        # watched user_id -> sockets whose watchlist names that user
        self._watchers: dict[str, set[Subscriber]] = {}
        # socket -> the user ids it watches
        self._watching: dict[Subscriber, list[str]] = {}

    def sockets(self, user_id: str) -> list[Subscriber]:
        return list(self._sockets.get(user_id, ()))

    def is_online(self, user_id: str) -> bool:
        return user_id in self._sockets

    def sign_in(
        self, sub: Subscriber, user_id: str, watchlist: list[str], write_limit: int
    ) -> tuple[bytes | None, bool]:
        """Record ``sub`` as signed in.

        Returns the watchlist frame for ``sub`` (or None) and whether the user just came
        online (this is their first signed-in socket).
        """
        sockets = self._sockets.get(user_id)
        first = sockets is None
        if sockets is None:
            sockets = self._sockets[user_id] = set()
        sockets.add(sub)
        if first:
            self._notify(user_id, "online", write_limit)
        if not watchlist:
            return None, first
        self._watching[sub] = watchlist
        for watched in watchlist:
            self._watchers.setdefault(watched, set()).add(sub)
        online = [u for u in watchlist if u in self._sockets]
        offline = [u for u in watchlist if u not in self._sockets]
        return messages.watchlist_events([("online", online), ("offline", offline)]), first

    def sign_out(self, sub: Subscriber, user_id: str, write_limit: int) -> bool:
        """Forget a signed-in socket; True when it was the user's last (they went offline)."""
        for watched in self._watching.pop(sub, ()):
            watchers = self._watchers.get(watched)
            if watchers is not None:
                watchers.discard(sub)
                if not watchers:
                    del self._watchers[watched]
        sockets = self._sockets.get(user_id)
        if sockets is None or sub not in sockets:
            return False
        sockets.discard(sub)
        if sockets:
            return False
        del self._sockets[user_id]
        self._notify(user_id, "offline", write_limit)
        return True

    def _notify(self, user_id: str, status: str, write_limit: int) -> None:
        watchers = self._watchers.get(user_id)
        if watchers:
            frame = messages.watchlist_events([(status, [user_id])])
            write_to_all(list(watchers), frame, None, write_limit)
