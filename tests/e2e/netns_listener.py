"""A LiveKit Python SDK subscriber for tests that run it in another network namespace: joins
`url` with `token`, subscribes to the first audio track and prints one JSON line a second on
stdout: its participant sid, the audible 10 ms frames heard so far and the connection state.
Runs until killed."""

import asyncio
import json
import sys

import numpy as np
from livekit import rtc

SAMPLE_RATE = 48000
SILENCE_RMS = 100.0


async def main(url: str, token: str) -> None:
    room = rtc.Room()
    state = {"audible": 0, "state": "connecting", "events": []}
    heard = asyncio.Event()

    async def listen(track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        async for event in stream:
            samples = np.frombuffer(bytes(event.frame.data), dtype=np.int16).astype(np.float64)
            if samples.size and float(np.sqrt(np.mean(samples ** 2))) > SILENCE_RMS:
                state["audible"] += 1
                heard.set()

    @room.on("track_subscribed")
    def on_track(track, _publication, _participant):
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            asyncio.ensure_future(listen(track))

    for name in ("reconnecting", "reconnected", "disconnected"):
        room.on(name, lambda *_, n=name: state["events"].append(n))

    await room.connect(url, token, rtc.RoomOptions(auto_subscribe=True))
    state["state"] = "connected"
    while True:
        line = {"sid": room.local_participant.sid, "audible": state["audible"],
                "connected": room.isconnected(), "events": state["events"]}
        print(json.dumps(line), flush=True)
        await asyncio.sleep(0.5)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
