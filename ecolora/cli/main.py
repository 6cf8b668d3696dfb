"""The `ecolora` command. Errors a user can fix print one line and exit 2, never a traceback."""

from __future__ import annotations

import sys

import typer

from ecolora.cli import run as run_cmd
from ecolora.cli.compare import compare
from ecolora.cli.estimate import HELP as ESTIMATE_HELP
from ecolora.cli.estimate import estimate
from ecolora.cli.inspect import inspect
from ecolora.cli.matrix import matrix
from ecolora.cli.sweep import sweep
from ecolora.config import knob_table
from ecolora.errors import EcoloraError

# Plain help: with rich installed, typer escapes the "[default: ...]" suffix for rich markup even
# when rich_markup_mode is None, and the help then shows a literal "\[default: ...]".
typer.core.HAS_RICH = False

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Communication-efficient federated LoRA fine-tuning (EcoLoRA, FedIT).")
app.command("run", epilog=run_cmd.knobs_help(), help="Run one federated fine-tuning job.")(
    run_cmd.run
)
app.command("inspect")(inspect)
app.command("compare")(compare)
app.command("sweep")(sweep)
app.command("matrix")(matrix)
app.command("estimate", help=ESTIMATE_HELP, epilog=run_cmd.knobs_help())(estimate)


@app.command("knobs")
def knobs() -> None:
    """List every configuration knob with its default ([INF §n]: a reconstructed default,
    n being the section of docs/spec.md)."""
    for key, default, text in knob_table():
        typer.echo(f"{key:32s} {default:18s} {text}")


def main() -> None:
    try:
        code = app(standalone_mode=False)  # typer turns Ctrl-C into a returned 130
        if isinstance(code, int) and code:
            if code in (130, 143):  # Ctrl-C, or SIGTERM during `ecolora run` (cli/run.py)
                typer.echo("interrupted" if code == 130 else "terminated (SIGTERM)", err=True)
            sys.exit(code)
    except EcoloraError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):  # usage errors too: one line, not a usage
            text = " ".join(exc.format_message().split())
            hint = " (see --help)" if isinstance(exc, click.UsageError) else ""
            typer.echo(f"error: {text}{hint}", err=True)
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
