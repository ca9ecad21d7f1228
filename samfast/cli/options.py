"""The command-line options more than one command takes, defined once (Annotated, as huggingface_hub's
CLI does); a command imports the ones it has and keeps only its own options in its module.

The flags, help texts and defaults come from the fields of samfast.eval.settings.Settings:
``with_settings`` gives `bench brats` and `eval` every one of them, and the other commands that
predict import the few they share (Model, Backend, ...) below.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import fields
from typing import Annotated, Any

import typer

from samfast.eval.settings import Settings


def setting(name: str) -> Any:
    """``Annotated[type, typer.Option(...)]`` of the Settings field ``name``."""
    flag = Settings.__dataclass_fields__[name].metadata["flag"]
    return Annotated[_TYPES[name], typer.Option(*flag.names, help=flag.help)]


def with_settings(**defaults: Any) -> Callable[[Callable], Callable]:
    """A command that takes every Settings option after its own parameters and gets them as one
    ``settings: Settings``; ``defaults`` are the command's own defaults for some fields."""
    unknown = set(defaults) - set(_FLAGGED)
    if unknown:
        raise TypeError(f"not Settings options: {sorted(unknown)}")

    def decorate(command: Callable) -> Callable:
        hints = typing.get_type_hints(command, include_extras=True)
        own = [
            p.replace(annotation=hints[p.name])
            for p in inspect.signature(command).parameters.values()
            if p.name != "settings"
        ]
        shared = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=defaults.get(name, Settings.__dataclass_fields__[name].default),
                annotation=setting(name),
            )
            for name in _FLAGGED
        ]

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            chosen = {name: values.pop(name) for name in _FLAGGED}
            return command(**values, settings=Settings(**chosen))

        # Typer reads the signature: the command's own options, then the shared ones.
        run.__signature__ = inspect.Signature([*own, *shared])  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in own}
        return run

    return decorate


_TYPES = typing.get_type_hints(Settings)
_FLAGGED = [f.name for f in fields(Settings) if "flag" in f.metadata]

# -- the model and where it runs (every command that predicts) ---------------------------------
Model = setting("model")
Backend = setting("backend")
Precision = setting("precision")
Device = setting("device")
Checkpoint = setting("checkpoint")
RandomWeights = setting("random_weights")
Target = setting("target")
