"""The ``actlab`` command: core verbs here, one subcommand group per method family (``actlab.<family>.cli``).

A family adds its verbs by defining ``register(subparsers)`` in ``actlab/<family>/cli.py``: every package of actlab
with a ``cli.py`` is listed, nothing else. Also runnable as ``python -m actlab`` (so torchrun works).
Errors: any exception prints ``error: <message>`` and exits 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from actlab import clikit

#: exit status for any error (argparse's own usage errors use 2 as well)
EXIT_ERROR = 2
#: exit status when stdout is a closed pipe (``actlab sites m | head -1``), as a shell reports SIGPIPE
EXIT_BROKEN_PIPE = 141
#: families listed first, in this order; any other actlab package with a cli.py follows alphabetically
_PREFERRED_ORDER = ("store", "stats", "dictionary", "steer", "patch", "attribute")


def family_cli_modules() -> list[str]:
    """``actlab.<package>.cli`` for every actlab package that has a cli.py (found on disk, nothing imported)."""
    root = Path(__file__).parent
    found = sorted(p.parent.name for p in root.glob("*/cli.py") if (p.parent / "__init__.py").exists())
    ordered = [f for f in _PREFERRED_ORDER if f in found] + [f for f in found if f not in _PREFERRED_ORDER]
    return [f"actlab.{f}.cli" for f in ordered]


def cmd_sites(a: argparse.Namespace) -> None:
    m = clikit.model_from_args(a)
    print(m)
    for s in m.sites:
        print(s)
    if a.modules:
        for p in m.module_paths():
            print(f"module:{p}")


def cmd_record(a: argparse.Namespace) -> None:
    from actlab.record_io import record_to_file

    texts = clikit.texts_from_args(a, "nothing to record")
    m = clikit.model_from_args(a)
    acts = record_to_file(m, texts, clikit.parse_sites(m, a.site), a.out, positions=clikit.parse_positions(a.positions),
                          dtype=a.store_dtype)
    for k, v in acts.items():
        print(f"{k}: {list(v.shape)} {v.dtype}")
    print(f"wrote {a.out}")


def cmd_generate(a: argparse.Namespace) -> None:
    from actlab import load_interventions

    ivs = load_interventions(a.intervention) if a.intervention else []
    m = clikit.model_from_args(a)
    with m.intervene(ivs):
        outs = m.generate(a.prompt, max_new_tokens=a.max_new_tokens, chat=a.chat)
    for p, o in zip(a.prompt, outs):
        print(f"### {p}\n{o}\n")


def cmd_demo(a: argparse.Namespace) -> None:
    from actlab.demo import run_demo

    run_demo(model_name=a.model, max_new_tokens=a.max_new_tokens)


def build_parser() -> argparse.ArgumentParser:
    ap = clikit.ArgumentParser(prog="actlab", description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    ap.add_argument("--debug", action="store_true", help="show the full traceback of an error (also anywhere on "
                                                         "the command line, or ACTLAB_DEBUG=1)")
    sub = clikit.subcommands(ap, dest="command", metavar="COMMAND")

    p = sub.add_parser("sites", help="list a model's canonical site names", description="List a model's sites.")
    clikit.add_model_args(p)
    p.add_argument("--modules", action="store_true", help="also list raw module:<path> sites")
    p.set_defaults(func=cmd_sites)

    p = sub.add_parser("record", help="record activations of texts at sites into a safetensors file",
                       description="Record activations of texts at sites into one safetensors file (+ input_ids, "
                                   "attention_mask); read it with actlab.record_io.load_recording.")
    clikit.add_model_args(p)
    clikit.add_text_args(p)
    p.add_argument("--site", action="append", required=True, help=clikit.SITES_HELP)
    p.add_argument("--positions", default="all", help=clikit.POSITIONS_HELP + " (default all)")
    p.add_argument("--store-dtype", "--save-dtype", dest="store_dtype", default=None,
                   help="stored dtype fp32/bf16/fp16 (default: the model dtype)")
    p.add_argument("--out", default="acts.safetensors", help="output file (default acts.safetensors)")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("generate", help="generate text, optionally with a saved interventions file",
                       description="Generate text from prompts, optionally replaying an interventions file.")
    clikit.add_model_args(p)
    p.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    p.add_argument("--intervention", help="interventions JSON written by `actlab steer apply` or "
                                          "actlab.save_interventions")
    p.add_argument("--max-new-tokens", type=int, default=40, help="tokens to generate (default 40)")
    p.add_argument("--chat", action="store_true", help="apply the model's chat template")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo", help="the main job: sites, records, residual norms, a steering vector on SmolLM2")
    p.add_argument("--model", default="smollm2-135m-instruct", help="model (default smollm2-135m-instruct)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens per completion (default 32)")
    p.set_defaults(func=cmd_demo)

    for name in family_cli_modules():
        importlib.import_module(name).register(sub)
    return ap


#: what library code raises on purpose, with a message meant for the user (shown without the type name)
_LIBRARY_ERRORS = (ValueError, KeyError, OSError, TypeError, ImportError, NotImplementedError)


def _message(e: BaseException) -> str:
    """The one-line text of an error: the library's message, prefixed by the type for unexpected errors."""
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        msg = e.args[0]
    else:
        msg = str(e)
    if isinstance(e, _LIBRARY_ERRORS) and not isinstance(e, IndexError) and msg:
        return msg
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _quiet_broken_pipe() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _fail(text: str, status: int = EXIT_ERROR) -> NoReturn:
    """Print ``text`` to stderr and exit with ``status``; the SystemExit carries the text, so an in-process caller
    (a test) can match it: ``pytest.raises(SystemExit, match=...)``, ``.code == 2``."""
    print(text, file=sys.stderr)
    err = SystemExit(text)
    err.code = status
    raise err


def main(argv: list[str] | None = None) -> None:
    """Run the ``actlab`` command line; the error policy for every command lives here."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("ACTLAB_DEBUG", "") not in ("", "0")
    argv = [x for x in argv if x != "--debug"]
    try:
        ap = build_parser()
        a = ap.parse_args(argv)
        logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(message)s")
        if not getattr(a, "func", None):
            ap.print_help()
            return
        a.func(a)
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
        sys.exit(EXIT_BROKEN_PIPE)
    except SystemExit as e:
        if isinstance(e.code, str) and not debug:   # a command's own SystemExit("error: ...") (being phased out)
            _fail(e.code if e.code.startswith("error:") else f"error: {e.code}")
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        _fail("error: interrupted", 130)
    except Exception as e:
        if debug:
            raise
        hint = "" if isinstance(e, _LIBRARY_ERRORS) and not isinstance(e, IndexError) else \
            " (run with --debug for the traceback)"
        _fail(f"error: {_message(e)}{hint}")


if __name__ == "__main__":
    main()
