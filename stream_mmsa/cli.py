"""The `stream-mmsa` command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from .config import ConfigError
from .console import print_error

if TYPE_CHECKING:
    from .train.evaluate import EvalRow

app = typer.Typer(
    help="Real-time multimodal sentiment with missing-modality evaluation before generation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
T = TypeVar("T")


def _fail(message: str) -> typer.Exit:
    print_error(console, message)
    return typer.Exit(2)


def _checked(option: str, check: Callable[..., T], *args: Any) -> T:
    """Run an up-front argument check; its ValueError becomes the error line, naming `option`."""
    try:
        return check(*args)
    except ValueError as error:
        raise _fail(f"{option}: {error}") from None


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"stream-mmsa {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Options that come before the command (the help text is the app's)."""


@app.command()
def train(
    config: Annotated[Path, typer.Option(help="YAML config, e.g. configs/text.yaml")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="section.key=value overrides")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="checkpoint path")] = None,
) -> None:
    """Train with random missingness, select on validation, write a checkpoint + model card."""
    from .train.run import train_from_config

    try:
        path = train_from_config(config, overrides or [], out, console)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        raise _fail(str(error)) from None
    console.print(f"[green]checkpoint written:[/] {path}")


@app.command("eval")
def evaluate_command(
    data: Annotated[Path, typer.Option(help="a label.csv or an MMSA pickle")],
    checkpoint: Annotated[
        Path | None, typer.Option(help="defaults to the bundled text checkpoint")
    ] = None,
    split: Annotated[str, typer.Option(help="train / valid / test")] = "valid",
    missing: Annotated[
        str, typer.Option(help="complete, modality, element, temporal or all")
    ] = "complete",
    imagine: Annotated[str, typer.Option(help="comma list of gate, always, never")] = "gate",
    seed: Annotated[int, typer.Option(help="seed of the missingness masks")] = 1111,
    json_out: Annotated[Path | None, typer.Option("--json", help="write rows as JSON")] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="append rows to an MMSA-style results CSV")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="write a robustness plot (PNG)")] = None,
) -> None:
    """MMSA-style metrics per missing setting, as a table (and JSON / a plot)."""
    from .train.run import evaluate_checkpoint

    modes = [m.strip() for m in imagine.split(",") if m.strip()]
    try:
        rows, table = evaluate_checkpoint(checkpoint, data, split, missing, modes, seed)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        raise _fail(str(error)) from None
    print(table)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps([r.as_dict() for r in rows], indent=2))
        console.print(f"rows written to {json_out}")
    if csv_out:
        from .train.run import DEFAULT_CHECKPOINT

        model = (checkpoint or DEFAULT_CHECKPOINT).stem
        _checked("--csv", _append_mmsa_csv, csv_out, model, rows)
        console.print(f"rows appended to {csv_out}")
    if plot:
        from .train.evaluate import plot_robustness

        console.print(f"plot written to {plot_robustness(rows, plot)}")


def _append_mmsa_csv(path: Path, model: str, rows: list[EvalRow]) -> None:
    """MMSA's results file: `Model`, then each metric as "(mean, std)" × 100, appended.

    One evaluation per row here, so std is 0.0; Model is checkpoint/setting/imagine.
    """
    import csv

    from .train.evaluate import TABLE_METRICS

    header = ["Model", *TABLE_METRICS]
    if path.exists():
        with path.open(newline="") as handle:
            found = next(csv.reader(handle), header)
        if found != header:
            raise ValueError(f"{path} has other columns ({', '.join(found)}); choose a new file")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if handle.tell() == 0:
            writer.writerow(header)
        for row in rows:
            cells = [str((round(row.metrics[k] * 100, 2), 0.0)) for k in TABLE_METRICS]
            writer.writerow([f"{model}/{row.setting}/{row.imagine}", *cells])


@app.command()
def ablation(
    config: Annotated[Path, typer.Option(help="synthetic benchmark config")] = Path(
        "configs/synthetic.yaml"
    ),
    out: Annotated[Path, typer.Option(help="markdown report")] = Path("docs/ablation.md"),
    seeds: Annotated[
        str, typer.Option(help="comma list of training seeds")
    ] = "1111,1112,1113,1114,1115",
) -> None:
    """Evaluator gate vs always / never imagine vs no prompts on the synthetic benchmark."""
    from .train.ablation import run_ablation

    try:
        report = run_ablation(config, [int(s) for s in seeds.split(",")], out, console)
    except (ConfigError, ValueError) as error:
        raise _fail(str(error)) from None
    print(report)


