"""The aligner's window timing, per-modality states, text handling and memory bound."""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest
from pydantic import ValidationError

from stream_mmsa.events import Word
from stream_mmsa.features.base import FeatureUpdate, FeatureVector
from stream_mmsa.windowing import (
    Aligner,
    Window,
    WindowClock,
    WindowConfig,
    window_count,
    window_end,
)

DIMS = {"text": 4, "audio": 3, "vision": 2}


def frames(modality: str, start: float, end: float, step: float) -> list[FeatureVector]:
    """Point-in-time vectors every `step` s in [start, end); value = time, for checking order."""
    n = round((end - start) / step)
    times = [start + i * step for i in range(n)]
    return [FeatureVector(t, t, np.full(DIMS[modality], t, dtype=np.float64)) for t in times]


def feed(aligner: Aligner, modality: str, until: float, step: float = 0.1, **kwargs) -> None:
    aligner.update(
        FeatureUpdate(
            modality, vectors=frames(modality, 0.0, until, step), watermark=until, **kwargs
        )
    )


@pytest.mark.parametrize(
    ("duration", "hop", "expected"),
    [
        (10.0, 0.5, 20),
        (10.2, 0.5, 20),
        (10.49, 0.5, 20),
        (10.5, 0.5, 21),
        (0.49, 0.5, 0),
        (0.5, 0.5, 1),
        (3.0, 0.1, 30),  # 3.0 / 0.1 == 29.999999999999996 in floats
        (0.0, 0.5, 0),
    ],
)
def test_window_count(duration: float, hop: float, expected: int) -> None:
    assert window_count(duration, hop) == expected
    if expected:  # floor((D - first_end) / hop) + 1 with the first window ending at hop
        assert expected == math.floor((duration - hop) / hop + 1e-9) + 1
        assert window_end(expected - 1, hop) <= duration + 1e-9 < window_end(expected, hop)


def test_watermark_clock_closes_exactly_the_windows_the_hop_implies() -> None:
    duration = 7.3
    cfg = WindowConfig()
    aligner = Aligner("s", cfg, sources=["audio", "vision"])

    async def produce() -> None:
        t = 0.0
        while t < duration:
            t = min(duration, t + 0.37)  # updates not aligned with the hop
            for m in ("audio", "vision"):
                aligner.update(FeatureUpdate(m, frames(m, t - 0.37, t, 0.01), watermark=t))
            await asyncio.sleep(0)
        aligner.finish(duration)

    async def main() -> list:
        producer = asyncio.create_task(produce())
        windows = [w async for w in WindowClock("watermark").windows(aligner)]
        await producer
        return windows

    windows = asyncio.run(asyncio.wait_for(main(), 10))
    assert len(windows) == window_count(duration, cfg.hop) == 14
    assert [w.index for w in windows] == list(range(14))
    assert [w.end for w in windows] == [(k + 1) * 0.5 for k in range(14)]
    assert windows[0].start == 0.0 and windows[7].start == 0.0 and windows[8].start == 0.5
    # Watermark mode waits for the extractors, so every window is complete.
    assert all(w.states["audio"] == "present" for w in windows)
    assert all(w.states["text"] == "missing" for w in windows)


def test_realtime_clock_closes_early_when_ready_and_at_the_deadline_when_late() -> None:
    cfg = WindowConfig(hop=0.05, length=0.2, deadline=0.3, ready_within=0)

    async def main() -> tuple[list, list[float]]:
        aligner = Aligner("s", cfg, sources=["audio"])
        aligner.update(FeatureUpdate("audio", frames("audio", 0, 0.1, 0.01), watermark=0.1))
        windows, closed = [], []
        async for w in WindowClock("realtime").windows(aligner):
            windows.append(w)
            closed.append(time.monotonic())
            if len(windows) == 3:
                aligner.finish(0.15)
        return windows, closed

    windows, closed = asyncio.run(asyncio.wait_for(main(), 10))
    assert [w.end for w in windows] == [0.05, 0.1, 0.15]
    for w, at in zip(windows, closed, strict=True):
        assert w.deadline == pytest.approx(w.wall_end + cfg.deadline)
        assert at >= w.wall_end - 1e-3  # never before the window's end on the wall clock
    # Windows 0 and 1 were processed already: released long before their deadline.
    assert closed[0] - windows[0].wall_end < 0.2
    assert closed[1] - windows[1].wall_end < 0.2
    assert windows[1].states["audio"] == "present"
    # Window 2 waited for audio until its deadline, then went out without it.
    assert closed[2] >= windows[2].deadline - 1e-3
    assert windows[2].states["audio"] == "partial"


