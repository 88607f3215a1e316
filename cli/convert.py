"""`modelstore convert`, and the conversion summary `add` and `import` print."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from modelstore.cli.app import App, emit_json, human_bytes, pass_app

if TYPE_CHECKING:  # the store's modules load lmdb and gguf: only inside the commands
    from modelstore.converters.planner import ConversionResult
    from modelstore.store import Store

GGUF_TYPES = ["F16", "BF16", "F32", "Q8_0", "Q4_0"]
GGUF_TYPE_OPTION = click.option(
    "--gguf-type", type=click.Choice(GGUF_TYPES, case_sensitive=False), default="F16",
    show_default=True, help="Type of the GGUF made from a safetensors model (norms stay F32).")

EPILOG = """\b
Examples:
  modelstore convert my-finetune                  # plan its GGUF (F16) for Ollama, LM Studio, llama.cpp
  modelstore convert my-finetune --gguf-type Q8_0
  modelstore convert --all                        # models added with --no-convert, or whose planning stopped

\b
`add` plans conversions by itself; this command re-plans them. Planning reads headers and small
files only, stores the new headers, and streams each converted file once through SHA-256 (Ollama
and the Hub name files by it) without keeping the bytes. Tensors are converted when a runtime
first reads them, then kept in the derived cache (<home>/derived, see `derived_cache` in
<home>/config.toml).

Covered: llama (Llama 3.1+ rope scaling included), mistral, qwen2, qwen3, phi3 and gemma, with a
tokenizer.json or a SentencePiece BPE tokenizer.model. A model outside that keeps the views of its
own format, and `modelstore show NAME` says why it is absent from the others.
"""


def plan_committed(app: App, store: Store, names: list[str], gguf_type: str, no_convert: bool,
                   ) -> tuple[list[ConversionResult], list[str], Exception | None]:
    """Plan the conversions of models `add` or `import` has just committed: (results, warnings, and
    the error that stopped planning). A model another command removed or changed meanwhile is a
    warning. A full disk or Ctrl-C stops planning, but what was committed stays: the error says so,
    for the caller to raise once its report is out."""
    from modelstore.converters.planner import plan_conversions, skip_conversions
    from modelstore.store.errors import Interrupted, NotFound, OutOfSpace

    results: list[ConversionResult] = []
    warnings: list[str] = []
    for i, name in enumerate(names):
        try:
            if no_convert:
                skip_conversions(store, name)
            else:
                results.append(plan_conversions(store, name, gguf_type.upper(), progress=app.progress,
                                                on_wait=app.waiting))
        except NotFound as exc:
            warnings.append(f"no renditions planned for {name}: {exc}")
        except (OutOfSpace, KeyboardInterrupt) as exc:
            left = names[i:]
            remedy = f"modelstore convert {left[0]}" if len(left) == 1 else "modelstore convert --all"
            which = ", ".join(left[:3]) + (", ..." if len(left) > 3 else "")
            unplanned = f"{which} {'is' if len(left) == 1 else 'are'} committed, but without renditions for the other runtimes"
            if isinstance(exc, OutOfSpace):
                return results, warnings, OutOfSpace(f"no space left to plan renditions: {unplanned}; free some "
                                                     f"space and run `{remedy}`")
            return results, warnings, Interrupted(f"interrupted: {unplanned}; run `{remedy}`")
    return results, warnings, None


def report(result: object) -> None:
    from modelstore.converters.planner import ConversionResult

    assert isinstance(result, ConversionResult)
    for plan in result.plans:
        size = sum(result.files[p].size for p in plan["files"])
        click.echo(f"  planned {plan['target']} rendition ({human_bytes(size)}): {plan['how']}")
    for target, reason in sorted(result.unsupported.items()):
        click.echo(f"  no {target} rendition: {reason}")


def _planned_type(store: object, name: str) -> str:
    """The GGUF type the model's conversions were planned with, so that re-planning (as fsck and
    the mount advise after an upgrade) does not change them; F16 for a model never planned."""
    with store.catalog.read() as r:  # type: ignore[attr-defined]
        entry = r.conversions(name) or {}
    planned = entry.get("gguf_type")
    return planned if planned in GGUF_TYPES else "F16"


@click.command(epilog=EPILOG)
@click.argument("names", nargs=-1)
@click.option("--all", "all_models", is_flag=True, help="Every model in the store.")
@click.option("--gguf-type", type=click.Choice(GGUF_TYPES, case_sensitive=False), default=None,
              help="Type of the GGUF made from a safetensors model (norms stay F32). "
                   "[default: the type it was planned with before, else F16]")
@click.option("--json", "as_json", is_flag=True, help="Print what was planned as JSON.")
@pass_app
def convert(app: App, names: tuple[str, ...], all_models: bool, gguf_type: str | None, as_json: bool) -> None:
    """Plan the converted renditions of stored models (GGUF <-> safetensors, split GGUF -> one file)."""
    from modelstore.converters.planner import plan_conversions
    from modelstore.store.errors import NotFound, UsageError

    if bool(names) == all_models:
        raise UsageError("give model names or --all, not both" if names else "name the models to convert, or pass --all")
    results = []
    with app.store() as store:
        targets = [m.name for m in store.models()] if all_models else list(names)
        try:
            for name in targets:
                chosen = gguf_type.upper() if gguf_type else _planned_type(store, name)
                try:
                    results.append(plan_conversions(store, name, chosen, progress=app.progress, force=True,
                                                    on_wait=app.waiting))
                except NotFound as exc:
                    if not all_models:
                        raise
                    click.echo(f"warning: {exc}", err=True)  # --all: one removed meanwhile, the rest go on
                    continue
                if gguf_type and not all_models and store.model(name).metadata.get("format") == "gguf":
                    click.echo(f"warning: --gguf-type is the type of the GGUF made from a safetensors model; "
                               f"{name} is a GGUF model, so it changes nothing", err=True)
                if not as_json:
                    click.echo(name)
                    report(results[-1])
        finally:
            app.close_bars()
    if as_json:
        emit_json([r.to_json() for r in results])
