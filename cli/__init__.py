"""The `modelstore` command. Each command lives in a module of its own; this one wires them up
and is the single place where errors become messages and exit codes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from modelstore.cli.add import add
from modelstore.cli.app import App, printable
from modelstore.cli.convert import convert
from modelstore.cli.fsck import fsck
from modelstore.cli.gc import gc
from modelstore.cli.importcmd import import_
from modelstore.cli.inspect import du, ls, show
from modelstore.cli.mount import mount, umount
from modelstore.cli.rm import rm
from modelstore.cli.scan import scan


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--home", type=click.Path(path_type=Path), envvar="MODELSTORE_HOME", default=None,
              help="Store folder [env MODELSTORE_HOME; default $XDG_DATA_HOME/modelstore, "
                   "i.e. ~/.local/share/modelstore].")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="modelstore")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, debug: bool) -> None:
    """Keep every local LLM once, in a content-addressed store, for every runtime.

    \b
    Typical use:
      modelstore add ./Llama-3.2-1B-Instruct-Q4_K_M.gguf --name llama3.2:1b-q4
      modelstore add Qwen/Qwen2.5-0.5B-Instruct
      modelstore ls
      modelstore du          # how much the dedup saves
    """
    from modelstore.store.home import default_home

    ctx.obj = App(home or default_home(), debug)


for command in (add, convert, ls, show, rm, du, gc, fsck, mount, umount, scan, import_):
    cli.add_command(command)


MODE_FLAGS = ("--copy", "--reflink", "--link", "--move")
_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click 8.2+; 8.1 prints the help itself


def _one_mode(args: list[str]) -> None:
    """`add` and `import` take one of the mode flags: click would let the last of several win
    (`--link --move` moved the file), which is never what was meant."""
    given = [a for a in args[: args.index("--")] if a in MODE_FLAGS] if "--" in args else \
        [a for a in args if a in MODE_FLAGS]
    if len(set(given)) > 1:
        raise click.UsageError(f"{' and '.join(dict.fromkeys(given))} contradict each other: choose one of "
                               f"{', '.join(MODE_FLAGS)}")


def run(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status; the one place errors become messages."""
    from modelstore.store.errors import ModelstoreError

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        _one_mode(args)
        rc = cli.main(args=args, prog_name="modelstore", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("modelstore: error: interrupted; nothing was committed (run the same command again)", err=True)
        return 130
    except _NO_ARGS as exc:  # `modelstore` alone: the help, as --help shows it
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
        return 0
    except click.UsageError as exc:  # one line, like every other error
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else " (see `modelstore --help`)"
        click.echo(f"modelstore: error: {' '.join(exc.format_message().split())}{hint}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except ModelstoreError as exc:
        if debug:
            raise
        click.echo(f"modelstore: error: {printable(str(exc))}", err=True)  # names from files: escaped
        return exc.exit_code
    except OSError as exc:  # permissions, a vanished file, a full disk outside the store's own checks
        if debug:
            raise
        click.echo(f"modelstore: error: {printable(str(exc))}", err=True)
        return 1


def main() -> None:
    sys.exit(run())
