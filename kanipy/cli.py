"""The command line: the only place that prints, exits and configures logging.

Flag names follow Kaniko's executor (the table is ``kanipy.cliflags``; their
values become BuildOptions in ``kanipy.cliopts``), so a CI step can switch by
changing the image and the command name. stdout carries only machine output
(the pushed ``name@digest`` lines); everything else goes to stderr: on a
terminal, the live view of ``kanipy.console`` (``--progress=auto|tty``);
elsewhere, and with ``--progress=plain``, plain lines; or one JSON object per
line with ``--log-format json``, whatever ``--progress`` says.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import click

import kanipy
from kanipy import __version__
from kanipy.cliflags import GroupedCommand, add_flags
from kanipy.errors import BuildError, DockerfileError, KanipyError, RegistryError, UsageError
from kanipy.executor.stagejobs import current_stage

# Annotations only, or imported where a build uses them: `kanipy --version` and
# `--help` load neither the option conversion nor the terminal view (issue 14).
if TYPE_CHECKING:
    from kanipy.console import TerminalReporter
    from kanipy.executor.progress import StepInfo, StepSummary
    from kanipy.registry.progress import ProgressEvent

log = logging.getLogger(__name__)

_VERBOSITY = {
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}

# SGR colours for level names, as logrus colours Kaniko's (blue, yellow, red).
_COLOURS = {"DEBUG": "37", "INFO": "34", "WARNING": "33", "ERROR": "31", "CRITICAL": "31"}


def _utc(seconds: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _paint(text: str, level: str, colour: bool) -> str:
    return f"\x1b[{_COLOURS[level]}m{text}\x1b[0m" if colour and level in _COLOURS else text


def use_colour(log_format: str | None, stream: Any, env: Mapping[str, str]) -> bool:
    """Whether stderr gets colour: never when NO_COLOR is set (no-color.org: present, not empty).

    With no ``--log-format``, colour only on a terminal, so a CI log holds no
    escape codes. ``--log-format color`` asks for colour, and gets it even in
    a log file, as Kaniko's ``color`` format does (logrus with ForceColors):
    CI systems that render colours (GitLab, Tekton dashboards) show it.
    ``text`` and ``json`` never colour.
    """
    if env.get("NO_COLOR") or log_format in ("text", "json"):
        return False
    if log_format == "color":
        return True
    return bool(getattr(stream, "isatty", lambda: False)())


def live_view(progress: str, log_format: str | None, stream: Any,
              env: Mapping[str, str]) -> bool:
    """Whether the build is drawn live (``kanipy.console``) rather than as plain lines.

    ``--progress=auto`` (the default) draws it on a terminal that can move its
    cursor (not ``TERM=dumb``); ``tty`` draws it wherever stderr goes;
    ``plain`` never does. A JSON log is always plain JSON records.
    """
    if log_format == "json" or progress == "plain":
        return False
    if progress == "tty":
        return True
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    return is_tty and env.get("TERM") != "dumb"


class _TextFormatter(logging.Formatter):
    def __init__(self, timestamps: bool, colour: bool) -> None:
        super().__init__()
        self.timestamps = timestamps
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_paint(record.levelname, record.levelname, self.colour)} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"{_utc(record.created)} {text}" if self.timestamps else text


class _JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra={"fields": {...}}`` adds typed fields to it."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        stage = current_stage.get()  # the stage whose thread logged it
        if stage is not None and "stage" not in entry:
            entry["stage"] = stage
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(verbosity: str, log_format: str, *, timestamps: bool = False,
                      colour: bool = False, stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter(timestamps, colour))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = _VERBOSITY[verbosity]
    root.setLevel(level)
    # urllib3 logs request lines at DEBUG; they name URLs, never headers, but
    # keep it quiet unless asked for the most detail.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if verbosity == "trace" else logging.INFO)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="kanipy")
def cli() -> None:
    """kanipy builds container images from a Dockerfile, with no Docker daemon.

    It pulls the base image, runs each instruction in a directory it owns,
    turns each step's changes into a layer and pushes the image. Run
    `kanipy build --help` for the build flags (Kaniko's names).
    """


@cli.command()
def version() -> None:
    """Print kanipy's version."""
    click.echo(__version__)


@cli.command(cls=GroupedCommand, context_settings={"max_content_width": 100})
@add_flags
def build(**kw: Any) -> None:
    """Build an image from a Dockerfile and push it.

    Every Kaniko executor flag is accepted, in both forms of a boolean
    (--flag, --flag=true|false); those that change nothing here say why in one
    log line.

    \b
    kanipy build -f Dockerfile -c /workspace/src -d registry.example.com/app:1.0
    """
    env = dict(os.environ)
    colour = use_colour(kw["log_format"], sys.stderr, env)
    timestamps = bool(kw["log_timestamp"])
    log_format = kw["log_format"] or "color"
    reporter: ConsoleReporter | TerminalReporter
    if live_view(kw["progress"], kw["log_format"], sys.stderr, env):
        from kanipy.console import TerminalReporter

        reporter = TerminalReporter(sys.stderr, colour=colour, timestamps=timestamps)
        configure_logging(kw["verbosity"], log_format, timestamps=timestamps, colour=colour,
                          stream=reporter.log_stream)
    else:
        reporter = ConsoleReporter(sys.stderr, json_lines=log_format == "json",
                                   timestamps=timestamps, colour=colour)
        configure_logging(kw["verbosity"], log_format, timestamps=timestamps, colour=colour)
    try:
        _build(kw, env, reporter)
    finally:
        reporter.close()


# Whether main() paused the cyclic garbage collector; _build resumes it once the
# build's modules are loaded.
_collector_paused = False


def _pause_collector() -> None:
    """Pause the cyclic garbage collector while the command loads its modules.

    Loading them (for a build: the engine, the registry client and requests)
    makes objects that live as long as the process: modules, classes,
    functions, dataclasses' generated methods. Collecting while they are made
    finds no garbage: a busybox build ran about 70 collections, 6 % of its
    instructions (issue 14, fixed costs). Only ``main`` pauses it: the library,
    and the command run in another program's process, leave that process's
    collector alone.
    """
    global _collector_paused
    if gc.isenabled():
        gc.disable()
        _collector_paused = True


def _resume_collector() -> None:
    """Collect again, with what is loaded so far frozen (``gc.freeze``): the
    collections during the build do not walk the modules' objects each time."""
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.freeze()
        gc.enable()


def _build(kw: dict[str, Any], env: dict[str, str],
           reporter: ConsoleReporter | TerminalReporter) -> None:
    from kanipy.cliopts import note_compat_flags, options_from_flags
    from kanipy.executor import engine  # noqa: F401 - every build's modules, loaded before

    _resume_collector()  # the collector runs again

    try:
        note_compat_flags(kw, env)
        options = options_from_flags(kw, env)
        if not options.destinations and not options.no_push and not options.dry_run \
                and not (options.tar_path or options.oci_layout_path):
            raise UsageError(
                "no --destination given: name where to push (-d registry/repo:tag), "
                "or pass --no-push to only build"
            )
        result = kanipy.build(options, reporter=reporter)
    except (click.exceptions.Exit, click.ClickException):
        raise
    except (Exception, KeyboardInterrupt) as exc:  # rendered in the chosen log format
        failure = describe_failure(exc)
        if kw["debug"] and failure.exit_code not in (130, 143):
            failure.fields["traceback"] = traceback.format_exc()
        # Tags moved before the failure are machine output all the same.
        pushed = getattr(exc, "pushed", ())
        if pushed:
            reporter.close()  # a live view stops drawing before stdout is written
        for line in pushed:
            click.echo(line)
        reporter.failed(failure)
        raise click.exceptions.Exit(failure.exit_code) from None
    reporter.built(result.digest, result.pushed)
    for line in result.stdout_lines:
        click.echo(line)


def _human_size(size: int | None) -> str:
    from kanipy.executor.progress import human_bytes

    return "-" if size is None else human_bytes(size)


@dataclass
class Failure:
    """How a failed build ends: its exit code, its message and typed fields for JSON."""

    exit_code: int
    message: str  # what follows "kanipy: " on the last line
    fields: dict[str, Any] = field(default_factory=dict)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a cancelled CI job) unwinds like Ctrl-C, so every cleanup runs."""


def describe_failure(exc: BaseException) -> Failure:
    """The exit code, message and fields of an exception that ended a build."""
    if isinstance(exc, _Terminated):
        return Failure(143, "terminated (SIGTERM)", {"error": "terminated"})
    if isinstance(exc, KeyboardInterrupt):
        return Failure(130, "interrupted", {"error": "interrupted"})
    if isinstance(exc, KanipyError):
        fields: dict[str, Any] = {"error": type(exc).__name__}
        if isinstance(exc, DockerfileError):
            fields.update(file=exc.filename, line=exc.line, reason=exc.reason)
        if isinstance(exc, BuildError) and exc.exit_status is not None:
            fields["exit_status"] = exc.exit_status
        if isinstance(exc, RegistryError):
            fields.update(registry=exc.registry, http_status=exc.status, registry_code=exc.code)
        return Failure(exc.exit_code, f"error: {exc.message}", fields)
    return Failure(70, f"internal error (a bug in kanipy): {exc!r}; run again with --debug "
                       "for the traceback", {"error": "internal"})


def _step_fields(step: StepInfo) -> dict[str, Any]:
    return {"stage": step.stage_number, "stages": step.stage_count,
            "stage_name": step.stage_name, "step": step.step_number,
            "steps": step.step_count, "instruction": step.text, "line": step.line}


class ConsoleReporter:
    """Renders build progress on stderr: a line per step, step output, a summary.

    The plain log, for CI and ``--progress=plain``: transfers are not drawn
    (a terminal gets ``kanipy.console``'s live view). With ``json_lines``
    every line is one JSON object with typed fields (step, instruction,
    seconds, layer bytes, digest, error and exit code) beside a short
    ``msg``, so a log collector never sees a mix of formats and never has to
    parse text.
    """

    def __init__(self, stream: Any, json_lines: bool = False, *, timestamps: bool = False,
                 colour: bool = False) -> None:
        self.stream = stream
        self.json_lines = json_lines
        self.timestamps = timestamps
        self.colour = colour
        # The step under way in each stage (stages may be built at once, --jobs), for
        # a failure's fields; a stage pulling its base has None.
        self._running: dict[int, StepInfo | None] = {}
        self._stage_labels: dict[int, str] = {}
        self._lock = threading.Lock()  # one whole line at a time

    def _line(self, text: str) -> None:
        if self.timestamps:
            text = f"{_utc()} {text}"
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _record(self, event: str, msg: str, level: str = "info", **fields: Any) -> None:
        entry = {"time": _utc(), "level": level, "logger": "kanipy.build", "event": event,
                 "msg": msg, **fields}
        with self._lock:
            self.stream.write(json.dumps(entry) + "\n")
            self.stream.flush()

    def stage_started(self, number: int, count: int, name: str | None, base: str) -> None:
        label = f" {name}" if name else ""
        text = f"[{number}/{count}] STAGE{label} FROM {base}"
        self._running[number] = None
        self._stage_labels[number] = f"[{number}/{count}] STAGE{label}"
        if self.json_lines:
            self._record("stage", text, stage=number, stages=count, stage_name=name,
                         base=base)
        else:
            self._line(text)

    def step_started(self, step: StepInfo) -> None:
        self._running[step.stage_number] = step
        text = f"{step.label}: {step.text}"
        if self.json_lines:
            self._record("step", text, **_step_fields(step))
        else:
            self._line(text)

    def step_output(self, step: StepInfo, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\n")
        if self.json_lines:
            self._record("output", f"{step.label} | {text}", stage=step.stage_number,
                         step=step.step_number, output=text)
        else:
            self._line(f"{step.label}  | {text}")

    def step_finished(self, summary: StepSummary) -> None:
        self._running.pop(summary.step.stage_number, None)
        if self.json_lines:
            self._record("step_done", f"{summary.step.label}: done in {summary.seconds:.2f}s",
                         **_summary_fields(summary))
            return
        layer = f", layer {_human_size(summary.layer_size)}" if summary.layer_size else ""
        self._line(f"{summary.step.label}: done in {summary.seconds:.2f}s{layer}")

    def transfer(self, event: ProgressEvent) -> None:
        pass

    def stage_stopped(self, number: int) -> None:
        """A stage built at the same time as one that failed was stopped unfinished."""
        step = self._running.pop(number, None)
        if step is not None:
            text = f"{step.label}: stopped (another stage failed)"
            fields = _step_fields(step)
        else:
            text = f"{self._stage_labels.get(number, f'stage {number}')}: stopped (another " \
                   "stage failed)"
            fields = {"stage": number}
        if self.json_lines:
            self._record("stopped", text, **fields)
        else:
            self._line(text)

    def pushed(self, reference: str, digest: str) -> None:
        if self.json_lines:
            self._record("pushed", f"pushed {reference}@{digest}", reference=reference,
                         digest=digest)
        else:
            self._line(f"pushed {reference}@{digest}")

    def finished(self, summaries: list[StepSummary]) -> None:
        if not summaries:
            return
        total = sum(s.seconds for s in summaries)
        if self.json_lines:
            self._record("summary", f"{len(summaries)} steps in {total:.2f}s",
                         seconds=round(total, 3),
                         steps=[_summary_fields(s) for s in summaries])
            return
        texts = [f"{s.step.label}: {s.step.text}" for s in summaries]
        width = min(60, max(len(text) for text in texts))
        self._line(f"{'step'.ljust(width)}  {'seconds':>8}  {'layer':>9}")
        for s, text in zip(summaries, texts, strict=True):
            if len(text) > width:
                text = text[: width - 1] + "…"
            cached = "  cached" if s.cached else ""  # from the layer cache (issue 10)
            self._line(f"{text.ljust(width)}  {s.seconds:8.2f}  {_human_size(s.layer_size):>9}"
                       f"{cached}")
        self._line(f"{'total'.ljust(width)}  {total:8.2f}")

    def close(self) -> None:
        """Nothing to stop: every line is written as it comes."""

    def built(self, digest: str | None, pushed: list[str]) -> None:
        """The end of a successful build; only JSON logs get a line (stdout has the rest)."""
        if self.json_lines and digest:
            self._record("built", f"built {digest}", digest=digest, pushed=pushed)

    def failed(self, failure: Failure) -> None:
        """The last line of a failed build: ``kanipy: error: …``, or its JSON record."""
        fields = dict(failure.fields)
        # The step that failed: the one left under way (the stages stopped because
        # of it were reported stopped); after a signal, the first of those interrupted.
        running = next((step for step in self._running.values() if step is not None), None)
        if running is not None:
            step = _step_fields(running)
            # A Dockerfile error names its own line; keep it over the running step's.
            fields = {**step, **{k: v for k, v in fields.items() if v is not None}}
        if self.json_lines:
            self._record("error", failure.message.removeprefix("error: "), level="error",
                         exit_code=failure.exit_code, **fields)
            return
        if "traceback" in fields:
            self._line(fields["traceback"].rstrip("\n"))
        self._line(f"{_paint('kanipy:', 'ERROR', self.colour)} {failure.message}")


def _summary_fields(summary: StepSummary) -> dict[str, Any]:
    fields = _step_fields(summary.step)
    fields.update(seconds=round(summary.seconds, 3), layer_bytes=summary.layer_size,
                  layer_digest=str(summary.layer_digest) if summary.layer_digest else None,
                  cached=summary.cached)
    return fields


class _SignalStop:
    """SIGTERM and SIGINT stop a build within seconds, whatever it is doing (issue 11).

    The first signal raises in the main thread (``_Terminated`` for SIGTERM, a
    cancelled CI job; KeyboardInterrupt for SIGINT), so every cleanup runs: a
    RUN step's processes are ended, downloads are told to stop, the work
    directory is removed. Later signals are ignored while that happens, so a
    second Ctrl-C cannot cut a cleanup short. Once the failure is reported the
    process ends at once (``os._exit``), not held by a download thread blocked
    on a stalled socket; and should cleanup itself hang, a watchdog ends the
    process after ``grace`` seconds.
    """

    def __init__(self, grace: float = 15.0) -> None:
        self.grace = grace
        self.signum: int | None = None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.handle)
        signal.signal(signal.SIGINT, self.handle)

    @property
    def exit_code(self) -> int:
        return 143 if self.signum == signal.SIGTERM else 130

    def handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            log.debug("signal %d ignored: already stopping", signum)
            return
        self.signum = signum
        threading.Thread(target=self._watchdog, name="kanipy-stop-watchdog",
                         daemon=True).start()
        raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def _watchdog(self) -> None:
        time.sleep(self.grace)
        os.write(2, f"kanipy: cleanup did not finish within {self.grace:.0f}s of the "
                    "signal; exiting\n".encode())
        os._exit(self.exit_code)

    def exit(self, code: int) -> NoReturn:
        """Exit with ``code``; after a signal, without waiting for worker threads."""
        if self.signum is not None:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            logging.shutdown()
            os._exit(code)
        sys.exit(code)


def _kaniko_argv(args: list[str]) -> list[str]:
    """Kaniko's executor takes its flags with no command word; so does kanipy.

    A CI step written for Kaniko's image (``args: [--dockerfile=..., --destination=...]``,
    relying on the image's entry point) then runs ``kanipy build`` with them.
    """
    if args and args[0].startswith("-") and args[0] not in ("-h", "--help", "--version"):
        return ["build", *args]
    return args


def _asks_for_json(args: list[str]) -> bool:
    """Whether ``args`` ask for ``--log-format json`` (the last one given wins, as in click)."""
    fmt = None
    for i, arg in enumerate(args):
        if arg == "--log-format" and i + 1 < len(args):
            fmt = args[i + 1]
        elif arg.startswith("--log-format="):
            fmt = arg.split("=", 1)[1]
    return fmt == "json"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps KanipyError to its exit code, bugs to 70.

    ``kanipy build`` renders its own failures in the chosen log format; what
    reaches here failed before a log format was known (bad flags) or outside
    a build.
    """
    _pause_collector()
    args = _kaniko_argv(argv if argv is not None else sys.argv[1:])
    debug = any(a == "--debug" or (a.startswith("--debug=") and a[8:] not in
                                   ("0", "f", "F", "false", "False", "FALSE")) for a in args)
    stop = _SignalStop()
    stop.install()
    try:
        # Outside standalone mode click returns, not raises, a command's Exit code.
        code = cli.main(args=args, prog_name="kanipy", standalone_mode=False)
    except click.exceptions.Abort:
        # click turns an interrupt outside the command (while parsing flags) into Abort.
        if stop.signum is not None:
            failure = describe_failure(_Terminated() if stop.exit_code == 143
                                       else KeyboardInterrupt())
            click.echo(f"kanipy: {failure.message}", err=True)
            stop.exit(failure.exit_code)
        click.echo("kanipy: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        stop.exit(exc.exit_code)
    except click.ClickException as exc:
        if _asks_for_json(args):
            # A bad flag is the one error found before the log format is set up;
            # a log collector still gets one JSON record, not click's usage text.
            entry = {"time": _utc(), "level": "error", "logger": "kanipy.build",
                     "event": "error", "msg": exc.format_message(), "exit_code": 2,
                     "error": "UsageError"}
            click.echo(json.dumps(entry), err=True)
        else:
            exc.show()
        sys.exit(2)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the last line of defence
        failure = describe_failure(exc)
        if debug and failure.exit_code != 130 and failure.exit_code != 143:
            traceback.print_exc()
        click.echo(f"kanipy: {failure.message}", err=True)
        stop.exit(failure.exit_code)
    stop.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