@pytest.mark.parametrize(("processed", "waits"), [(0.95, False), (0.85, True)])
def test_realtime_clock_does_not_wait_for_the_step_that_straddles_the_end(
    processed: float, waits: bool
) -> None:
    """Features within ready_within of the end count as caught up; further behind (and not
    hopeless) the window waits for them until its deadline."""
    cfg = WindowConfig(hop=1.0, length=1.0, deadline=0.3, ready_within=0.1)

    async def main() -> tuple[Window, float]:
        aligner = Aligner("s", cfg, sources=["audio"])
        update = FeatureUpdate("audio", frames("audio", 0, processed, 0.05), watermark=processed)
        aligner.update(update)
        async for window in WindowClock("realtime").windows(aligner):
            return window, time.monotonic()
        raise AssertionError("no window")

    window, closed = asyncio.run(asyncio.wait_for(main(), 10))
    assert window.end == 1.0
    if waits:  # and goes out without the last 0.15 s
        assert closed >= window.deadline - 1e-3
        assert window.states["audio"] == "partial"
    else:  # the last 0.05 s will be in the next window
        assert closed - window.wall_end < 0.15
        assert window.states["audio"] == "present"


def test_clock_stops_when_input_ends_before_the_first_window() -> None:
    aligner = Aligner("s", sources=["audio"])
    aligner.finish(0.3)

    async def main() -> list:
        return [w async for w in WindowClock("watermark").windows(aligner)]

    assert asyncio.run(asyncio.wait_for(main(), 5)) == []


def test_no_source_is_missing() -> None:
    aligner = Aligner("s", sources=["audio"])
    feed(aligner, "audio", 4.0)
    w = aligner.close(4.0)
    assert (w.states["vision"], w.reasons["vision"]) == ("missing", "no source")
    assert (w.states["text"], w.reasons["text"]) == ("missing", "no source")
    assert w.features["vision"] is None
    assert w.states["audio"] == "present"
    assert w.features["audio"].shape == (40, 3) and w.features["audio"].dtype == np.float32
    assert np.all(np.diff(w.features["audio"][:, 0]) > 0)  # time order


def test_absent_stretch_no_face_is_missing_with_reason() -> None:
    aligner = Aligner("s", sources=["vision"])
    aligner.update(
        FeatureUpdate(
            "vision",
            frames("vision", 0.0, 0.2, 0.1),
            watermark=4.0,
            absent=[(0.2, 2.0, "no face"), (2.0, 4.0, "no face")],
        )
    )
    w = aligner.close(4.0)
    assert (w.states["vision"], w.reasons["vision"]) == ("missing", "no face")
    assert w.features["vision"].shape == (2, 2)  # what there was is still handed over


def test_extras_travel_with_their_vectors_but_not_to_the_model() -> None:
    aligner = Aligner("s", sources=["vision", "audio"])
    faces = [FeatureVector(t, t, np.full(2, t), extra=np.full(7, t)) for t in (1.0, 3.0, 5.0)]
    aligner.update(FeatureUpdate("vision", faces, watermark=6.0))
    feed(aligner, "audio", 6.0)
    w = aligner.close(4.0)
    assert w.extras["vision"].tolist() == [[1.0] * 7, [3.0] * 7]  # the window's frames only
    assert w.extras["vision"].dtype == np.float32
    assert w.extras["audio"] is None and w.extras["text"] is None
    assert w.to_batch(DIMS).features["vision"].shape == (1, 2, 2)


def test_lagging_watermark_is_late() -> None:
    aligner = Aligner("s", sources=["text", "audio"])
    feed(aligner, "audio", 8.0)
    aligner.update(FeatureUpdate("text", frames("text", 0.0, 5.5, 0.5), watermark=5.5))
    w = aligner.close(8.0)  # window [4, 8): text processed only to 5.5 < 4 + 2
    assert w.states["text"] == "late"
    assert "5.50" in w.reasons["text"]
    assert aligner.watermark("text") == 5.5 and aligner.watermark("vision") == -math.inf
    assert w.states["audio"] == "present"


