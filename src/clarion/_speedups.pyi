# The native accelerator's signatures (src/clarion/_speedups.c); what they do is in
# clarion/hub/fanout.py (_queue and _flush, the pure-Python twins).
from typing import Any

def queue(
    pending: dict[Any, list[bytes]], subscribers: dict[Any, Any], frame: bytes, exclude: str | None
) -> int: ...
def flush(pending: dict[Any, list[bytes]]) -> list[Any] | None: ...
