"""Signalling keep-alive as the SDKs rely on it: rtcbox sends a WebSocket ping frame every 10 s,
and anything a client sends keeps its session (a pong frame, a LiveKit ping, any message). The
Go SDK (pion) sends no LiveKit ping and only answers ping frames; the JS and Python SDKs send
LiveKit pings. A client that sends nothing at all is closed after 20 s of silence
(src/livekit/keepalive.rs, whose unit tests check the timing with a virtual clock; here the
waits are only bounds).

Two clients: `websockets` (which answers ping frames by itself, like pion's gorilla/websocket)
and a bare-TCP WebSocket client that never answers a ping frame, which `websockets` cannot be
made to do."""

import asyncio
import base64
import logging
import os
import struct
import time
import urllib.parse

import websockets
from livekit.protocol import rtc as signal
from websockets.asyncio.client import connect as ws_connect

import lk_helpers as lk
from lk_helpers import API_KEY, API_SECRET
from test_signaling_errors import V0_QUERY, bearer, box, room, token  # noqa: F401 (fixtures)

# The server closes a silent client after 20 s; the bounds leave room for a loaded CI machine.
CLOSE_BOUND = 60.0
STAY_CONNECTED = 60.0
TIMED_OUT = "signaling timed out"

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class FrameLog(logging.Handler):
    """Collects the frames a `websockets` connection logs at debug level ("< PING ...")."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def count(self, prefix: str) -> int:
        return sum(1 for line in self.lines if line.startswith(prefix))


class RawSignal:
    """A v0 signalling connection over a bare TCP socket: the RFC 6455 handshake and framing,
    and nothing automatic: ping frames are counted, never answered."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.pings = 0
        self.messages: list[signal.SignalResponse] = []

    @classmethod
    async def join(cls, box, room: str, identity: str) -> "RawSignal":
        url = urllib.parse.urlsplit(box.ws_url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        key = base64.b64encode(os.urandom(16)).decode()
        headers = {
            "Host": url.netloc, "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13",
            **bearer(token(room, identity)),
        }
        request = f"GET /rtc?{urllib.parse.urlencode(V0_QUERY)} HTTP/1.1\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        writer.write(request.encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), lk.WAIT)
        assert head.startswith(b"HTTP/1.1 101"), head
        raw = cls(reader, writer)
        first = await asyncio.wait_for(raw.message(), lk.WAIT)
        assert first is not None and first.WhichOneof("message") == "join", first
        assert first.join.participant.identity == identity
        return raw

    async def frame(self) -> tuple[int, bytes] | None:
        """The next frame from the server, or None once the connection is closed."""
        try:
            b0, b1 = await self.reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            assert not b1 & 0x80, "a server frame must not be masked"
            return b0 & 0x0F, await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def message(self) -> signal.SignalResponse | None:
        """The next SignalResponse, counting (and ignoring) ping frames; None once closed."""
        while True:
            got = await self.frame()
            if got is None:
                return None
            opcode, payload = got
            if opcode == OP_PING:
                self.pings += 1
            elif opcode == OP_CLOSE:
                return None
            elif opcode == OP_BINARY:
                response = signal.SignalResponse.FromString(payload)
                self.messages.append(response)
                return response

    async def send(self, request: signal.SignalRequest) -> None:
        payload, mask = request.SerializeToString(), os.urandom(4)
        assert len(payload) < 126
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x80 | OP_BINARY, 0x80 | len(payload)]) + mask + masked)
        await self.writer.drain()

    async def until_closed(self) -> None:
        while await self.message() is not None:
            pass

    def close(self) -> None:
        self.writer.close()


def timeouts_logged(box, identity: str) -> list[str]:
    return [line for line in box.log_text().splitlines()
            if TIMED_OUT in line and identity in line]