@app.command()
def run(
    source: Annotated[
        str | None,
        typer.Argument(
            help="a media file (audio, video or both), webcam, mic or webcam+mic "
            '(webcam:1, mic:"USB Audio": by index or name)'
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config with an engine: section")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="section.key=value override")
    ] = None,
    fast: Annotated[bool, typer.Option(help="as fast as possible, not at real-time pace")] = False,
    jsonl: Annotated[
        str | None, typer.Option(help="write events as JSON lines (- = stdout)")
    ] = None,
    ws: Annotated[str | None, typer.Option(help="serve events on ws://HOST:PORT/events")] = None,
    db: Annotated[Path | None, typer.Option(help="append events to this SQLite log")] = None,
    list_devices: Annotated[
        bool, typer.Option("--list-devices", help="list cameras and microphones, then exit")
    ] = False,
) -> None:
    """Run the engine on a media file or local devices: live view, events to the sinks,
    summary at the end."""
    import asyncio
    from functools import partial

    from .config import load_config
    from .media.sources import device
    from .media.sources.base import SourceError
    from .validate import (
        check_db_target,
        check_jsonl_target,
        check_media_source,
        check_port_free,
        parse_ws_address,
    )

    if list_devices:
        print(device.list_devices())
        raise typer.Exit()
    if source is None:
        raise _fail("give a source: a media file, webcam, mic or webcam+mic (--list-devices)")
    try:
        media = check_media_source(source)
        engine = load_config(config, overrides or []).engine
    except (ConfigError, ValueError) as error:
        raise _fail(str(error)) from None
    if isinstance(media, device.DeviceSpec) and fast:
        raise _fail("--fast: live devices run in real time; leave --fast out")
    if jsonl and jsonl != "-":
        _checked("--jsonl", check_jsonl_target, jsonl)
    if db:
        _checked("--db", check_db_target, db)
    if ws:
        host, port = _checked("--ws", parse_ws_address, ws)
        _checked("--ws", check_port_free, host, port)
        ws = f"{host}:{port}"

    if isinstance(media, device.DeviceSpec):  # opened now, so a missing one fails at once
        try:
            media = partial(device.DeviceSource, device.open_devices(media))
        except SourceError as error:
            raise _fail(str(error)) from None

    from .live import exit_code, run_file

    try:
        summary = asyncio.run(
            run_file(media, engine, fast=fast, jsonl=jsonl, ws=ws, db=db, console=console)
        )
    except (ConfigError, SourceError, FileNotFoundError, ValueError) as error:
        raise _fail(str(error)) from None
    raise typer.Exit(exit_code(summary))


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option(help="YAML config (server: and engine:)")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="section.key=value override")
    ] = None,
    host: Annotated[str | None, typer.Option(help="listen address (server.host)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port; 0 picks one (server.port)")] = None,
    token: Annotated[
        str | None, typer.Option(help="access token (server.token, else $STREAM_MMSA_TOKEN)")
    ] = None,
    db: Annotated[Path | None, typer.Option(help="SQLite event log (server.db)")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: serve HTTPS")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM key of --tls-cert")] = None,
) -> None:
    """Serve the browser page, WebRTC offers, /events, /healthz and /metrics."""
    import asyncio
    import logging
    import ssl

    from .config import load_config
    from .validate import check_db_target, check_port_free

    given = {"host": host, "port": port, "db": db, "tls_cert": tls_cert, "tls_key": tls_key}
    extra = [f"server.{k}={v}" for k, v in given.items() if v]
    if port == 0:
        extra.append("server.port=0")
    if token is not None and len(token) < 16:
        raise _fail("--token needs at least 16 characters (e.g. `openssl rand -hex 16`)")
    try:
        cfg = load_config(config, [*(overrides or []), *extra])
        if token is not None:
            cfg.server.token = token
    except (ConfigError, ValueError) as error:
        raise _fail(str(error)) from None
    _checked("--db" if db else "server.db", check_db_target, cfg.server.db)
    address = "--host/--port" if host or port is not None else "server.host/server.port"
    _checked(address, check_port_free, cfg.server.host, cfg.server.port)

    from .server import serve as run_server
    from .server.app import resolve_token

    secret, generated = resolve_token(cfg.server)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("stream_mmsa").setLevel(logging.INFO)  # sessions; not ICE chatter

    def announce(url: str) -> None:
        note = " (a random token: set server.token or $STREAM_MMSA_TOKEN)" if generated else ""
        console.print(f"[bold green]serving[/] open {url}{note}")

    try:
        asyncio.run(run_server(cfg, secret, announce))
    except (OSError, ssl.SSLError) as error:  # port in use, unreadable or mismatched TLS files
        raise _fail(str(error)) from None


BENCH_STAGES = ("model", "face", "acoustic", "asr", "engine")
EXTRA_STAGES = ("sessions",)
"""Stages that take minutes (N live sessions at real-time pace): run only when named."""


