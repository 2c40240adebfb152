"""Allow ``python -m clarion``."""

from clarion.cli import main

raise SystemExit(main())
