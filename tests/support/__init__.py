"""What every test suite shares: starting servers, building their configs, waiting, raw
WebSocket/HTTP, the pusher-js driver, the official SDKs, a webhook receiver, Redis.

Each suite imports from here and never from another suite's folder.
"""
