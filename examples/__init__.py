"""Example applications built on Clarion (``python -m examples.chat``)."""
