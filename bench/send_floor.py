"""The kernel's price of one small send: the floor of any fan-out on this machine.

    python -m bench.send_floor [--connections 10000] [--size 300]

A server process on the server core accepts N loopback TCP connections from a client process
on the load core (which reads and drops everything), then writes one `size`-byte WebSocket
frame to every connection, a dozen times: through uvloop transports (`transport.write`, what
aiohttp and the picows ceiling use) and with a bare `os.write` per socket. It prints µs per
write, median of the rounds. S3's 10,000-member flush cannot beat N × this figure; compare it
with the flush durations and the picows ceiling of the same session.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
from multiprocessing.connection import Connection

from bench.common import cpu_plan, pin_self, raise_nofile

ROUNDS = 12


class _Keep(asyncio.Protocol):
    def __init__(self, transports: list[asyncio.Transport]) -> None:
        self.transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transports.append(transport)  # type: ignore[arg-type]


class _Drop(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        pass


async def _serve(n: int, size: int, ready: Connection) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []
    server = await loop.create_server(lambda: _Keep(transports), "127.0.0.1", 0, backlog=4096)
    ready.send(server.sockets[0].getsockname()[1])
    while len(transports) < n:
        await asyncio.sleep(0.05)
    frame = b"\x81\x7e" + size.to_bytes(2, "big") + b"x" * size
    fds = [t.get_extra_info("socket").fileno() for t in transports]
    per_write: dict[str, list[float]] = {"transport.write": [], "os.write": []}
    for _ in range(ROUNDS):
        await asyncio.sleep(0.3)  # the client reads everything meanwhile
        t0 = time.perf_counter()
        for t in transports:
            t.write(frame)
        per_write["transport.write"].append((time.perf_counter() - t0) * 1e6 / n)
        await asyncio.sleep(0.3)
        t0 = time.perf_counter()
        for fd in fds:
            os.write(fd, frame)
        per_write["os.write"].append((time.perf_counter() - t0) * 1e6 / n)
    server.close()
    return {k: statistics.median(v) for k, v in per_write.items()}


def _server_main(n: int, size: int, cpus: set[int] | None, ready: Connection) -> None:
    import uvloop

    pin_self(cpus)
    raise_nofile()
    ready.send(uvloop.run(_serve(n, size, ready)))


async def _connect(port: int, n: int) -> list[asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    out: list[asyncio.BaseTransport] = []
    for i in range(0, n, 500):
        made = await asyncio.gather(
            *(loop.create_connection(_Drop, "127.0.0.1", port) for _ in range(min(500, n - i)))
        )
        out.extend(t for t, _ in made)
    return out


def _client_main(port: int, n: int, cpus: set[int] | None, done: Connection) -> None:
    import uvloop

    pin_self(cpus)
    raise_nofile()

    async def run() -> None:
        transports = await _connect(port, n)
        await asyncio.get_running_loop().run_in_executor(None, done.recv)
        for t in transports:
            t.close()

    uvloop.run(run())


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.send_floor", description=__doc__)
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--size", type=int, default=300, help="payload bytes of the frame")
    args = p.parse_args()
    server_cpus, load_cpus = cpu_plan()
    ctx = multiprocessing.get_context("spawn")
    server_end, here = ctx.Pipe()
    stop_client, client_end = ctx.Pipe()
    server = ctx.Process(
        target=_server_main, args=(args.connections, args.size, server_cpus, server_end)
    )
    server.start()
    port = here.recv()
    client = ctx.Process(target=_client_main, args=(port, args.connections, load_cpus, client_end))
    client.start()
    result = here.recv()
    stop_client.send(None)
    server.join()
    client.join()
    cores = (
        f"server on {sorted(server_cpus)}, client on {sorted(load_cpus)}"
        if server_cpus and load_cpus
        else "unpinned"
    )
    print(f"{args.connections} connections, {args.size} B frames, {cores}")
    print(f"µs per write, median of {ROUNDS} rounds:")
    for name, us in result.items():
        print(f"  {name:16} {us:6.2f} µs  ({us * args.connections / 1000:.0f} ms for all)")


if __name__ == "__main__":
    main()
