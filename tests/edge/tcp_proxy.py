"""A TCP proxy between the agent and the broker that a test controls: pass, cut, or half-open.

``cut()`` resets every connection and refuses new ones (a link that is down and says so);
``blackhole()`` keeps connections open and accepts new ones but silently drops every byte
both ways (a half-open link: the agent only finds out through its own timeouts); ``heal()``
passes traffic again (connections that were blackholed stay dead, as after a real outage).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

Mode = Literal["pass", "cut", "blackhole"]


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode: Mode = "pass"
        self.port = 0
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._doomed: set[asyncio.StreamWriter] = set()  # blackholed: never pass bytes again
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self.mode = "cut"
        for writer in list(self._writers):
            writer.transport.abort()

    def blackhole(self) -> None:
        self.mode = "blackhole"
        self._doomed.update(self._writers)

    def heal(self) -> None:
        self.mode = "pass"

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            client_writer.transport.abort()
            return
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer, up_writer)
        self._writers.update(pair)
        if self.mode == "blackhole":
            self._doomed.update(pair)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._pipe(client_reader, up_writer, client_writer))
                tasks.create_task(self._pipe(up_reader, client_writer, up_writer))
        except* (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in pair:
                self._writers.discard(writer)
                self._doomed.discard(writer)
                writer.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: asyncio.StreamWriter
    ) -> None:
        while data := await reader.read(65536):
            if source in self._doomed or writer in self._doomed:
                continue  # half-open: the bytes vanish
            writer.write(data)
            await writer.drain()
        writer.transport.abort()  # one side closed: close the other, as the kernel would

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TcpProxy]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
