"""A simulated venue's quote feed as fast as a client reads it, for load tests.

``python -m schemahub_core.sandbox.firehose VENUE``.

The regular feed (``feeds.Feed``) computes each quote on the sandbox clock and sends it as one ASGI message:
right for behaviour tests, about a thousand messages a second. Here the work is done before the first byte:

- a dedicated process (its own interpreter, so the load generator does not share the receiver's GIL) serves one
  venue's WebSocket on its own port, with a plain asyncio server and RFC 6455 framing;
- the venue says what a connection subscribes to (``VenueApp.firehose_plan``: from the URL, or from the first
  message the client sends) and how its quote message looks with the update id left out
  (``VenueApp.firehose_template``, the venue's own wire format);
- ``RING`` quotes per market are taken from the simulated market and pre-serialised once; sending one message
  is then joining its template around the next update id (strictly increasing per market, so a receiver that
  drops repeats by id keeps every one), and many frames go out in one write.

Run ``python -m schemahub_core.sandbox.firehose VENUE`` (``--port``, ``--rate`` messages per second, 0 = as
fast as the client reads): it prints its port, serves until its stdin closes, then prints the messages sent.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import sys
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from schemahub_core.sandbox.feeds import FirehosePlan

RING = 512  # pre-serialised quotes per market
PER_WRITE = 1000  # frames per socket write


def frame(payload: bytes) -> bytes:
    """One unmasked server text frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def _unmask(data: bytes) -> tuple[bytes | None, int]:
    """The payload of the first complete client frame in ``data`` and its length in bytes (None: incomplete)."""
    if len(data) < 2:
        return None, 0
    n, head = data[1] & 0x7F, 2
    if n == 126:
        n, head = int.from_bytes(data[2:4], "big"), 4
    elif n == 127:
        n, head = int.from_bytes(data[2:10], "big"), 10
    if len(data) < head + 4 + n:
        return None, 0
    mask = data[head:head + 4]
    body = data[head + 4:head + 4 + n]
    return bytes(b ^ mask[i & 3] for i, b in enumerate(body)), head + 4 + n


class Firehose:
    """One venue's pre-serialised quote stream (see the module docstring)."""

    def __init__(self, app: Any, rate: float = 0.0) -> None:
        self.app, self.rate = app, rate
        self.sent = 0
        self.connections = 0
        self._rings: dict[tuple[str, str], list[tuple[bytes, bytes]]] = {}

    def ring(self, native: str, asset: str) -> list[tuple[bytes, bytes]]:
        """``RING`` consecutive quotes of the market before the sandbox clock, as templates around the id."""
        key = (native, asset)
        if key not in self._rings:
            now = self.app.sandbox.clock.now_ns()
            step = 50_000_000  # 50 ms apart: what the regular feed shows over ~25 s
            out = []
            for i in range(RING):
                before, after = self.app.firehose_template(native, self.app.feed.quote(asset, now - (RING - i) * step))
                out.append((before.encode(), after.encode()))
            self._rings[key] = out
        return self._rings[key]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            target = head.split(" ", 2)[1]
            fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in head.split("\r\n")[1:])}
            accept = base64.b64encode(hashlib.sha1((fields.get("sec-websocket-key", "") +
                                                    "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            url = urlsplit(target)
            subscribe = await self._first_message(reader)
            plan = self.app.firehose_plan(url.path, dict(parse_qsl(url.query)), subscribe)
            if plan is None or not plan.markets:
                writer.write(bytes((0x88, 2)) + (1008).to_bytes(2, "big"))
                return
            for message in plan.hello:
                writer.write(frame(message.encode()))
            self.connections += 1
            await self._pump(writer, plan)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client left
        finally:
            writer.close()

    async def _first_message(self, reader: asyncio.StreamReader, wait: float = 0.3) -> Any:
        """The client's first message (a subscription), as JSON, or None when it sends none in ``wait`` s."""
        data = b""
        try:
            async with asyncio.timeout(wait):
                while True:
                    payload, _ = _unmask(data)
                    if payload is not None:
                        return json.loads(payload)
                    chunk = await reader.read(65536)
                    if not chunk:
                        return None
                    data += chunk
        except (TimeoutError, ValueError):
            return None

    async def _pump(self, writer: asyncio.StreamWriter, plan: FirehosePlan) -> None:
        rings = [self.ring(native, asset) for native, asset in plan.markets]
        ids = [self.app.sandbox.clock.now_ns() // 1000] * len(rings)
        k, started = 0, time.monotonic()
        while True:
            parts = []
            for _ in range(PER_WRITE // len(rings) or 1):
                for m, ring in enumerate(rings):
                    ids[m] += 1
                    before, after = ring[k % RING]
                    parts.append(frame(b"%s%d%s" % (before, ids[m], after)) if after else frame(before))
                k += 1
            writer.write(b"".join(parts))
            self.sent += len(parts)
            await writer.drain()
            if self.rate:
                ahead = self.sent / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)


def serve(venue: str, port: int = 0, rate: float = 0.0) -> None:
    """Serve ``venue``'s firehose until stdin closes; print the port first and the messages sent last."""
    from schemahub_core.sandbox import Sandbox, SandboxConfig, venue_apps

    apps = venue_apps()
    if venue not in apps:
        raise SystemExit(f"error: no simulated venue {venue!r} (venues: {', '.join(apps)})")
    sandbox = Sandbox(SandboxConfig.fast(venues={venue: apps[venue]}))
    hose = Firehose(sandbox.venues[venue], rate)

    async def main() -> None:
        server = await asyncio.start_server(hose.handle, "127.0.0.1", port, limit=2**20)
        print(server.sockets[0].getsockname()[1], flush=True)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(done.set)), daemon=True).start()
        await done.wait()
        server.close()

    asyncio.run(main())
    print(hose.sent, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venue")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0)
    args = parser.parse_args()
    serve(args.venue, args.port, args.rate)
