"""The rules of Pusher, sans-I/O: names, limits, message shapes, signatures, error codes.

Nothing in this package touches a socket or an event loop; every rule is a plain
function or data type that the servers call and the tests exercise directly.
"""
