"""`stream-mmsa report`: one recorded session as a self-contained HTML page and a PNG.

Why: a run's live view and summary are gone when the terminal closes, and the events in
a JSONL file or the SQLite log are hard to read by eye. This draws what the session did
(score and its uncertainty, which modality was there, what was said, why it ended) from
the events alone: no model loads, so it runs anywhere the events are.
"""

from __future__ import annotations

import html
import io
import sqlite3
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from pydantic import ValidationError

from .events import (
    NEUTRAL_BAND,
    SCHEMA_VERSION,
    AnyEvent,
    ExpressionLabel,
    ModalityName,
    Sentiment,
    SentimentEvent,
    SessionEvent,
    TranscriptEvent,
    Word,
    parse_event,
)
from .sinks.eventlog import EventLogError, check_format, list_sessions, read_events
from .validate import SQLITE_HEADER

SCORE_LIMIT = 3.0
"""The CMU-MOSI scale's bound, as `Sentiment.score` is validated."""
STATE_COLOURS = {
    "present": "#2e9e4f",
    "partial": "#e3b505",
    "late": "#a64ac9",
    "missing": "#d64541",
}
"""The live view's hues (green, yellow, magenta, red), darkened to read on white."""
EXPRESSION_COLOURS: dict[ExpressionLabel, str] = {
    "happy": "#f28e2b",
    "neutral": "#bab0ac",
    "surprise": "#ff9da7",
    "sad": "#4e79a7",
    "angry": "#7f3b08",
    "disgust": "#76b7b2",
    "fear": "#3d3d6b",
}
"""FER2013's classes, in hues apart from the state colours: one track can show both."""
SENTENCE_PAUSE_S = 1.0
"""A silence this long ends a transcript line even without a full stop."""
WORD_LANES = 4
"""Rows of words under the chart; a word that fits in none keeps only its tick."""
WORD_FONT_PT = 7.5
LABELS: tuple[str, ...] = get_args(Sentiment.model_fields["label"].annotation)
"""positive, neutral, negative: the summary's shares, in this order."""
BAND_RULE = (
    "The shaded band around the score is score ± b, with b = 1 / confidence − 1: the "
    "model's expected absolute error in score points (its confidence is 1 / (1 + b), b a "
    "fitted Laplace scale), so confidence 0.5 gives ±1 and 0.8 gives ±0.25; clipped to −3…3."
)


class ReportError(ValueError):
    """A one-line reason no report can be made: unreadable input, no such session, no windows."""


# --- reading ------------------------------------------------------------------------------


def read_session(path: Path, session: str | None = None) -> tuple[str, list[AnyEvent]]:
    """One session's events, in seq order, from a JSONL file or an SQLite event log.

    `session` may be left out when the input holds exactly one.
    """
    if not path.exists():
        raise ReportError(f"{path} does not exist")
    if not path.is_file():
        raise ReportError(f"{path} is not a file; give a JSONL file or an SQLite event log")
    with path.open("rb") as handle:
        is_sqlite = handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    if is_sqlite:
        chosen = _choose(path, _sqlite_sessions(path), session)
        events = _sqlite_events(path, chosen)
    else:
        by_session = _jsonl_sessions(path)
        chosen = _choose(path, by_session, session)
        events = by_session[chosen]
    return chosen, sorted(events, key=lambda event: event.seq)


def _jsonl_sessions(path: Path) -> dict[str, list[AnyEvent]]:
    """Every event of the file by session, in order of first appearance (files are appended to)."""
    sessions: dict[str, list[AnyEvent]] = {}
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    event = _parse(line, f"{path} line {number}")
                    sessions.setdefault(event.session, []).append(event)
    except UnicodeDecodeError:
        raise ReportError(
            f"{path} is neither JSON lines of events nor an SQLite event log (binary data)"
        ) from None
    return sessions


def _sqlite_sessions(path: Path) -> list[str]:
    try:
        with closing(sqlite3.connect(path)) as conn:
            check_format(conn, path)
        return list(list_sessions(path))
    except EventLogError as error:
        raise ReportError(str(error)) from None
    except sqlite3.Error as error:
        raise ReportError(f"{path} is an SQLite database but not an event log ({error})") from None


def _sqlite_events(path: Path, session: str) -> list[AnyEvent]:
    try:
        return read_events(path, session)
    except ValidationError as error:
        raise ReportError(f"{path}: session {session}: {_first_problem(error)}") from None


def _parse(line: str, where: str) -> AnyEvent:
    try:
        return parse_event(line)
    except ValidationError as error:
        raise ReportError(
            f"{where}: {_first_problem(error)}; expected JSON lines of events "
            "(`stream-mmsa run --jsonl`) or an SQLite event log (`--db`)"
        ) from None


