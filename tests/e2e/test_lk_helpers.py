"""Self-checks of the media helpers the SFU tests judge rtcbox with (no rtcbox needed): the tone
generator and detector round-trip, the detector refuses what is not the tone, and the colour
check survives the SDK's own RGBA → I420 → RGBA conversion (what a subscriber's decoder path
does) but not a different colour."""

import numpy as np
import pytest
from livekit import rtc

import lk_helpers as lk


def one_second_of_tone(freq: float = lk.TONE_HZ) -> np.ndarray:
    """Built from consecutive 10 ms frames exactly as the publisher feeds them."""
    frames = [lk.tone_chunk(n * lk.FRAME_SAMPLES, freq=freq) for n in range(100)]
    return np.concatenate(frames)


def test_tone_round_trips_through_the_detector():
    samples = one_second_of_tone()
    assert samples.dtype == np.int16 and samples.size == lk.SAMPLE_RATE
    # Phase-continuous across frame boundaries: no step larger than the sine's own slope.
    max_step = lk.TONE_AMPLITUDE * 32767 * 2 * np.pi * lk.TONE_HZ / lk.SAMPLE_RATE
    assert np.abs(np.diff(samples.astype(np.int32))).max() <= max_step + 1
    dominant, share = lk.tone_analysis(samples)
    assert abs(dominant - lk.TONE_HZ) < 1.0
    assert share > 0.95
    lk.assert_is_tone(samples)


def test_detector_tolerates_codec_like_damage():
    """A quieter tone with noise, a harmonic and an odd length still reads as 440 Hz."""
    rng = np.random.default_rng(1)
    tone = one_second_of_tone()[:47000].astype(np.float64) * 0.5
    damaged = tone.copy()
    n = np.arange(damaged.size)
    damaged += 800 * np.sin(2 * np.pi * 880 * n / lk.SAMPLE_RATE)
    damaged += rng.normal(0, 300, damaged.size)
    samples = np.clip(damaged, -32768, 32767).astype(np.int16)
    lk.assert_is_tone(samples)


@pytest.mark.parametrize("make", [
    lambda: one_second_of_tone(1000.0),
    lambda: one_second_of_tone(455.0),
    lambda: np.zeros(lk.SAMPLE_RATE, dtype=np.int16),
    lambda: np.random.default_rng(2).normal(0, 6000, lk.SAMPLE_RATE).astype(np.int16),
], ids=["1000Hz", "455Hz", "silence", "noise"])
def test_detector_rejects_what_is_not_the_tone(make):
    with pytest.raises(AssertionError):
        lk.assert_is_tone(make())


def test_colour_survives_the_sdks_yuv_round_trip_and_other_colours_do_not():
    frame = rtc.VideoFrame(lk.VIDEO_WIDTH, lk.VIDEO_HEIGHT, rtc.VideoBufferType.RGBA, lk.solid_rgba())
    back = frame.convert(rtc.VideoBufferType.I420).convert(rtc.VideoBufferType.RGBA)
    assert (back.width, back.height) == (lk.VIDEO_WIDTH, lk.VIDEO_HEIGHT)
    pixel = lk.centre_pixel(back)
    assert lk.colour_close(pixel), pixel
    lk.assert_is_colour([pixel] * 3)

    for other in [(0, 0, 0), (128, 128, 128), (200, 40, 255), (255, 255, 255), (40, 255, 200)]:
        grey = rtc.VideoFrame(lk.VIDEO_WIDTH, lk.VIDEO_HEIGHT, rtc.VideoBufferType.RGBA,
                              lk.solid_rgba(other))
        pixel = lk.centre_pixel(grey.convert(rtc.VideoBufferType.I420).convert(rtc.VideoBufferType.RGBA))
        assert not lk.colour_close(pixel), (other, pixel)
        with pytest.raises(AssertionError):
            lk.assert_is_colour([pixel])


def test_centre_pixel_handles_padded_rows():
    width, height, stride = 5, 3, 32  # 20 bytes of pixels, 12 of padding per row
    rows = bytearray(stride * height)
    centre = (height // 2) * stride + (width // 2) * 4
    rows[centre:centre + 4] = bytes((*lk.COLOUR, 255))
    frame = rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, bytes(rows))
    assert lk.centre_pixel(frame) == lk.COLOUR
