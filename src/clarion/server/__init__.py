"""The I/O edge: the only package that touches sockets, httptools and websockets' parser."""