def _first_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return f"not JSON ({first['msg']})"
    field = ".".join(str(part) for part in first["loc"])
    return f"not a {SCHEMA_VERSION} event ({field}: {first['msg']})"


def _choose(path: Path, sessions: Collection[str], wanted: str | None) -> str:
    if not sessions:
        raise ReportError(f"{path} holds no events")
    if wanted is not None and wanted not in sessions:
        raise ReportError(f"{path} has no session {wanted!r}; it holds {_names(sessions)}")
    if wanted is None and len(sessions) > 1:
        raise ReportError(
            f"{path} holds {len(sessions)} sessions ({_names(sessions)}); choose one with --session"
        )
    return wanted if wanted is not None else next(iter(sessions))


def _names(sessions: Collection[str], shown: int = 10) -> str:
    names = list(sessions)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


# --- what the report shows ------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """Consecutive windows with one label on a track, as session seconds [start, end]."""

    start: float
    end: float
    label: str


@dataclass(frozen=True)
class Track:
    """One row of coloured runs under the chart: a per-window label (a modality's state, the
    face's expression) with its colours."""

    name: str
    runs: list[Run]
    colours: Mapping[str, str]


@dataclass(frozen=True)
class Incident:
    """A `degraded` or `failed` session event, placed after the window emitted before it."""

    at: float
    event: SessionEvent


@dataclass(frozen=True)
class Summary:
    """The page's figures: what a reader asks first about a session."""

    duration_s: float
    windows: int
    mean_score: float
    shares: dict[str, float]
    """Fraction of windows per label: positive, neutral, negative."""
    latency_p50_ms: float
    latency_p95_ms: float


@dataclass(frozen=True)
class SessionReport:
    session: str
    windows: list[SentimentEvent]
    words: list[Word]
    tracks: list[Track]
    ended: str
    incidents: list[Incident]
    summary: Summary

    @property
    def title(self) -> str:
        first = self.windows[0]
        who = "/".join(part for part in (first.room, first.participant) if part)
        return f"session {self.session}" + (f" ({who})" if who else "")


def build_report(session: str, events: Iterable[AnyEvent]) -> SessionReport:
    """What the page and the chart show, from one session's events in seq order."""
    windows: list[SentimentEvent] = []
    words: list[Word] = []
    incidents: list[Incident] = []
    ended = "not recorded: the events stop before the session's last event"
    for event in events:
        if isinstance(event, SentimentEvent):
            windows.append(event)
        elif isinstance(event, TranscriptEvent) and event.final:
            words.extend(event.words)
        elif isinstance(event, SessionEvent):
            if event.state != "ended":
                incidents.append(Incident(windows[-1].window.end if windows else 0.0, event))
            if event.state != "degraded":
                ended = event.reason
    if not windows:
        raise ReportError(f"session {session} has no sentiment windows to chart (ended: {ended})")
    windows.sort(key=lambda w: w.window.end)
    words.sort(key=lambda w: w.start)
    return SessionReport(
        session, windows, words, tracks(windows), ended, incidents, summarize(windows)
    )


def summarize(windows: list[SentimentEvent]) -> Summary:
    scores = np.array([w.sentiment.score for w in windows])
    latency = np.array([w.latency_ms for w in windows])
    labels = Counter(w.sentiment.label for w in windows)
    return Summary(
        duration_s=max(w.window.end for w in windows) - min(w.window.start for w in windows),
        windows=len(windows),
        mean_score=float(scores.mean()),
        shares={label: labels[label] / len(windows) for label in LABELS},
        latency_p50_ms=float(np.percentile(latency, 50)),
        latency_p95_ms=float(np.percentile(latency, 95)),
    )


def band(windows: list[SentimentEvent]) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper edge of the confidence band per window (see BAND_RULE)."""
    score = np.array([w.sentiment.score for w in windows])
    confidence = np.array([w.sentiment.confidence for w in windows])
    expected_error = 1.0 / np.maximum(confidence, 1e-6) - 1.0
    low = np.clip(score - expected_error, -SCORE_LIMIT, SCORE_LIMIT)
    return low, np.clip(score + expected_error, -SCORE_LIMIT, SCORE_LIMIT)


def tracks(windows: list[SentimentEvent]) -> list[Track]:
    """Each modality's state per window, then the face's expression if the events carry it.

    A window's label covers the hop since the previous window's end.
    """
    spans = _spans(windows)
    rows = [
        Track(
            modality,
            _runs(spans, [r.state if (r := w.modalities.get(modality)) else None for w in windows]),
            STATE_COLOURS,
        )
        for modality in get_args(ModalityName)
    ]
    faces = [_expression(w) for w in windows]
    if any(faces):
        rows.append(Track("expression", _runs(spans, faces), EXPRESSION_COLOURS))
    return rows


def _expression(window: SentimentEvent) -> str | None:
    """The face's top expression label in this window; None without a face or the field."""
    vision = window.modalities.get("vision")
    return vision.expression.label if vision and vision.expression else None


