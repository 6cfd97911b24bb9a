"""The ``varedit`` command line: a thin shell over the Python API.

Every command lives in its own module under ``varedit/commands/`` (each defines ``register(main)``);
this module holds the group, logging and the error policy: expected failures (bad input, missing
weights, limits) are one line (``Error: ...``) with exit status 1, never a traceback (``--debug``
shows one).
"""
from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys
from typing import Any

# OpenMP threads that spin while they wait make a short command many times slower on a machine whose
# cores are shared (docs/decisions.md, "OpenMP threads wait passively"); set before torch loads it,
# and only when the user has not chosen
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click

from . import __version__
from .extensions import PluginCommandsMixin

log = logging.getLogger("varedit")


class VareditGroup(PluginCommandsMixin, click.Group):
    """Turns expected failures (bad input, missing weights) into one-line errors with exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # the reader went away (`varedit models list | head`): nothing more can be said, and nothing failed
            # here; point stdout at devnull so that the interpreter's final flush does not complain again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(141) from None
        except ImportError as e:  # an optional package: one line naming the extra that brings it
            if ctx.obj and ctx.obj.get("debug"):
                raise
            from ._optional import hint_for_import_error
            raise click.ClickException(hint_for_import_error(e)) from None
        except (ValueError, TypeError, OSError, RuntimeError, MemoryError, KeyError) as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            msg = " ".join(str(e).split()) if str(e).strip() else type(e).__name__
            if isinstance(e, MemoryError):
                msg = f"out of memory ({msg}): ask for less (smaller images, fewer candidates or a smaller batch)"
            elif isinstance(e, (TypeError, KeyError)):  # not an input error: a bug, but still one line
                msg = f"internal error ({type(e).__name__}: {msg}); run with --debug for the traceback"
            raise click.ClickException(msg) from None


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@click.group(cls=VareditGroup)
@click.version_option(__version__, prog_name="varedit")
@click.option("-v", "--verbose", count=True, help="-v: info, -vv: debug logging.")
@click.option("-q", "--quiet", is_flag=True,
              help="No notes (such as the demo model's) and no progress bars on stderr; results and errors "
                   "are still shown.")
@click.option("--debug", is_flag=True, hidden=True, help="Show tracebacks.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool, debug: bool) -> None:
    """varedit: image generation and editing with VAR (next-scale prediction).

    Editing, generate, export and serve use --model, else $VAREDIT_MODEL, else the bundled demo
    (synthetic shapes at 128 px). `varedit models list` shows the official models and their sizes,
    `varedit models pull NAME` downloads one, `varedit doctor` says what works here."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["quiet"] = quiet
    _setup_logging(verbose)


def _register_subcommands() -> None:
    """Each area keeps its commands in its own module (varedit/commands/*.py, click only at import time,
    so `varedit --help` stays fast)."""
    from . import commands
    for m in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{commands.__name__}.{m.name}")
        if hasattr(mod, "register"):
            mod.register(main)


_register_subcommands()

# commands that write their outputs (atomically) and hold no workers or servers when they return
FAST_EXIT_COMMANDS = frozenset({"generate", "inpaint", "outpaint", "edit", "upscale", "remove"})


def _command_name(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def run() -> None:
    """The console entry point: ``main``, then, for the editing commands, a fast exit.

    Tearing down torch's modules when the interpreter exits takes a noticeable part of a short edit from
    the shell (measured: docs/performance.md, "One command, end to end"). When an editing command has
    returned, every output is written and closed (atomic replace), so the process flushes its streams and
    logging and leaves with ``os._exit`` and the same status. Other commands (training with data workers, the server, torchrun ranks) and
    processes that never imported torch exit normally.
    """
    try:
        main()  # standalone mode: always ends in SystemExit
    except SystemExit as e:
        if not ("torch" in sys.modules and not os.environ.get("WORLD_SIZE")
                and _command_name(sys.argv[1:]) in FAST_EXIT_COMMANDS and isinstance(e.code, (int, type(None)))):
            raise
        code = e.code or 0
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be said
                pass
        logging.shutdown()
        os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
