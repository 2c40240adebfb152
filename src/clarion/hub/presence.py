"""Presence members of one channel: per user_id, with a count of that user's sockets.

``member_added`` is due only when a user's first socket joins and ``member_removed``
only when the last one leaves; ``user_count`` is the number of distinct users.
"""

from __future__ import annotations

from typing import Any

from clarion.protocol.messages import json_string


class PresenceMembers:
    __slots__ = ("_users",)

    def __init__(self) -> None:
        # user_id -> [user_info, number of this user's sockets in the channel]
        self._users: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._users

    def add(self, user_id: str, user_info: Any) -> bool:
        """Count one more socket of ``user_id``; True when it is the user's first."""
        entry = self._users.get(user_id)
        if entry is None:
            # The first user_info stored wins for a user with several sockets.
            self._users[user_id] = [user_info, 1]
            return True
        entry[1] += 1
        return False

    def remove(self, user_id: str) -> bool:
        """Count one socket of ``user_id`` less; True when it was the user's last."""
        entry = self._users.get(user_id)
        if entry is None:
            return False
        entry[1] -= 1
        if entry[1] <= 0:
            del self._users[user_id]
            return True
        return False

    def user_ids(self) -> list[str]:
        return list(self._users)

    def info(self, user_id: str) -> Any:
        entry = self._users.get(user_id)
        return None if entry is None else entry[0]

    def subscription_data(self) -> str:
        """The ``data`` string of a presence ``subscription_succeeded`` (spec §8)."""
        return json_string(
            {
                "presence": {
                    "ids": list(self._users),
                    "hash": {user_id: entry[0] for user_id, entry in self._users.items()},
                    "count": len(self._users),
                }
            }
        )
