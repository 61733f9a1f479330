"""How every command line of the project ends on a known failure: one line and an exit code,
never a traceback."""

from __future__ import annotations

import functools
import sys

import click


def one_line_errors(prog: str, errors: tuple, *, interrupted: str):
    """Decorator for a click command: `errors` (and permission errors) print `prog: error: ...`
    and exit 2; Ctrl-C prints `prog: <interrupted>` and exits 130."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                return fn(*a, **kw)
            except errors as e:
                click.echo(f"{prog}: error: {e}", err=True)
                sys.exit(2)
            except PermissionError as e:
                click.echo(f"{prog}: error: cannot write {e.filename}: permission denied; "
                           "choose another --out folder", err=True)
                sys.exit(2)
            except KeyboardInterrupt:
                click.echo(f"{prog}: {interrupted}", err=True)
                sys.exit(130)

        return wrapper

    return decorate
