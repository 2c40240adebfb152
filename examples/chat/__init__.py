"""The example chat: a FastAPI backend and a pusher-js page, against Clarion.

The backend (:mod:`examples.chat.app`) owns the sign-in (a name in a signed session
cookie), the channel authorization for the presence room and each user's private channel
(with the official ``pusher`` SDK), the messages (POSTed here, triggered through Clarion's
HTTP API) and the webhook endpoint (signature checked, members logged).
:mod:`examples.chat.__main__` starts it, with an embedded Clarion unless told of another.
The page is ``static/``; see README.md beside this file.
"""
