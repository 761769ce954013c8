"""One CLI kit for every ``cli.py``: the model flags, flags derived from config dataclasses, one list syntax, one
position syntax, one site syntax.

argparse subparsers stay; each command's parser is a :class:`ArgumentParser` (simple-parsing's, with kebab-case
flags), so ``add_config`` turns a documented dataclass into flags (name, type, default, the field's docstring as
help) and ``config_from_args`` hands back the instance. The error policy lives once, in ``actlab.cli.main``:
commands raise ordinary exceptions with clear messages and never exit themselves.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import simple_parsing
from simple_parsing.help_formatter import SimpleHelpFormatter

from actlab.core.positions import POSITIONS_HELP, PositionSpec, parse_positions  # noqa: F401  (the kit's syntax)

if TYPE_CHECKING:
    from actlab.models import Model

#: what :func:`parse_positions` returns: a selector ``model.record(..., positions=...)`` takes

MODEL_DTYPES = ("fp32", "bf16", "fp16")
SITES_HELP = "site names, comma separated or repeated; '*' expands over layers (blocks.*.resid_post)"


_LONE_PERCENT = re.compile(r"%%|%(?!\()")


class HelpFormatter(SimpleHelpFormatter):
    """simple-parsing's help (type names as metavars, defaults shown, docstrings kept), with plain positional names
    and no "(default: ...)" where the help already says its default or there is none to say."""

    def _get_default_metavar_for_positional(self, action: argparse.Action) -> str:
        return action.dest

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        if action.type is None:
            return action.dest.upper()
        return super()._get_default_metavar_for_optional(action)

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if action.type is None or action.choices:   # plain flags: argparse's NAME / {a,b} metavars
            return argparse.HelpFormatter._format_args(self, action, default_metavar)
        return super()._format_args(action, default_metavar)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if ("default" in text.lower() or action.default in (None, argparse.SUPPRESS, False)
                or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))):
            help_ = argparse.HelpFormatter._get_help_string(self, action).replace("<__TEMP__>", "")
        else:
            help_ = super()._get_help_string(action)
        # a docstring such as "the 95% interval" is help text, not a format: escape a lone %, keep %(name)s and %%
        return None if help_ is None else _LONE_PERCENT.sub(lambda m: "%%" if m.group(0) == "%" else m.group(0), help_)


class ArgumentParser(simple_parsing.ArgumentParser):
    """The parser of every actlab command: simple-parsing with ``--kebab-case`` flags and actlab's help format."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("add_option_string_dash_variants", simple_parsing.DashVariant.DASH)
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("add_config_path_arg", False)
        super().__init__(*args, **kwargs)
        # values that start with '-' but are positions, not flags: -1, -0.5, -3: (slice), -3:-1, ::-1 stays fine
        self._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\d*:[-\d:]*$")


def subcommands(parser: argparse.ArgumentParser, **kwargs: Any) -> argparse._SubParsersAction:
    """``parser.add_subparsers`` whose parsers are :class:`ArgumentParser` (so they take ``add_config``)."""
    kwargs.setdefault("parser_class", ArgumentParser)
    return parser.add_subparsers(**kwargs)


# -- model ------------------------------------------------------------------------------------------------------
def add_model_args(parser: argparse.ArgumentParser, *, positional: bool = True, required: bool = True) -> None:
    """The one model group: ``model`` (positional, or ``--model`` with ``positional=False``), ``--dtype`` (the MODEL
    dtype everywhere; a storage dtype is ``--store-dtype``) and ``--device``."""
    g = parser.add_argument_group("model")
    what = "bundled name (smollm2-135m-instruct, minilm-l6, tiny-*), HF folder or .gguf"
    if positional:
        g.add_argument("model", help=what)
    else:
        g.add_argument("--model", required=required, default=None, help=what)
    g.add_argument("--dtype", default="fp32", choices=MODEL_DTYPES, help="model dtype (default fp32)")
    g.add_argument("--device", default=None, help="torch device (default cpu)")


def model_from_args(args: argparse.Namespace) -> Model:
    """Load the model that :func:`add_model_args` flags name."""
    from actlab import load_model

    if not getattr(args, "model", None):
        raise ValueError("this command needs a model: give --model NAME (bundled name, HF folder or .gguf)")
    return load_model(args.model, dtype=args.dtype, device=args.device)


# -- configs ------------------------------------------------------------------------------------------------------
def add_config(parser: argparse.ArgumentParser, config_class: type, dest: str = "cfg", *,
               default: Any = None) -> None:
    """One ``--kebab-case`` flag per field of the dataclass ``config_class`` (type, default, the field's docstring as
    help); ``default`` (an instance) overrides the class defaults. Read it back with :func:`config_from_args`."""
    if not dataclasses.is_dataclass(config_class) or not isinstance(config_class, type):
        raise TypeError(f"add_config needs a dataclass type; got {config_class!r}")
    if not isinstance(parser, simple_parsing.ArgumentParser):
        raise TypeError(f"add_config needs an actlab.clikit.ArgumentParser (parser {parser.prog!r} is a "
                        f"{type(parser).__name__}); create subcommands with clikit.subcommands(...) or register "
                        f"under actlab.cli's subparsers")
    parser.add_arguments(config_class, dest=dest, default=default)


def config_from_args(args: argparse.Namespace, dest: str = "cfg") -> Any:
    """The config instance :func:`add_config` parsed into ``args`` (its ``__post_init__`` checks have run)."""
    cfg = getattr(args, dest, None)
    if cfg is None or not dataclasses.is_dataclass(cfg):
        raise KeyError(f"no config parsed under {dest!r}: call clikit.add_config(parser, Class, dest={dest!r})")
    return cfg


# -- list, position and site syntax --------------------------------------------------------------------------------
def add_text_args(parser: argparse.ArgumentParser) -> None:
    """The input-text flags: ``--text`` (repeatable) and ``--file`` (UTF-8, one input per line, or .jsonl)."""
    parser.add_argument("--text", action="append", help="a text (repeatable)")
    parser.add_argument("--file", help="a UTF-8 text file, one input per line (or .jsonl with a text field)")


def texts_from_args(args: argparse.Namespace, what: str = "nothing to do") -> list[str]:
    """The ``--text`` values then the ``--file`` lines (binary / non-UTF-8 files refused naming the file);
    ValueError("<what>: give --text (repeatable) or --file") when there are none."""
    from actlab.record_io import read_text_lines

    texts = list(args.text or []) + (read_text_lines(args.file) if args.file else [])
    if not texts:
        raise ValueError(f"{what}: give --text (repeatable) or --file")
    return texts


def split_list(value: str | Iterable[str] | None) -> list[str]:
    """The one list syntax: ``a,b`` and/or a repeated flag (``--x a --x b,c``) -> ``[a, b, c]`` (blanks dropped)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"expected text for a list value; got {type(item).__name__} {item!r}")
        out += [p.strip() for p in item.split(",") if p.strip()]
    return out


def parse_sites(model: Model, text: str | Iterable[str] | None) -> list[str]:
    """Site list in the one syntax (:func:`split_list`); ``*`` expands over ``model``'s layers. Every name is
    checked (an unknown one raises a KeyError listing close matches)."""
    names = split_list(text)
    if not names:
        raise ValueError(f"no sites given; {SITES_HELP}")
    out: list[str] = []
    for s in names:
        out += [s.replace("*", str(i)) for i in range(model.n_layers)] if "*" in s else [s]
    return model.check_sites(out)