def test_partial_when_not_fully_processed_or_partly_absent() -> None:
    aligner = Aligner("s", sources=["text", "vision", "audio"])
    aligner.update(FeatureUpdate("text", frames("text", 0.0, 3.0, 0.5), watermark=3.0))
    feed(aligner, "vision", 4.0, absent=[(1.0, 3.0, "no face")])
    feed(aligner, "audio", 4.0, absent=[(1.0, 1.2, "dropped")])  # 5 %: still present
    w = aligner.close(4.0)
    assert w.states["text"] == "partial" and "3.00" in w.reasons["text"]
    assert (w.states["vision"], w.reasons["vision"]) == ("partial", "no face")
    assert w.states["audio"] == "present"


def test_processed_but_empty_is_missing() -> None:
    aligner = Aligner("s", sources=["text"])
    aligner.update(FeatureUpdate("text", [], watermark=4.0))
    w = aligner.close(4.0)
    assert (w.states["text"], w.reasons["text"]) == ("missing", "no words")


def test_text_tokens_and_transcript() -> None:
    aligner = Aligner("s", sources=["text"])
    words = [
        Word(word=" i", start=0.2, end=0.3, prob=0.9),
        Word(word=" really", start=0.3, end=0.7, prob=0.9),
        Word(word=" loved", start=3.8, end=4.4, prob=0.9),  # midpoint 4.1: next window
        Word(word=" it", start=4.5, end=4.6, prob=0.9),
    ]
    tokens = []
    for i, w in enumerate(words):  # two token states per word, stamped with the word's times
        tokens += [FeatureVector(w.start, w.end, np.full(4, i, np.float32))] * 2
    aligner.update(FeatureUpdate("text", list(reversed(tokens)), watermark=5.0))  # any order
    aligner.add_words(reversed(words))
    first = aligner.close(4.0)
    assert first.transcript == "i really"
    assert first.features["text"][:, 0].tolist() == [0, 0, 1, 1]
    assert first.states["text"] == "present"
    second = aligner.close(4.5)
    assert second.transcript == "loved"  # after a 3.1 s pause: a new utterance
    assert second.features["text"][:, 0].tolist() == [1, 1, 2, 2]  # tokens: its own only


def test_window_text_follows_the_utterance_from_its_start() -> None:
    cfg = WindowConfig(utterance_gap=0.8, text_context=20.0, text_max_words=5, sentence_min_words=0)
    aligner = Aligner("s", cfg, sources=["text"])
    spoken = [("what", 0.0), ("a", 0.3), ("waste.", 0.6), ("i", 1.2), ("am", 1.5), ("so", 1.8)]
    spoken += [("sad", 2.1), ("now", 6.0), ("then", 6.3)]  # a 3.5 s pause before "now"
    aligner.add_words(Word(word=w, start=t, end=t + 0.2, prob=0.9) for w, t in spoken)
    aligner.update(FeatureUpdate("text", watermark=30.0))
    assert aligner.close(1.0).transcript == "what a waste."
    assert aligner.close(2.0).transcript == "i am so"  # a new sentence after "waste."
    assert aligner.close(5.5).transcript == "i am so sad"  # nothing new, but "sad" is inside
    assert aligner.close(6.5).transcript == "now then"  # after the pause: a new utterance
    assert aligner.close(12.0).transcript == ""  # no words of its own: no text
    long = Aligner("s", cfg, sources=["text"])
    long.add_words(Word(word=f"w{k}", start=0.3 * k, end=0.3 * k + 0.2, prob=0.9) for k in range(9))
    assert long.close(3.0).transcript == "w4 w5 w6 w7 w8"  # the last text_max_words


