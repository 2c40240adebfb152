"""Signed-in sockets of one app on this node, and which local sockets watch which users.

Whether a user is online is cluster-wide and lives in the ChannelState; this is only
what the node needs to reach its own sockets: a user's sockets (terminate) and a watched
user's local watchers (watchlist events).
"""

from __future__ import annotations

from clarion.hub.fanout import Subscriber


class Users:
    __slots__ = ("_sockets", "_watchers", "_watching")

    def __init__(self) -> None:
        self._sockets: dict[str, set[Subscriber]] = {}
        # watched user_id -> local sockets whose watchlist names that user
        self._watchers: dict[str, set[Subscriber]] = {}
        # socket -> the user ids it watches
        self._watching: dict[Subscriber, list[str]] = {}

    def sockets(self, user_id: str) -> list[Subscriber]:
        return list(self._sockets.get(user_id, ()))

    def watchers(self, user_id: str) -> list[Subscriber]:
        return list(self._watchers.get(user_id, ()))

    def add(self, sub: Subscriber, user_id: str) -> bool:
        """Record a signed-in socket; True when it is the user's first on this node."""
        sockets = self._sockets.get(user_id)
        if sockets is None:
            self._sockets[user_id] = {sub}
            return True
        sockets.add(sub)
        return False

    def remove(self, sub: Subscriber, user_id: str) -> bool:
        """Forget a signed-in socket; True when it was the user's last on this node."""
        sockets = self._sockets.get(user_id)
        if sockets is None or sub not in sockets:
            return False
        sockets.discard(sub)
        if sockets:
            return False
        del self._sockets[user_id]
        return True

    def watch(self, sub: Subscriber, watchlist: list[str]) -> list[str]:
        """Register ``sub``'s watchlist; return the users that got their first local watcher."""
        if not watchlist:
            return []
        self._watching[sub] = watchlist
        first = []
        for watched in watchlist:
            watchers = self._watchers.get(watched)
            if watchers is None:
                self._watchers[watched] = {sub}
                first.append(watched)
            else:
                watchers.add(sub)
        return first

    def unwatch(self, sub: Subscriber) -> list[str]:
        """Drop ``sub``'s watchlist; return the users that lost their last local watcher."""
        last = []
        for watched in self._watching.pop(sub, ()):
            watchers = self._watchers.get(watched)
            if watchers is not None:
                watchers.discard(sub)
                if not watchers:
                    del self._watchers[watched]
                    last.append(watched)
        return last
