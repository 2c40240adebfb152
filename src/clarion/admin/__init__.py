"""The built-in admin console: event taps on the data plane, a small HTTP server on its
own port, and the page it serves (see docs/admin.md)."""