def test_a_short_new_sentence_is_read_with_the_one_before() -> None:
    """Live, "This was terrible." was final only after its windows had gone out late, and
    the next windows held "I..." and "I hated every" alone, cut at whisper's full stop."""
    cfg = WindowConfig(utterance_gap=0.8, text_context=20.0, sentence_min_words=4)
    aligner = Aligner("s", cfg, sources=["text"])
    spoken = ["this", "was", "terrible.", "i", "hated", "every", "boring", "minute."]
    aligner.add_words(
        Word(word=w, start=0.3 * k, end=0.3 * k + 0.2, prob=0.9) for k, w in enumerate(spoken)
    )
    aligner.update(FeatureUpdate("text", watermark=30.0))
    assert aligner.close(1.5).transcript == "this was terrible. i hated"  # 2 words: too few
    assert aligner.close(1.8).transcript == "this was terrible. i hated every"  # 3: too few
    assert aligner.close(2.1).transcript == "i hated every boring"  # 4: a sentence of its own


def test_interim_words_join_the_window_and_are_counted() -> None:
    def heard(*spoken: tuple[str, float]) -> list[Word]:
        return [Word(word=w, start=t, end=t + 0.2, prob=0.9) for w, t in spoken]

    aligner = Aligner("s", sources=["text"])
    aligner.update(FeatureUpdate("text", watermark=30.0))
    aligner.add_words(heard(("i", 0.2), ("loved", 0.5)), interim=heard(("it", 0.8), ("so", 1.1)))
    first = aligner.close(1.0)
    assert (first.transcript, first.interim_words) == ("i loved it", 1)  # "so" ends after 1 s
    # The recogniser changed its mind and committed "it": the new interim replaces the old.
    aligner.add_words(heard(("it", 0.8)), interim=heard(("much", 1.1)))
    second = aligner.close(1.5)
    assert (second.transcript, second.interim_words) == ("i loved it much", 1)
    aligner.add_words(heard(("much", 1.1)))  # no interim left
    third = aligner.close(2.0)
    assert (third.transcript, third.interim_words) == ("i loved it much", 0)


def test_camera_off_then_on() -> None:
    aligner = Aligner("s", sources=["vision"])
    feed(aligner, "vision", 2.0)
    aligner.detach("vision", 2.0, "camera off")
    w = aligner.close(4.0)
    assert (w.states["vision"], w.reasons["vision"]) == ("partial", "camera off")
    w = aligner.close(8.0)
    assert (w.states["vision"], w.reasons["vision"]) == ("missing", "camera off")
    aligner.attach("vision", 8.0)
    aligner.update(FeatureUpdate("vision", frames("vision", 8.0, 12.0, 0.1), watermark=12.0))
    w = aligner.close(12.0)
    assert w.states["vision"] == "present"


def test_memory_stays_bounded() -> None:
    cfg = WindowConfig(max_items=100)
    aligner = Aligner("s", cfg, sources=["audio"])
    for k in range(200):
        t = k * 0.5
        aligner.update(FeatureUpdate("audio", frames("audio", t, t + 0.5, 0.01), watermark=t + 0.5))
        aligner.add_words([Word(word="w", start=t, end=t + 0.1, prob=1.0)])
        aligner.close(t + 0.5)
    held = aligner._timelines["audio"]
    assert len(held.vectors) <= cfg.max_items
    assert len(aligner._words) <= 49  # a window plus its text context: (4 + 20) s / 0.5 s
    assert aligner.dropped["audio"] > 0  # the cap of 100 < 400 vectors per window, counted
    late = FeatureVector(1.0, 1.0, np.zeros(3))
    aligner.update(FeatureUpdate("audio", [late], watermark=100.0))
    assert all(v is not late for v in held.vectors)


def test_to_batch_masks_late_and_missing() -> None:
    aligner = Aligner("s", sources=["audio", "text"])
    feed(aligner, "audio", 4.0)
    aligner.update(FeatureUpdate("text", frames("text", 0.0, 1.0, 0.5), watermark=1.0))
    batch = aligner.close(4.0).to_batch(DIMS)
    assert batch.present.tolist() == [[False, True, False]]  # text late, vision no source
    assert batch.features["audio"].shape == (1, 40, 3) and bool(batch.masks["audio"].all())
    assert batch.features["text"].shape == (1, 1, 4) and not bool(batch.masks["text"].any())
    assert batch.ids == ["s:7"]


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError):
        WindowConfig(hop=1.0, length=0.5)
    with pytest.raises(ValidationError):
        WindowConfig(typo=1)
    with pytest.raises(ValueError, match="unknown modality"):
        Aligner("s", sources=["smell"])
