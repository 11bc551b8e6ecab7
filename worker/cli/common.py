"""What every command shares: the consoles, reading settings, opening the pipeline, formats."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import structlog
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from typer.core import TyperArgument

from config import ConfigError, Settings, load_settings
from worker.runtime import logs

if TYPE_CHECKING:
    from worker.ops.metrics import HandOver
    from worker.pipeline.context import Context

# Whole lines: a message an operator (or a script) reads is never broken at the window width.
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

HostOpt = Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option(metavar="PORT", help="Port to listen on.")]


def _usage_name(self: TyperArgument) -> str:
    name = self.display_name_raw
    return (name if self.required else f"[{name}]") + ("..." if self.nargs != 1 else "")


# Typer writes a required argument {name} and follows each argument with its Python type
# (`phone <str>`); help reads PHONE, as click and man pages write it (tests/worker/cli pins
# the help text, so a Typer upgrade that moves these hooks fails there).
TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]
TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]


def group(**options: Any) -> typer.Typer:
    """A command group whose help is plain text: whole option names and metavars at any width,
    and readable in a pipe."""
    return typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False, **options)


def fail(message: str, code: int = 2) -> NoReturn:
    """Say why on stderr (red, the text as it is: paths and URLs hold brackets) and exit."""
    err.print(message, style="red", markup=False, highlight=False)
    raise typer.Exit(code)


class Verbosity:
    """`optout --verbose`: log lines on stderr, beside the command's own output."""

    on = False


def log_dir(settings: Settings) -> Path:
    return settings.data_dir / "logs"


