"""Where the repository and the tests' Node.js tools are on disk."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# pusher-js, Laravel Echo and the Node ``pusher`` SDK (``make setup`` installs them).
JS_DIR = ROOT / "tests" / "js"
NODE_MODULES = JS_DIR / "node_modules"
