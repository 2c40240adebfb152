"""An open admin console for the "admin" scenario: signs in with the token, reads one
app's live stream and counts its rows until SIGTERM, then prints them as JSON.

    python bench/admin_console.py PORT TOKEN APP_ID
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
import time


def main() -> int:
    port, token, app_id = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    counts = {"rows": 0, "dropped": 0}

    def done(*_: object) -> None:
        print(json.dumps({"console": counts}), flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, done)
    deadline = time.monotonic() + 10
    while True:  # the console opens just after the server says it listens
        try:
            sign_in = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            sign_in.request("GET", f"/admin/?token={token}")
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    reply = sign_in.getresponse()
    cookie = reply.getheader("Set-Cookie", "").split(";")[0]
    if reply.status != 303 or not cookie:
        print(f"sign-in failed: {reply.status}", file=sys.stderr)
        return 1
    stream = http.client.HTTPConnection("127.0.0.1", port)
    stream.request("GET", f"/admin/api/apps/{app_id}/stream", headers={"Cookie": cookie})
    reply = stream.getresponse()
    if reply.status != 200:
        print(f"stream refused: {reply.status}", file=sys.stderr)
        return 1
    print("watching", flush=True)
    dropped_next = False
    while True:
        line = reply.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            if dropped_next:
                counts["dropped"] += int(line[6:])
                dropped_next = False
            else:
                counts["rows"] += 1
        elif line.startswith(b"event: dropped"):
            dropped_next = True
    done()
    return 0


if __name__ == "__main__":
    sys.exit(main())
