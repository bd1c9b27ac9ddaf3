#!/usr/bin/env python3
"""A loopback TCP proxy that adds a fixed delay to each direction: a
high-latency link between 127.0.0.1 and a local registry, where per-request
round trips cost what they cost over a WAN and parallelism pays.

    latency_proxy.py LISTEN_PORT UPSTREAM_HOST:PORT [--delay-ms 20]

Bytes read from one side are written to the other `delay` later, in order
(a pipe with a delay; the bandwidth is what the machine gives). At most
32 MiB per direction are in flight, like a large TCP window. Prints
"ready" on stdout once it listens. Runs until killed.
"""
import argparse
import asyncio
import sys

CHUNK = 256 << 10
IN_FLIGHT = 128  # chunks per direction


async def pump(reader, writer, delay):
    loop = asyncio.get_running_loop()
    q = asyncio.Queue(maxsize=IN_FLIGHT)

    async def deliver():
        try:
            while True:
                at, data = await q.get()
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.write_eof()
            except (OSError, RuntimeError):
                writer.close()

    task = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(CHUNK)
            await q.put((loop.time() + delay, data))
            if not data:
                break
    except (ConnectionError, OSError):
        await q.put((loop.time(), b""))
    await task


async def handle(client_r, client_w, upstream, delay):
    host, port = upstream
    try:
        up_r, up_w = await asyncio.open_connection(host, port)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pump(client_r, up_w, delay), pump(up_r, client_w, delay))
    for w in (client_w, up_w):
        w.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("listen_port", type=int)
    ap.add_argument("upstream")
    ap.add_argument("--delay-ms", type=float, default=20)
    a = ap.parse_args()
    host, port = a.upstream.rsplit(":", 1)
    delay = a.delay_ms / 1000
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, (host, int(port)), delay), "127.0.0.1", a.listen_port
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