def here(path: Path) -> str:
    """A path as an operator types it: relative to the current folder when under it."""
    try:
        return "./" + str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_settings(*, service: bool = False) -> Settings:
    """The settings, or exit 2 with the reason; logs configured to match: a service's (api,
    worker, beat, consume) on stderr, where containers and systemd read them; a command's
    in a file under the data dir, so its output is its messages (stderr with --verbose)."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        fail(str(exc))
    sink = None
    if not (service or Verbosity.on):
        # No writable data dir here: stderr, as before, rather than nowhere.
        with contextlib.suppress(OSError):
            sink = logs.LogFile(log_dir(settings) / "cli.log")
    logs.configure(settings.log_format, sink=sink)
    return settings


def require_redis(settings: Settings) -> None:
    """Exit 2 unless REDIS_URL is set, saying where a running `optout up` was looked for
    and how to point the command at a deployment (the serving commands: they never join a
    running `optout up` by themselves)."""
    if not settings.redis_configured:
        from worker.runtime.embedded import redis_url_missing

        fail(redis_url_missing(settings))


def open_context(*, service: bool = False) -> Context:
    """This process's pipeline (on the embedded Redis of a running `optout up` when REDIS_URL
    is unset), or exit 2 with the reason (with no Redis: where it looked, and how to point
    the command at a deployment)."""
    settings = read_settings(service=service)
    from worker.runtime import wiring
    from worker.runtime.embedded import running_url

    if not settings.redis_configured and (url := running_url(settings.data_dir)):
        # `optout up` is running here with its embedded Redis.
        settings = settings.model_copy(update={"redis_url": url})
    wiring.configure(settings)

    try:
        ctx = wiring.context()
    except ConfigError as exc:
        fail(str(exc))
    if not service:
        # Nothing scrapes this process: what it counts goes to the API's /metrics through
        # Redis when the command ends (a service hands over as it runs).
        from worker.ops import metrics

        _hand_overs.append(metrics.HandOver(ctx.store))
    return ctx


_hand_overs: list[HandOver] = []


def hand_over_counts() -> None:
    """At the end of a command, however it ends (the root command's close): hand the
    counts of the pipelines it opened over."""
    while _hand_overs:
        hand_over_quietly(_hand_overs.pop())


def hand_over_quietly(hand_over: HandOver) -> None:
    """Hand this process's counts over; a count lost is no reason to fail a command."""
    try:
        hand_over()
    except Exception as exc:  # noqa: BLE001
        structlog.get_logger("optout.metrics").warning(
            "metrics_not_handed_over", error=type(exc).__name__
        )


def ms_to_text(ms: int | None) -> str:
    """A time in ms since the epoch as UTC text; "-" when unknown."""
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(text: str) -> float:
    """Seconds from 24h, 90m, 3600; exit 2 on anything else."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        err.print(f"[red]{text!r} is not a duration (e.g. 24h, 90m, 3600)[/red]")
        raise typer.Exit(2) from None


class _Count(ProgressColumn):
    """How many of how many, grouped in thousands (`412,000/10,000,000`); the count alone
    while the total is not known."""

    def render(self, task: Task) -> Text:
        done = f"{int(task.completed):,}"
        return Text(done if task.total is None else f"{done}/{int(task.total):,}")


def progress_bar(*, counts: bool = True, show: bool = True) -> Progress:
    """A progress display on stderr while the command works, only on a terminal: a pipe or
    a file gets nothing (its reader wants the output, not the frames), and it is gone once
    done (transient), leaving the command's own summary. `counts`: the numbers done of the
    total beside the bar (a file's bytes read say nothing to an operator); `show`: False
    when the command's output goes to the same terminal (the bar would tear it)."""
    columns: list[str | ProgressColumn] = [
        TextColumn("{task.description}"), BarColumn(bar_width=20), TaskProgressColumn(),
    ]  # fmt: skip
    if counts:
        columns.append(_Count())
    columns.append(TimeRemainingColumn())
    # stdout stays where it points: rich would send what is written there to the bar's
    # console meanwhile, stderr (`optout export > list.csv` would write the list there).
    return Progress(*columns, console=err, transient=True, disable=not (show and err.is_terminal),
                    redirect_stdout=False, redirect_stderr=False)  # fmt: skip


def progress_over(path: Path, label: str) -> Any:
    """A progress bar over a file's bytes, and the callback that advances it."""
    progress = progress_bar(counts=False)
    task = progress.add_task(label, total=path.stat().st_size)
    return progress, lambda done: progress.update(task, completed=done)


class Bars:
    """A scan's progress (worker/ops/progress.py) as bars on stderr, one a stage the scan
    names, each at `done` of `total` (None: a count while the total is not known); on a
    terminal only, see `progress_bar`. A context manager."""

    def __init__(self, *, show: bool = True) -> None:
        self.progress = progress_bar(show=show)
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Bars:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def __call__(self, what: str, done: int, total: int | None) -> None:
        # A total read at the start (blocked:count) can fall behind what the scan finds
        # while opt-outs arrive: the bar ends full, not past its end.
        shown = None if total is None else max(total, done)
        task = self._tasks.get(what)
        if task is None:
            task = self._tasks[what] = self.progress.add_task(what, total=shown)
        self.progress.update(task, completed=done, total=shown)


def in_batches(
    items: list[str], run: Callable[[list[str]], int], label: str, size: int = 500
) -> int:
    """Run `run` over `items` in batches under a progress bar; the sum of what it returned."""
    done = 0
    with progress_bar() as progress:
        task = progress.add_task(label, total=len(items))
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            done += run(batch)
            progress.advance(task, len(batch))
    return done


def who() -> str:
    """The operator, as the audit trail records a CLI action."""
    return f"cli:{os.environ.get('USER', 'unknown')}"


def fresh_dir(path: Path) -> Path:
    """`path`, created, without the metric files a previous run left."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


def multiprocess_metrics(default: Path) -> None:
    """Celery's prefork children count in their own processes: prometheus_client must be in
    multiprocess mode before it is first imported."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(fresh_dir(default))


def span(seconds: float) -> str:
    """A duration as an operator says it: 45s, 90m is 1h 30m, 2d 3h."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m")] + ([(secs, "s")] if not days else [])
    return " ".join(f"{n}{unit}" for n, unit in parts if n)


def count_of(n: int, thing: str) -> str:
    """'1 dead letter', '2 dead letters'."""
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"