@app.command()
def bench(
    source: Annotated[Path | None, typer.Argument(help="media file (default: the sample)")] = None,
    stages: Annotated[
        str, typer.Option(help=f"comma list of {', '.join(BENCH_STAGES + EXTRA_STAGES)}")
    ] = ",".join(BENCH_STAGES),
    sessions: Annotated[
        str, typer.Option(help="sessions stage: comma list of concurrent session counts")
    ] = "1,4,8",
    transports: Annotated[
        str, typer.Option(help="sessions stage: file and/or webrtc")
    ] = "file,webrtc",
    clip_seconds: Annotated[
        float,
        typer.Option(help="sessions stage without SOURCE: seconds of continuous MOSI speech"),
    ] = 60.0,
    runs: Annotated[int, typer.Option(min=1, help="sessions stage: runs of each N")] = 1,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="engine override, e.g. engine.face_runtime=mediapipe"),
    ] = None,
    readme: Annotated[
        bool, typer.Option(help="write the tables into ./README.md's bench blocks")
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="write all figures")] = None,
) -> None:
    """Measure every budget of DESIGN.md on the bundled sample; prints a markdown table.

    `--stages sessions` runs N live sessions at once (files, or WebRTC peers in a child
    process) on continuous speech made from MOSI valid transcripts under the sample's face.
    `--set` measures another configuration; the README's blocks keep the default one's.
    """
    from .config import load_config

    if readme and overrides:
        raise _fail("--readme records the default configuration: drop --set or --readme")
    try:
        engine = load_config(None, overrides or []).engine
    except (ConfigError, ValueError) as error:
        raise _fail(str(error)) from None
    chosen = [s.strip() for s in stages.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in BENCH_STAGES + EXTRA_STAGES]
    if unknown or not chosen:
        named = f"unknown stage {', '.join(unknown)}; " if unknown else ""
        raise _fail(f"--stages: {named}choose from {', '.join(BENCH_STAGES + EXTRA_STAGES)}")
    counts = _int_list("--sessions", sessions)
    chosen_transports = [t.strip() for t in transports.split(",") if t.strip()]
    from .bench import markdown, run_bench
    from .bench.sessions import TRANSPORTS, SessionsPlan
    from .paths import SAMPLE

    if not chosen_transports or set(chosen_transports) - set(TRANSPORTS):
        raise _fail(f"--transports: choose from {', '.join(TRANSPORTS)}")
    plan = SessionsPlan(counts, chosen_transports, source, clip_seconds, runs)
    results = run_bench(source or SAMPLE, engine, chosen, plan)
    print(markdown(results))
    if readme:
        _write_bench_blocks(results, source, stages, sessions, transports, runs, clip_seconds)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(results, indent=2, default=str))


def _write_bench_blocks(
    results: dict,
    source: Path | None,
    stages: str,
    sessions: str,
    transports: str,
    runs: int,
    clip_seconds: float,
) -> None:
    """The stage table into README's bench-sample block, the sessions table into
    bench-sessions, each with the command that made it."""
    from .bench import markdown
    from .bench.sessions import readme_block
    from .bench.suite import host_line
    from .train.readme import write_block

    readme, named = Path("README.md"), f" {source}" if source else ""
    staged = [s for s in stages.split(",") if s.strip() and s.strip() not in EXTRA_STAGES]
    blocks = {}
    if staged:
        command = f"stream-mmsa bench{named} --stages {','.join(staged)} --readme"
        figures = {k: v for k, v in results.items() if k != "sessions"}
        blocks["bench-sample"] = f"`{command}`:\n\n{markdown(figures)}\n"
    if "sessions" in results:
        command = (
            f"stream-mmsa bench{named} --stages sessions --sessions {sessions} "
            f"--transports {transports} --runs {runs} --readme"
            + ("" if source else f" --clip-seconds {clip_seconds:g}")
        )
        host = host_line(results["host_ms"]) if "host_ms" in results else ""
        blocks["bench-sessions"] = readme_block(results["sessions"], command, host)
    for name, body in blocks.items():
        if not write_block(readme, name, body):
            console.print(f"README.md has no {name} block here: nothing written")


def _int_list(option: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise _fail(f"{option}: a comma list of whole numbers, e.g. 1,4,8") from None
    if not values or min(values) < 1:
        raise _fail(f"{option}: a comma list of whole numbers >= 1, e.g. 1,4,8")
    return values


@app.command()
def demo(
    fast: Annotated[bool, typer.Option(help="as fast as possible, not at real-time pace")] = False,
) -> None:
    """Run the engine on the bundled sample: live events, websocket, SQLite log, summary."""
    from .demo import run_demo

    try:
        run_demo(console, fast)
    except FileNotFoundError as error:  # a model that is not installed: say which and how
        raise _fail(str(error)) from None


@app.command()
def report(
    events: Annotated[Path, typer.Argument(help="a run's events: JSONL file or SQLite log")],
    out: Annotated[
        Path, typer.Option("-o", "--out", help="HTML report; its chart also goes to NAME.png")
    ] = Path("report.html"),
    session: Annotated[str | None, typer.Option(help="session ID, if EVENTS holds several")] = None,
) -> None:
    """One recorded session as a self-contained HTML page and a PNG chart."""
    from .report import ReportError, write_report

    try:
        page, chart = write_report(events, out, session)
    except ReportError as error:
        raise _fail(str(error)) from None
    console.print(f"report written to {page} (chart: {chart})", markup=False)


if __name__ == "__main__":
    app()