def _spans(windows: list[SentimentEvent]) -> list[tuple[float, float]]:
    """The stretch of session time each window's event stands for on a track."""
    starts = [windows[0].window.start, *(w.window.end for w in windows[:-1])]
    return [(start, w.window.end) for start, w in zip(starts, windows, strict=True)]


def _runs(spans: list[tuple[float, float]], labels: list[str | None]) -> list[Run]:
    """Adjacent spans with the same label merged; unlabelled spans left empty."""
    runs: list[Run] = []
    for (start, end), label in zip(spans, labels, strict=True):
        if label is None:
            continue
        if runs and runs[-1].label == label and runs[-1].end == start:
            runs[-1] = Run(runs[-1].start, end, label)
        else:
            runs.append(Run(start, end, label))
    return runs


def transcript_lines(words: list[Word]) -> list[tuple[float, float, str]]:
    """Final words as readable lines: a line ends at . ? ! or at a long pause."""
    lines: list[list[Word]] = []
    for word in words:
        if lines and word.start - lines[-1][-1].end < SENTENCE_PAUSE_S:
            last = lines[-1][-1].word.rstrip()
            if not last.endswith((".", "?", "!")):
                lines[-1].append(word)
                continue
        lines.append([word])
    return [(line[0].start, line[-1].end, " ".join(w.word.strip() for w in line)) for line in lines]


# --- the chart ----------------------------------------------------------------------------------


def draw_chart(report: SessionReport) -> Figure:
    """Score with its band, words, then one row per track; one figure for both PNG and HTML."""
    rows = len(report.tracks)
    fig = Figure(figsize=(12, 5.4 + 0.3 * rows))
    canvas = FigureCanvasAgg(fig)  # Agg: the word layout measures text with its renderer
    grid = fig.add_gridspec(
        3,
        1,
        height_ratios=[4.2, 1.3, 0.3 * rows],
        hspace=0.12,
        left=0.08,
        right=0.83,
        top=0.93,
        bottom=0.09,
    )
    score_ax = fig.add_subplot(grid[0])
    words_ax = fig.add_subplot(grid[1], sharex=score_ax)
    tracks_ax = fig.add_subplot(grid[2], sharex=score_ax)
    _draw_score(score_ax, report)
    _draw_tracks(tracks_ax, report.tracks)
    start = report.windows[0].window.start
    score_ax.set_xlim(start, max(report.windows[-1].window.end, start + 1.0))
    _draw_words(words_ax, report.words, canvas)
    tracks_ax.set_xlabel("session time (s); each window is drawn at its end")
    return fig


