"""The true peak is read only when it could matter: the margin that decides it is the meter's own.

EBU R128's true peak is the sound oversampled four times; ``Level.passes`` answers from the
sample peak when even the largest overshoot that oversampling can add keeps the levelled sound
under the limit, or when its samples alone pass it. These tests derive that overshoot from the
library in use and check the meter reaches it, so a libswresample with another filter fails
here, not in a mix.
"""

from __future__ import annotations

import array
import math
from fractions import Fraction

import av
import av.filter
from av.audio.frame import AudioFrame

from shotline.engine import sound

RATE = 48_000
LENGTH = 4096


def _frame(samples: list[float]) -> AudioFrame:
    frame = AudioFrame(format="flt", layout="mono", samples=len(samples))
    frame.sample_rate, frame.pts, frame.time_base = RATE, 0, Fraction(1, RATE)
    frame.planes[0].update(array.array("f", samples).tobytes())
    return frame


def _run(samples: list[float], name: str, args: str) -> list[AudioFrame]:
    graph = av.filter.Graph()
    head = graph.add_abuffer(sample_rate=RATE, format="flt", layout="mono",
                             time_base=Fraction(1, RATE))
    middle, sink = graph.add(name, args), graph.add("abuffersink")
    head.link_to(middle)
    middle.link_to(sink)
    graph.configure()
    graph.push(_frame(samples))
    graph.push(None)
    out = []
    while True:
        try:
            out.append(graph.pull())
        except (av.error.BlockingIOError, av.error.EOFError):
            return out  # type: ignore[return-value]


def _oversampler() -> list[float]:
    """The 4x oversampler's response (at 192 kHz) to one sample of 1.0 at 48 kHz."""
    impulse = [0.0] * LENGTH
    impulse[LENGTH // 2] = 1.0
    response = array.array("f")
    for frame in _run(impulse, "aresample", "192000"):
        response.frombytes(bytes(frame.planes[0])[: frame.samples * 4])
    return list(response)


def test_the_margin_covers_the_largest_overshoot_of_the_meters_oversampling() -> None:
    response = _oversampler()
    # Each output sample between two input samples is one phase of the filter; its worst
    # case is every input at full scale with the sign of its tap.
    sums = [sum(abs(t) for t in response[phase::4]) for phase in range(4)]
    assert abs(sums[0] - 1.0) < 1e-3  # the samples themselves pass through
    worst = 20 * math.log10(max(sums))
    assert 3.0 < worst <= sound.TRUE_PEAK_OVERSHOOT, worst

    # And the R128 meter reaches it: that sign pattern, at half scale, reads that much above
    # its sample peak (so ebur128 oversamples with this very filter, and the margin is tight).
    phase = sums.index(max(sums))
    centre = 8 * (LENGTH // 2) + phase
    signs = [0.0] + [math.copysign(0.5, response[centre - 4 * k])
                     if 0 <= centre - 4 * k < len(response) else 0.0 for k in range(1, LENGTH)]
    # The meter reports every 100 ms: a second of silence after the pattern lets it.
    read = [f.metadata for f in _run(signs + [0.0] * RATE, "ebur128",
                                     "peak=true+sample:metadata=1")]
    true, sample = (max(float(m.get(f"lavfi.r128.{k}", 0.0)) for m in read)
                    for k in ("true_peak", "sample_peak"))
    over = 20 * math.log10(true / sample)
    assert abs(over - worst) < 0.2, (over, worst)


def test_the_sample_peak_decides_unless_only_the_true_peak_can() -> None:
    limit = -1.5
    level = sound.Level(integrated=-30.0, peak=-20.0, silences=())
    # Raised 10 dB its samples peak at -10 dBFS: oversampling adds at most 7.5, under -1.5.
    assert level.passes(10.0, limit) is False
    assert level.passes(12.0, limit) is None  # -8 + 7.5 = -0.5: only the true peak can tell
    assert level.passes(19.0, limit) is True  # the samples themselves pass it
    assert sound.Level(integrated=None, peak=None, silences=()).passes(30.0, limit) is False
    # Right at the edge, the three decimals the meter prints are counted against it.
    edge = limit - 10 - sound.TRUE_PEAK_OVERSHOOT
    assert sound.Level(-30.0, edge, ()).passes(10.0, limit) is None
