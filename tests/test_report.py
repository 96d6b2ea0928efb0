"""`stream-mmsa report`: the figures it computes, its inputs and errors, and a real run's page.

Fast tests build sessions from event objects; the slow one runs the engine on the sample,
reports it with the installed command and opens the page in headless Chromium.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import struct
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from chromium import SAMPLE, Chromium, chromium_binary, fake_devices
from typer.testing import CliRunner

from stream_mmsa.cli import app
from stream_mmsa.events import (
    AnyEvent,
    Expression,
    ExpressionLabel,
    ModalityReport,
    ModalityState,
    Sentiment,
    SentimentEvent,
    SessionEvent,
    StatusEvent,
    TranscriptEvent,
    Window,
    Word,
    sentiment_label,
)
from stream_mmsa.report import (
    ReportError,
    Run,
    band,
    build_report,
    draw_chart,
    read_session,
    summarize,
    transcript_lines,
    write_report,
)
from stream_mmsa.sinks.eventlog import EventLog

BINARY = Path(sys.executable).parent / "stream-mmsa"
PRESENT = {"text": "present", "audio": "present", "vision": "present"}


def window(
    end: float,
    score: float,
    *,
    confidence: float = 0.5,
    latency: float = 100.0,
    states: dict[str, ModalityState] | None = None,
    session: str = "s1",
) -> SentimentEvent:
    return SentimentEvent(
        session=session,
        seq=0,
        window=Window(start=max(0.0, end - 4.0), end=end),
        latency_ms=latency,
        sentiment=Sentiment(score=score, label=sentiment_label(score), confidence=confidence),
        modalities={
            m: ModalityReport(state=s, weight=1 / 3) for m, s in (states or PRESENT).items()
        },
    )


def words(session: str, *spoken: tuple[str, float]) -> TranscriptEvent:
    """A final transcript of (word, start) pairs, each word 0.3 s long."""
    return TranscriptEvent(
        session=session,
        seq=0,
        final=True,
        text=" ".join(w for w, _ in spoken),
        words=[Word(word=w, start=t, end=t + 0.3, prob=0.9) for w, t in spoken],
    )


def numbered(events: list[AnyEvent]) -> list[AnyEvent]:
    """Gapless seq from 0, as a session numbers its events."""
    return [event.model_copy(update={"seq": i}) for i, event in enumerate(events)]


def session_events(session: str = "s1") -> list[AnyEvent]:
    """Four seconds: positive then negative, text missing for a while, a degraded event."""
    scores = [2.0, 1.0, 0.2, -0.2, -1.0, -2.0, 0.6, -0.6]
    events: list[AnyEvent] = [
        StatusEvent(session=session, seq=0, modality="vision", state="present", since=0.0)
    ]
    for i, score in enumerate(scores):
        text = "missing" if 2 <= i <= 3 else "present"
        states: dict[str, ModalityState] = {**PRESENT, "text": text}
        end = 0.5 * (i + 1)
        events.append(window(end, score, latency=10.0 * (i + 1), states=states, session=session))
        if i == 1:
            events.append(words(session, ("so", 0.2), ("<b>good</b>", 0.6), ("$5", 1.0)))
            events.append(
                SessionEvent(
                    session=session,
                    seq=0,
                    state="degraded",
                    reason="face frames dropped: 3",
                    counts={"face_frames_dropped": 3},
                )
            )
    events.append(SessionEvent(session=session, seq=0, state="ended", reason="source ended"))
    return numbered(events)


def write_jsonl(path: Path, events: list[AnyEvent]) -> Path:
    path.write_text("".join(event.to_json() + "\n" for event in events))
    return path


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


# --- what the report computes ------------------------------------------------------------


def test_summary_numbers() -> None:
    report = build_report("s1", session_events())
    summary = report.summary
    assert summary.windows == 8
    assert summary.duration_s == pytest.approx(4.0)
    assert summary.mean_score == pytest.approx(0.0)
    assert summary.shares == {"positive": 3 / 8, "neutral": 2 / 8, "negative": 3 / 8}
    latencies = np.arange(10.0, 90.0, 10.0)
    assert summary.latency_p50_ms == pytest.approx(np.percentile(latencies, 50))
    assert summary.latency_p95_ms == pytest.approx(np.percentile(latencies, 95))
    assert summarize(report.windows) == summary


def test_band_is_the_expected_error_and_narrows_with_confidence() -> None:
    windows = [
        window(0.5, 0.0, confidence=0.5),
        window(1.0, 0.0, confidence=0.8),
        window(1.5, 2.5, confidence=0.2),  # ±4, clipped to the scale
        window(2.0, 0.0, confidence=0.0),
    ]
    low, high = band(windows)
    np.testing.assert_allclose(low, [-1.0, -0.25, -1.5, -3.0])
    np.testing.assert_allclose(high, [1.0, 0.25, 3.0, 3.0])


def test_modality_states_become_runs_over_each_hop() -> None:
    report = build_report("s1", session_events())
    text = next(track for track in report.tracks if track.name == "text")
    assert text.runs == [
        Run(0.0, 1.0, "present"),
        Run(1.0, 2.0, "missing"),
        Run(2.0, 4.0, "present"),
    ]
    assert [track.name for track in report.tracks] == ["text", "audio", "vision"]
    assert [r.label for track in report.tracks[1:] for r in track.runs] == ["present", "present"]


def test_expression_track_only_when_the_events_carry_it(tmp_path: Path) -> None:
    assert [t.name for t in build_report("s1", session_events()).tracks][-1] == "vision"
    faces: list[ExpressionLabel | None] = ["happy", "happy", None, "sad"]
    windows = [window(0.5 * (i + 1), 1.0) for i in range(len(faces))]
    for event, face in zip(windows, faces, strict=True):
        if face is not None:
            seen = Expression(label=face, probs={face: 0.9}, valence=0.0)
            event.modalities["vision"].expression = seen
    events = write_jsonl(tmp_path / "faces.jsonl", numbered(windows))
    report = build_report(*read_session(events))
    assert report.tracks[-1].name == "expression"
    assert report.tracks[-1].runs == [Run(0.0, 1.0, "happy"), Run(1.5, 2.0, "sad")]
    rows = draw_chart(report).axes[-1].get_yticklabels()
    assert [label.get_text() for label in rows] == ["text", "audio", "vision", "expression"]


def test_transcript_lines_end_at_full_stops_and_long_pauses() -> None:
    spoken = words("s1", ("it", 0.0), ("was", 0.4), ("fine.", 0.8), ("then", 1.2), ("later", 3.0))
    assert transcript_lines(spoken.words) == [
        (0.0, 1.1, "it was fine."),
        (1.2, 1.5, "then"),
        (3.0, 3.3, "later"),
    ]


def test_end_reason_and_incidents() -> None:
    report = build_report("s1", session_events())
    assert report.ended == "source ended"
    assert [(i.at, i.event.reason) for i in report.incidents] == [(1.0, "face frames dropped: 3")]
    failed = numbered(
        [window(0.5, 1.0), SessionEvent(session="s1", seq=0, state="failed", reason="failed: boom")]
    )
    report = build_report("s1", failed)
    assert report.ended == "failed: boom" and report.incidents[0].event.state == "failed"
    assert "not recorded" in build_report("s1", session_events()[:-1]).ended


# --- inputs and outputs ----------------------------------------------------------------------


def test_html_is_self_contained_and_png_beside_it(tmp_path: Path) -> None:
    events = write_jsonl(tmp_path / "events.jsonl", session_events())
    page, chart = write_report(events, tmp_path / "new" / "session.html")
    assert chart == tmp_path / "new" / "session.png"
    width, height = png_size(chart)
    assert width >= 1500 and height >= 750
    html = page.read_text()
    assert "<title>stream-mmsa report · session s1</title>" in html
    assert html.count("<svg") == 1 and "<?xml" not in html
    for needed in ("source ended", "face frames dropped: 3", "p50 45 · p95 76 ms", "+0.00"):
        assert needed in html
    assert "&lt;b&gt;good&lt;/b&gt;" in html and "<b>good" not in html
    assert "<script" not in html and "<link" not in html
    links = re.findall(r'(?:href|src)="([^"]*)"', html)
    assert all(link == "session.png" or link.startswith("#") for link in links), links


def test_sqlite_event_log_with_several_sessions(tmp_path: Path) -> None:
    async def log_two_sessions(path: Path) -> None:
        async with EventLog(path) as log:
            for event in [*session_events("alpha"), *session_events("beta")]:
                await log.send(event)

    db = tmp_path / "events.sqlite"
    asyncio.run(log_two_sessions(db))
    chosen, events = read_session(db, "beta")
    assert chosen == "beta" and [e.seq for e in events] == list(range(len(session_events())))
    page, _ = write_report(db, tmp_path / "beta.html", "beta")
    assert "session beta" in page.read_text()
    with pytest.raises(ReportError, match=r"holds 2 sessions \(alpha, beta\); choose one"):
        read_session(db)


def test_jsonl_sessions_are_told_apart_and_put_in_seq_order(tmp_path: Path) -> None:
    shuffled = [*reversed(session_events("a")), *session_events("b")]
    path = write_jsonl(tmp_path / "events.jsonl", shuffled)
    chosen, events = read_session(path, "a")
    assert chosen == "a" and [e.seq for e in events] == sorted(e.seq for e in events)
    assert {e.session for e in events} == {"a"}


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """One file per way an input can be wrong, plus a good one."""
    write_jsonl(tmp_path / "events.jsonl", session_events())
    write_jsonl(tmp_path / "two.jsonl", [*session_events("s1"), *session_events("s2")])
    write_jsonl(tmp_path / "status.jsonl", session_events()[:1])
    (tmp_path / "notes.txt").write_text("these are notes\n")
    (tmp_path / "other.jsonl").write_text('{"type": "sentiment", "session": "s1"}\n')
    (tmp_path / "binary.bin").write_bytes(b"\x00\xff\xfe\x89 not text")
    (tmp_path / "empty.jsonl").write_text("\n")
    for name, sql in [
        ("other", "CREATE TABLE notes (text TEXT)"),
        ("format7", "PRAGMA user_version = 7"),
    ]:
        with closing(sqlite3.connect(tmp_path / f"{name}.sqlite")) as conn:
            conn.execute(sql)
    return tmp_path


# (argv, fragment of the error line); {tmp} is the `inputs` folder
ERROR_CASES = {
    "missing-file": (["{tmp}/nope.jsonl"], "nope.jsonl does not exist"),
    "directory": (["{tmp}"], "is not a file"),
    "not-json": (["{tmp}/notes.txt"], "notes.txt line 1: not JSON"),
    "not-an-event": (["{tmp}/other.jsonl"], "line 1: not a stream-mmsa/1 event (sentiment.seq"),
    "binary": (["{tmp}/binary.bin"], "neither JSON lines of events nor an SQLite event log"),
    "no-events": (["{tmp}/empty.jsonl"], "empty.jsonl holds no events"),
    "sqlite-not-a-log": (["{tmp}/other.sqlite"], "SQLite database but not an event log"),
    "sqlite-other-format": (["{tmp}/format7.sqlite"], "log format 7, expected 1"),
    "unknown-session": (["{tmp}/events.jsonl", "--session", "s9"], "no session 's9'; it holds s1"),
    "several-sessions": (
        ["{tmp}/two.jsonl"],
        "holds 2 sessions (s1, s2); choose one with --session",
    ),
    "no-windows": (["{tmp}/status.jsonl"], "session s1 has no sentiment windows"),
    "out-not-html": (["{tmp}/events.jsonl", "-o", "{tmp}/r.png"], "give a path ending in .html"),
    "out-unwritable": (["{tmp}/events.jsonl", "-o", "/proc/no/r.html"], "cannot write /proc/no"),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_bad_input_is_one_error_line(case: str, inputs: Path) -> None:
    argv, fragment = ERROR_CASES[case]
    result = CliRunner().invoke(app, ["report", *(a.format(tmp=inputs) for a in argv)])
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr


# --- a real run, in a real browser -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed")
def test_report_of_the_sample_renders_in_chromium(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    command = [str(BINARY), "run", str(SAMPLE), "--fast", "--jsonl", str(events)]
    subprocess.run(command, check=True, capture_output=True, timeout=600, cwd=tmp_path)
    page = tmp_path / "report" / "report.html"
    done = subprocess.run(
        [str(BINARY), "report", str(events), "-o", str(page)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    width, height = png_size(page.with_suffix(".png"))
    assert width >= 1500 and height >= 750
    report = build_report(*read_session(events))
    # the sample: three positive, then three negative sentences, each ~4.5 s of the 35 s
    # run (~9 of ~70 windows). Each side has at least two sentences that read with their
    # sign window by window: more than 0.2 of the windows. "This was terrible…" (heard as
    # "… I say that every boring minute of it") is the close one; its early windows read
    # the smiling face alone (0.33 of windows negative with today's engine).
    assert report.summary.shares["positive"] > 0.2 and report.summary.shares["negative"] > 0.2
    assert report.ended == "source ended" and len(report.words) > 40

    async def render() -> dict:
        camera, microphone = fake_devices(tmp_path, seconds=1.0)  # the helper's required devices
        browser = Chromium(tmp_path / "profile", camera, microphone)
        try:
            tab = await browser.open(page.as_uri())
            await tab.wait_for("document.readyState === 'complete'", timeout=30)
            shown = await tab.evaluate(
                """(() => {
                    const chart = document.querySelector('#chart svg').getBoundingClientRect();
                    return {title: document.title, width: chart.width, height: chart.height,
                            lines: document.querySelectorAll('#transcript tr').length,
                            summary: document.querySelector('#summary').innerText};
                })()"""
            )
            await tab.screenshot(tmp_path / "report-screenshot.png")
            return shown
        finally:
            await browser.close()

    shown = asyncio.run(render())
    assert shown["title"] == f"stream-mmsa report · session {report.session}"
    assert shown["width"] > 1000 and shown["height"] > 400
    assert shown["lines"] >= 6 and "latency after window end" in shown["summary"]
    assert min(png_size(tmp_path / "report-screenshot.png")) >= 600
