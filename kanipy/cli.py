"""The command line: the only place that prints, exits and configures logging.

Flag names follow Kaniko's executor, so a CI step can switch by changing the
image and the command name. stdout carries only machine output (the pushed
``name@digest`` lines); everything else goes to stderr.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import click

from kanipy import __version__
from kanipy.errors import KanipyError, UsageError
from kanipy.executor.options import BuildOptions, parse_key_value, parse_secret
from kanipy.executor.progress import StepInfo, StepSummary
from kanipy.http import redact_urls_in
from kanipy.oci.descriptor import Platform
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


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
            }
        )


def configure_logging(verbosity: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
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


def _multi(*names: str, **kw: Any) -> Any:
    return click.option(*names, multiple=True, **kw)


# Kaniko executor flags that kanipy accepts so a pipeline can switch unchanged,
# but that change nothing in the image: each gets one log line saying why.
# (flag, takes a value, note)
_KANIKO_COMPAT: tuple[tuple[str, bool, str], ...] = (
    ("--cache", False, "kanipy has no layer cache yet: every step runs, and the image is the "
                       "same as with a cache"),
    ("--cache-repo", True, "kanipy has no layer cache yet; --cache-repo is not used"),
    ("--cache-ttl", True, "kanipy has no layer cache yet; --cache-ttl is not used"),
    ("--cache-copy-layers", False, "kanipy has no layer cache yet"),
    ("--cache-run-layers", False, "kanipy has no layer cache yet"),
    ("--cleanup", False, "kanipy always removes its work directory after a build"),
    ("--use-new-run", False, "kanipy always snapshots by metadata (the new-run behaviour)"),
    ("--snapshot-mode", True, "kanipy always compares full lstat metadata, which finds every "
                              "change 'full' would, without reading file contents"),
    ("--skip-unused-stages", False, "kanipy always builds only the stages the target needs"),
    ("--force", False, "kanipy builds in its own directory and needs no container check"),
    ("--ignore-path", True, "kanipy never builds over / , so no host path can reach an image"),
    ("--ignore-var-run", False, "kanipy never builds over / , so the host's /var/run never "
                                "reaches an image"),
)


def _compat_dest(flag: str) -> str:
    return "compat_" + flag.lstrip("-").replace("-", "_")


def _kaniko_compat(func: Any) -> Any:
    for flag, takes_value, _ in _KANIKO_COMPAT:
        if takes_value:
            func = click.option(flag, _compat_dest(flag), multiple=True, hidden=True)(func)
        else:
            # Kaniko's booleans are written both as --flag and --flag=true|false.
            func = click.option(flag, _compat_dest(flag), is_flag=False, flag_value="true",
                                default=None, hidden=True,
                                type=click.Choice(["true", "false"]))(func)
    return func


def _note_compat_flags(kw: dict[str, Any]) -> None:
    for flag, takes_value, note in _KANIKO_COMPAT:
        value = kw.pop(_compat_dest(flag), None)
        if (takes_value and value) or value == "true":
            log.warning("%s is accepted for Kaniko compatibility and has no effect: %s",
                        flag, note)


@cli.command(context_settings={"max_content_width": 100})
@click.option("-f", "--dockerfile", default="Dockerfile", show_default=True,
              help="Path to the Dockerfile: absolute, or relative to the context.")
@click.option("-c", "--context", "context", default=".", show_default=True,
              help="Build context: a directory, a .tar/.tar.gz file, tar://- (stdin), "
                   "git://… or https://… .")
@click.option("--context-sub-path", default=None, help="Subdirectory of the context to build in.")
@_multi("-d", "--destination", "destinations", metavar="REF",
        help="Image reference to push to (repeatable).")
@_multi("--build-arg", "build_args", metavar="KEY[=VALUE]",
        help="Set a declared ARG (repeatable); KEY alone takes the value from the environment.")
@click.option("--target", default=None, help="Build up to this stage (name or index).")
@_multi("--label", "labels", metavar="KEY=VALUE", help="Add a label to the image (repeatable).")
@click.option("--no-push", is_flag=True, help="Build but push nothing.")
@click.option("--dry-run", is_flag=True,
              help="Print the build plan (stages and expanded instructions) and exit.")
@click.option("--insecure", is_flag=True, help="Push to registries over plain HTTP.")
@click.option("--insecure-pull", is_flag=True, help="Pull from registries over plain HTTP.")
@_multi("--insecure-registry", "insecure_registries", metavar="HOST[:PORT]",
        help="Use plain HTTP for this registry (repeatable).")
@click.option("--skip-tls-verify", is_flag=True, help="Do not verify TLS certificates on push.")
@click.option("--skip-tls-verify-pull", is_flag=True,
              help="Do not verify TLS certificates on pull.")
@_multi("--skip-tls-verify-registry", "skip_tls_verify_registries", metavar="HOST[:PORT]",
        help="Do not verify TLS certificates of this registry (repeatable).")
@_multi("--registry-certificate", "registry_certificates", metavar="HOST=CA.pem",
        help="Trust this CA certificate for a registry (repeatable).")
@_multi("--registry-mirror", "registry_mirrors", metavar="HOST",
        help="Mirror for docker.io images, tried in order before docker.io (repeatable).")
@click.option("--push-retry", default=3, show_default=True, type=click.IntRange(0, 20),
              help="Retries for a failed push request.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Blob store for pulled base layers, reused across builds.")
@click.option("--kanipy-dir", type=click.Path(path_type=Path), default=None,
              help="Work directory (the root filesystem is unpacked under it).")
@click.option("--custom-platform", default=None, metavar="OS/ARCH[/VARIANT]",
              help="Platform of the image to build (default: this machine's).")
@click.option("--image-format", type=click.Choice(["oci", "docker"]), default=None,
              help="Manifest format (default: the base image's; OCI for FROM scratch).")
@click.option("--compression", type=click.Choice(["gzip", "zstd"]), default="gzip",
              show_default=True, help="Layer compression.")
@click.option("--compression-level", type=click.IntRange(1, 22), default=None,
              help="Compression level: gzip 1-9 (mapped onto ISA-L's 0-3), zstd 1-22.")
@click.option("--reproducible", is_flag=True,
              help="Strip timestamps (SOURCE_DATE_EPOCH, else the epoch) for identical digests.")
@click.option("--single-snapshot", is_flag=True, help="One layer for the whole final stage.")
@click.option("--tar-path", type=click.Path(path_type=Path), default=None,
              help="Also write the image as a `docker load` tarball here.")
@click.option("--oci-layout-path", type=click.Path(path_type=Path), default=None,
              help="Also write the image into this OCI image layout directory.")
@click.option("--digest-file", type=click.Path(path_type=Path), default=None,
              help="Write the image digest here.")
@click.option("--image-name-with-digest-file", type=click.Path(path_type=Path), default=None,
              help="Write NAME@DIGEST for each destination here.")
@click.option("--image-name-tag-with-digest-file", type=click.Path(path_type=Path), default=None,
              help="Write NAME:TAG@DIGEST for each destination here.")
@_multi("--secret", "secrets", metavar="id=NAME,src=FILE|env=VAR",
        help="A build secret for RUN --mount=type=secret (repeatable).")
@click.option("-v", "--verbosity", type=click.Choice(list(_VERBOSITY)), default="info",
              show_default=True, help="Log level.")
@click.option("--log-format", type=click.Choice(["text", "color", "json"]), default="text",
              show_default=True, help="Log line format.")
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
@_kaniko_compat
def build(**kw: Any) -> None:
    """Build an image from a Dockerfile and push it.

    \b
    kanipy build -f Dockerfile -c /workspace/src -d registry.example.com/app:1.0
    """
    configure_logging(kw["verbosity"], kw["log_format"])
    _note_compat_flags(kw)
    options = options_from_flags(kw)
    if not options.destinations and not options.no_push and not options.dry_run \
            and not (options.tar_path or options.oci_layout_path):
        raise UsageError(
            "no --destination given: name where to push (-d registry/repo:tag), "
            "or pass --no-push to only build"
        )
    from kanipy.executor.engine import run_build

    reporter = ConsoleReporter(sys.stderr, json_lines=kw["log_format"] == "json")
    result = run_build(options, reporter)
    for line in result.stdout_lines:
        click.echo(line)


def _human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


class ConsoleReporter:
    """Renders build progress on stderr: a line per step, step output, a summary.

    On a terminal, pulls and pushes draw one live progress line that is
    overwritten in place; elsewhere (CI logs) transfers are not drawn at all.
    With ``json_lines`` every line is a JSON object like the log records, so a
    log collector never sees a mix of formats.
    """

    def __init__(self, stream: Any, json_lines: bool = False) -> None:
        self.stream = stream
        self.json_lines = json_lines
        self.tty = not json_lines and bool(getattr(stream, "isatty", lambda: False)())
        self._live = False
        self._transfers: dict[str, tuple[int, int | None]] = {}

    def _line(self, text: str) -> None:
        if self._live:
            self.stream.write("\r\x1b[K")
            self._live = False
            # A live line covers one run of transfers (the pull before a stage,
            # the push at the end); the next one counts afresh.
            self._transfers.clear()
        if self.json_lines:
            text = json.dumps({
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "level": "info", "logger": "kanipy.executor", "msg": text,
            })
        self.stream.write(text + "\n")
        self.stream.flush()

    def stage_started(self, number: int, count: int, name: str | None, base: str) -> None:
        label = f" {name}" if name else ""
        self._line(f"[{number}/{count}] STAGE{label} FROM {base}")

    def step_started(self, step: StepInfo) -> None:
        self._line(f"{step.label}: {redact_urls_in(step.text)}")

    def step_output(self, step: StepInfo, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\n")
        self._line(f"{step.label}  | {text}")

    def step_finished(self, summary: StepSummary) -> None:
        layer = f", layer {_human_size(summary.layer_size)}" if summary.layer_size else ""
        self._line(f"{summary.step.label}: done in {summary.seconds:.2f}s{layer}")

    def transfer(self, event: ProgressEvent) -> None:
        if not self.tty:
            return
        self._transfers[str(event.digest)] = (event.done, event.total)
        done = sum(d for d, _ in self._transfers.values())
        total = sum(t or 0 for _, t in self._transfers.values())
        self.stream.write(
            f"\r\x1b[K{event.phase} {len(self._transfers)} blob(s): "
            f"{_human_size(done)} / {_human_size(total)}"
        )
        self.stream.flush()
        self._live = True

    def pushed(self, reference: str, digest: str) -> None:
        self._transfers.clear()
        self._line(f"pushed {reference}@{digest}")

    def finished(self, summaries: list[StepSummary]) -> None:
        if not summaries:
            return
        texts = [f"{s.step.label}: {redact_urls_in(s.step.text)}" for s in summaries]
        width = min(60, max(len(text) for text in texts))
        self._line(f"{'step'.ljust(width)}  {'seconds':>8}  {'layer':>9}")
        for s, text in zip(summaries, texts, strict=True):
            if len(text) > width:
                text = text[: width - 1] + "…"
            self._line(f"{text.ljust(width)}  {s.seconds:8.2f}  {_human_size(s.layer_size):>9}")
        total = sum(s.seconds for s in summaries)
        self._line(f"{'total'.ljust(width)}  {total:8.2f}")


def options_from_flags(kw: dict[str, Any]) -> BuildOptions:
    """Validate flag values into BuildOptions (exit 2 on anything malformed)."""
    platform = None
    if kw["custom_platform"]:
        try:
            platform = Platform.parse(kw["custom_platform"])
        except ValueError as exc:
            raise UsageError(f"--custom-platform: {exc}") from None
    certs = []
    for text in kw["registry_certificates"]:
        host, value = parse_key_value(text, "--registry-certificate")
        certs.append((host, value or ""))
    return BuildOptions(
        dockerfile=kw["dockerfile"],
        context=kw["context"],
        context_sub_path=kw["context_sub_path"],
        destinations=tuple(kw["destinations"]),
        build_args=tuple(
            parse_key_value(a, "--build-arg", value_optional=True) for a in kw["build_args"]
        ),
        target=kw["target"],
        labels=tuple(
            (k, v or "") for k, v in (parse_key_value(a, "--label") for a in kw["labels"])
        ),
        no_push=kw["no_push"],
        dry_run=kw["dry_run"],
        insecure=kw["insecure"],
        insecure_pull=kw["insecure_pull"],
        insecure_registries=tuple(kw["insecure_registries"]),
        skip_tls_verify=kw["skip_tls_verify"],
        skip_tls_verify_pull=kw["skip_tls_verify_pull"],
        skip_tls_verify_registries=tuple(kw["skip_tls_verify_registries"]),
        registry_certificates=tuple(certs),
        registry_mirrors=tuple(kw["registry_mirrors"]),
        push_retry=kw["push_retry"],
        cache_dir=kw["cache_dir"],
        kanipy_dir=kw["kanipy_dir"],
        custom_platform=platform,
        image_format=kw["image_format"],
        compression=kw["compression"],
        compression_level=kw["compression_level"],
        reproducible=kw["reproducible"],
        single_snapshot=kw["single_snapshot"],
        tar_path=kw["tar_path"],
        oci_layout_path=kw["oci_layout_path"],
        digest_file=kw["digest_file"],
        image_name_with_digest_file=kw["image_name_with_digest_file"],
        image_name_tag_with_digest_file=kw["image_name_tag_with_digest_file"],
        secrets=tuple(parse_secret(s) for s in kw["secrets"]),
    )


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a cancelled CI job) unwinds like Ctrl-C, so every cleanup runs."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps KanipyError to its exit code, bugs to 70."""
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        cli.main(args=args, prog_name="kanipy", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("kanipy: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except KanipyError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"kanipy: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except _Terminated:
        click.echo("kanipy: terminated (SIGTERM)", err=True)
        sys.exit(143)
    except KeyboardInterrupt:
        click.echo("kanipy: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug
        if debug:
            traceback.print_exc()
        click.echo(
            f"kanipy: internal error (a bug in kanipy): {exc!r}; run again with --debug for "
            "the traceback",
            err=True,
        )
        sys.exit(70)
    sys.exit(0)


if __name__ == "__main__":
    main()
