"""The command line: the only place that prints, exits and configures logging."""

from __future__ import annotations

import logging
import sys
import traceback

import click

from kanipy import __version__
from kanipy.errors import KanipyError

log = logging.getLogger(__name__)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """kanipy builds container images from a Dockerfile, with no Docker daemon.

    It pulls the base image, runs each instruction in a directory it owns,
    turns each step's changes into a layer and pushes the image.
    """


@cli.command()
def version() -> None:
    """Print kanipy's version."""
    click.echo(__version__)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps KanipyError to its exit code, bugs to 70."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="kanipy", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("kanipy: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except KanipyError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"kanipy: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("kanipy: interrupted", err=True)
        sys.exit(130)
    except Exception:  # noqa: BLE001 - the last line of defence: a bug
        if debug:
            traceback.print_exc()
        else:
            click.echo(
                "kanipy: internal error (a bug in kanipy); run again with --debug for the "
                f"traceback: {sys.exc_info()[1]!r}",
                err=True,
            )
        sys.exit(70)
    sys.exit(0)


if __name__ == "__main__":
    main()
