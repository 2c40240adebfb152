"""The one door to other nodes: fan-out between nodes and the shared channel state.

:mod:`.interfaces` says what the rest of Clarion may ask of a cluster; :mod:`.memory`
answers it for a single process, and the :mod:`.redis` package for many nodes on Redis.
"""
