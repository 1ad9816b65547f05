"""Where segments sit on the output timeline: the arithmetic that makes joins drift-free."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shotline.engine.seams import AAC_FRAME, FADE, layout, min_frames, samples_at, total_frames
from shotline.errors import MediaError

FPS = st.sampled_from([24, 25, 30, 48, 50, 60, 12, 15, 29, 23])


@st.composite
def cuts(draw: st.DrawFn) -> tuple[list[int], int, int]:
    fps = draw(FPS)
    crossfade = draw(st.sampled_from([0, 0, 1, 3, 12]))
    shortest = min_frames(fps, crossfade)
    frames = draw(st.lists(st.integers(shortest, shortest + 400), min_size=1, max_size=60))
    return frames, fps, crossfade


@given(cuts())
@settings(max_examples=300, deadline=None)
def test_pieces_fill_the_output_exactly_and_keep_each_clip_on_its_picture(
        case: tuple[list[int], int, int]) -> None:
    frames, fps, crossfade = case
    places = layout(frames, fps, crossfade)
    crossfade = crossfade if len(frames) > 1 else 0
    end = samples_at(total_frames(frames, crossfade), fps)
    # Every piece is its encoder delay plus its samples; only the first delay is hidden.
    assert sum(p.samples + AAC_FRAME for p in places) - AAC_FRAME == end
    at = -AAC_FRAME
    for k, p in enumerate(places):
        assert p.audio_at == at, "pieces are copied back to back"
        assert p.audio_at % AAC_FRAME == 0, "every piece starts on the AAC grid"
        if k + 1 < len(places):
            assert p.samples % AAC_FRAME == 0, "every piece but the last is whole AAC frames"
        # No drift: the clip's sample `offset` is heard exactly where its picture says.
        assert p.audio_at + AAC_FRAME == samples_at(p.start, fps) + p.offset
        assert p.offset >= 0 and p.samples > 0
        assert 0 <= p.fade_in <= p.samples and 0 <= p.fade_out <= p.samples
        at += p.samples + AAC_FRAME
    for k in range(1, len(places)):
        # The silent grid frame holds the cut (or the middle of the crossfade).
        window = (samples_at(places[k].start, fps), samples_at(places[k].start + crossfade, fps))
        middle = (window[0] + window[1]) // 2
        assert places[k].audio_at <= middle < places[k].audio_at + AAC_FRAME
        # ...and the sound of each clip stays inside that clip's own frames.
        assert places[k - 1].audio_at + AAC_FRAME + places[k - 1].samples <= window[1]


def test_video_starts_and_crossfade_frames() -> None:
    places = layout([44, 47, 40], 24, 6)
    assert [p.start for p in places] == [0, 38, 79]
    assert [p.shown for p in places] == [(0, 38), (6, 41), (6, 40)]
    assert total_frames([44, 47, 40], 6) == 119


def test_a_hard_cut_fades_briefly_on_both_sides_of_its_silent_frame() -> None:
    first, second = layout([48, 45], 24)
    assert first.audio_at == -AAC_FRAME and first.offset == 0 and first.fade_in == 0
    # 48 frames at 24 fps end at sample 96000, inside grid frame 93 (95232..96256).
    assert second.audio_at == 93 * AAC_FRAME and second.offset == 96256 - 96000
    assert first.fade_out == second.fade_in == FADE and second.fade_out == 0


def test_a_crossfade_dips_through_its_silent_frame() -> None:
    first, second = layout([44, 47], 24, 6)
    # The window is 6 frames from frame 38: samples 76000..88000, middle 82000.
    assert second.audio_at == 80 * AAC_FRAME
    assert first.fade_out == second.audio_at - 76000  # fades out over the window's first half
    assert second.fade_in == 88000 - (second.audio_at + AAC_FRAME)  # and in over the second


def test_segments_too_short_for_their_sound_are_refused() -> None:
    with pytest.raises(MediaError, match="segment 2 has 1 frames: with sound, every segment "
                                         "needs at least 2 frames at 24 fps"):
        layout([48, 1, 48], 24)
    assert len(layout([48, 1, 48], 24, audio=False)) == 3  # a silent output has no such limit
    assert len(layout([1], 24)) == 1  # nor does a single segment