def test_a_client_that_only_answers_ping_frames_stays_connected(box, room):
    """Like the Go SDK: no LiveKit ping ever, only the pong frames `websockets` sends by itself
    for rtcbox's ping frames. After 60 s (three times the silence limit) the session is open,
    rtcbox has pinged it several times, the participant is still in the room, and rtcbox still
    answers a signal request on it."""
    frames = FrameLog()
    log = logging.getLogger(f"keepalive.{room}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.addHandler(frames)

    async def scenario():
        ws = await joined_socket_with(box, room, "pong-only", log)
        lkapi = lk.server_api(box.url, API_KEY, API_SECRET)
        try:
            # Read whatever rtcbox sends, never sending a LiveKit ping, for the whole wait.
            start = time.monotonic()
            while (left := start + STAY_CONNECTED - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(ws.recv(), left)
                except TimeoutError:
                    break
                except websockets.exceptions.ConnectionClosed as e:
                    raise AssertionError(
                        f"rtcbox closed a client that answers its ping frames after "
                        f"{time.monotonic() - start:.0f} s ({e})") from None
            assert frames.count("< PING") >= 3, frames.lines
            assert frames.count("> PONG") >= 3, frames.lines
            assert "pong-only" in await lk.participant_identities(lkapi, room)
            # The session still works: a LiveKit ping gets its pong.
            await ws.send(signal.SignalRequest(
                ping_req=signal.Ping(timestamp=1234)).SerializeToString())
            while True:
                response = signal.SignalResponse.FromString(await asyncio.wait_for(ws.recv(), lk.WAIT))
                if response.WhichOneof("message") == "pong_resp":
                    assert response.pong_resp.last_ping_timestamp == 1234
                    break
        finally:
            await ws.close()
            await lkapi.aclose()

    lk.run(scenario(), box, timeout=STAY_CONNECTED + 90)
    assert not timeouts_logged(box, "pong-only"), timeouts_logged(box, "pong-only")


async def joined_socket_with(box, room: str, identity: str, logger):
    """`joined_socket` with no client-initiated pings (websockets sends one every 20 s by default,
    which would keep the session alive by itself) and a logger that sees every frame."""
    ws = await ws_connect(f"{box.ws_url}/rtc?{urllib.parse.urlencode(V0_QUERY)}",
                          additional_headers=bearer(token(room, identity)),
                          open_timeout=lk.WAIT, max_size=None, ping_interval=None, logger=logger)
    first = signal.SignalResponse.FromString(await asyncio.wait_for(ws.recv(), lk.WAIT))
    assert first.WhichOneof("message") == "join", first
    return ws


def test_a_silent_client_is_closed_and_livekit_pings_alone_keep_a_session(box, room):
    """Two bare clients that never answer a ping frame, joined together. `silent` sends
    nothing: rtcbox closes it (within a generous bound) and logs why. `pinger` sends a LiveKit
    ping every 5 s (the JoinResponse's ping_interval), as the JS and Python SDKs do: it gets its
    pongs and is still connected well after `silent` was dropped."""
    async def scenario():
        silent = await RawSignal.join(box, room, "quiet-client")
        pinger = await RawSignal.join(box, room, "pinging-client")
        assert pinger.messages[0].join.ping_interval == 5
        assert pinger.messages[0].join.ping_timeout == 15

        async def ping_every_5s():
            while True:
                await pinger.send(signal.SignalRequest(
                    ping_req=signal.Ping(timestamp=int(time.time() * 1000))))
                await asyncio.sleep(5)

        pinging = asyncio.create_task(ping_every_5s())
        reading = asyncio.create_task(pinger.until_closed())
        try:
            await asyncio.wait_for(silent.until_closed(), CLOSE_BOUND)
        except TimeoutError:
            raise AssertionError(f"a silent client was still connected after {CLOSE_BOUND:.0f} s") from None
        finally:
            silent.close()
        assert silent.pings >= 1, "rtcbox closed the silent client without pinging it first"
        # The pinger joined with the silent client and answered no ping frame either: only its
        # LiveKit pings keep it. Another silence limit and then some must pass without a close.
        await asyncio.sleep(25)
        assert not reading.done(), "rtcbox closed a client that sends LiveKit pings"
        pinging.cancel()
        reading.cancel()
        pinger.close()
        pongs = [m for m in pinger.messages if m.WhichOneof("message") == "pong_resp"]
        assert len(pongs) >= 5, [m.WhichOneof("message") for m in pinger.messages]
        assert pinger.pings >= 1

    lk.run(scenario(), box, timeout=CLOSE_BOUND + 90)
    lines = timeouts_logged(box, "quiet-client")
    assert lines and "not even a pong" in lines[0], box.log_text()[-3000:]
    assert not timeouts_logged(box, "pinging-client"), timeouts_logged(box, "pinging-client")
