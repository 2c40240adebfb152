"""``clarion serve --workers N``: N processes share the port (SO_REUSEPORT) and form one
cluster through Redis, under a parent that only supervises them."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time

import msgspec

from clarion import logs
from clarion.config import Settings
from clarion.server.serve import print_listening, run

log = logging.getLogger("clarion.server")


def _worker(settings: Settings) -> None:
    logs.setup(settings.server.log_level, worker=True)
    run(settings, announce=False, reuse_port=True)


def run_workers(settings: Settings, workers: int) -> None:
    """N processes share the port (SO_REUSEPORT) and form one cluster through Redis.

    The parent only supervises: a worker that dies is started again, and the cluster
    cleans up after the dead one as after any dead node (its lease runs out).
    """
    server = settings.server
    # Hold the port (SO_REUSEPORT, not listening) so that port 0 resolves once for all.
    holder = socket.socket(socket.AF_INET6 if ":" in server.host else socket.AF_INET)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((server.host, server.port))
    port = holder.getsockname()[1]
    settings = msgspec.structs.replace(settings, server=msgspec.structs.replace(server, port=port))
    context = multiprocessing.get_context("spawn")
    children: list[multiprocessing.process.BaseProcess] = []

    def start_worker(index: int) -> multiprocessing.process.BaseProcess:
        worker_settings = settings
        if settings.metrics.port:
            metrics_config = msgspec.structs.replace(
                settings.metrics, port=settings.metrics.port + index
            )
            worker_settings = msgspec.structs.replace(settings, metrics=metrics_config)
        child = context.Process(target=_worker, args=(worker_settings,), daemon=False)
        child.start()
        return child

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children.extend(start_worker(index) for index in range(workers))
    _wait_until_up(server.host, port)
    print(f"Clarion: {workers} workers sharing the port", flush=True)
    print_listening(server.host, port, settings)
    while True:
        for index, child in enumerate(children):
            child.join(timeout=0.2)
            if child.is_alive() or stopping:
                continue
            log.error("worker %s exited with %s; starting a new one", child.pid, child.exitcode)
            children[index] = start_worker(index)
        if stopping:
            for child in children:
                child.join(timeout=15)
                if child.is_alive():
                    child.kill()
            holder.close()
            return


def _wait_until_up(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1) as probe:
                probe.sendall(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if probe.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