def _draw_score(ax: Axes, report: SessionReport) -> None:
    ends = [w.window.end for w in report.windows]
    low, high = band(report.windows)
    ax.axhspan(-NEUTRAL_BAND, NEUTRAL_BAND, color="#9aa0a6", alpha=0.25, lw=0, label="neutral")
    ax.fill_between(ends, low, high, color="#4a7fd4", alpha=0.22, lw=0, label="± expected error")
    ax.plot(
        ends,
        [w.sentiment.score for w in report.windows],
        color="#1a3f8f",
        lw=1.6,
        marker="o",
        ms=2.5,
        label="score",
    )
    for incident in report.incidents:
        ax.axvline(incident.at, color="#d64541", ls="--", lw=1)
    ax.set_ylim(-SCORE_LIMIT, SCORE_LIMIT)
    ax.set_yticks(range(-3, 4))
    ax.set_ylabel("sentiment score")
    ax.grid(alpha=0.3)
    ax.tick_params(labelbottom=False)
    ax.set_title(f"stream-mmsa · {report.title}", loc="left", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _draw_words(ax: Axes, words: list[Word], canvas: FigureCanvasAgg) -> None:
    """Each final word at its start time, in the first lane where it overlaps no other."""
    ax.set_ylim(WORD_LANES, -0.6)
    ax.set_yticks([])
    ax.tick_params(labelbottom=False)
    ax.set_ylabel("words", rotation=0, ha="right", va="center")
    ax.vlines([w.start for w in words], -0.6, -0.1, color="#555", lw=0.8)
    renderer = canvas.get_renderer()
    to_data = ax.transData.inverted()
    lane_free = [-np.inf] * WORD_LANES
    gap = WORD_FONT_PT * 0.6 * ax.figure.dpi / 72  # about a space, in pixels
    for word in words:
        lane = next((i for i, free in enumerate(lane_free) if word.start >= free), None)
        if lane is None:
            continue
        text = ax.text(
            word.start,
            lane + 0.45,
            word.word.strip(),
            fontsize=WORD_FONT_PT,
            va="center",
            parse_math=False,
            clip_on=True,
        )
        right = text.get_window_extent(renderer).x1 + gap
        lane_free[lane] = to_data.transform((right, 0))[0]


def _draw_tracks(ax: Axes, tracks: list[Track]) -> None:
    for row, track in enumerate(tracks):
        for label, colour in track.colours.items():  # one collection per colour: hours stay fast
            spans = [(run.start, run.end - run.start) for run in track.runs if run.label == label]
            ax.broken_barh(spans, (row + 0.1, 0.8), color=colour, lw=0)
    ax.set_ylim(len(tracks), 0)
    ax.set_yticks([row + 0.5 for row in range(len(tracks))], [t.name for t in tracks])
    ax.tick_params(axis="y", length=0)
    legend: dict[str, str] = {}  # the labels drawn, in each track's colour order
    for track in tracks:
        used = {run.label for run in track.runs}
        legend.update((label, colour) for label, colour in track.colours.items() if label in used)
    ax.legend(
        handles=[Patch(color=colour, label=label) for label, colour in legend.items()],
        loc="lower left",
        bbox_to_anchor=(1.01, 0.0),
        fontsize=8,
        frameon=False,
    )


# --- the page -----------------------------------------------------------------------------------


def render_html(report: SessionReport, svg: str, png_name: str) -> str:
    """A page that needs nothing else: the chart inline as SVG, styles inline, no scripts."""
    s = report.summary
    shares = " · ".join(f"{label} {100 * s.shares[label]:.0f}%" for label in LABELS)
    numbers = {
        "duration": f"{s.duration_s:.1f} s",
        "windows": str(s.windows),
        "mean score": f"{s.mean_score:+.2f}",
        "windows by label": shares,
        "latency after window end": f"p50 {s.latency_p50_ms:.0f} · p95 {s.latency_p95_ms:.0f} ms",
        "ended": report.ended,
    }
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in numbers.items())
    incidents = "".join(
        f"<li>{_e(i.event.state)} after {i.at:.1f} s: {_e(i.event.reason)}"
        + (f" <small>({_e(_counts(i.event.counts))})</small>" if i.event.counts else "")
        + "</li>"
        for i in report.incidents
    )
    lines = "".join(
        f"<tr><td>{start:.1f}–{end:.1f} s</td><td>{_e(text)}</td></tr>"
        for start, end, text in transcript_lines(report.words)
    )
    title = f"stream-mmsa report · {report.title}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #202124; }}
figure {{ margin: 1rem 0; }} figure svg {{ width: 100%; height: auto; }}
figcaption, small {{ color: #5f6368; }}
table {{ border-collapse: collapse; }} th, td {{ text-align: left; padding: .2rem 1rem .2rem 0;
       vertical-align: top; }} th {{ font-weight: 600; }}
#transcript td:first-child {{ white-space: nowrap; color: #5f6368; }}
</style></head><body>
<h1>{_e(title)}</h1>
<table id="summary">{rows}</table>
<figure id="chart">{svg}
<figcaption>Score per window at the window's end; grey: the neutral band ±{NEUTRAL_BAND:g}.
{_e(BAND_RULE)} Below: each final word at its start time (a tick only where words would
overlap; all of them are in the transcript), then each modality's state per window and,
when the events carry it, the face's top expression. Dashed red lines: degraded or failed
events. The same chart as a PNG:
<a href="{_e(png_name)}">{_e(png_name)}</a>.</figcaption></figure>
<h2>Session events</h2>
<ul id="incidents">{incidents or "<li>no degraded or failed events</li>"}</ul>
<h2>Transcript</h2>
<table id="transcript">{lines or "<tr><td>no words recognised</td></tr>"}</table>
</body></html>
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _counts(counts: Mapping[str, float]) -> str:
    return ", ".join(f"{key.replace('_', ' ')} {value:g}" for key, value in counts.items())


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # the XML prolog and doctype are invalid inside HTML


def write_report(events: Path, out: Path, session: str | None = None) -> tuple[Path, Path]:
    """Write the HTML report at `out` and its chart as a PNG beside it; both paths."""
    if out.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"{out}: the report is HTML, give a path ending in .html")
    report = build_report(*read_session(events, session))
    fig = draw_chart(report)
    png = out.with_suffix(".png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=150)
        out.write_text(render_html(report, _svg(fig), png.name), encoding="utf-8")
    except OSError as error:
        raise ReportError(f"cannot write {error.filename or out}: {error.strerror}") from None
    return out, png
