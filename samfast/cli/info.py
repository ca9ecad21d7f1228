"""`samfast info`: models and whether their weights are present and verified, usable backends.

Exit 0 on a CPU-only machine: missing GPU, TensorRT or ViT weights are facts, not errors.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from samfast import __version__
from samfast.cli._common import guarded
from samfast.errors import CheckpointError


def weights_status(name: str) -> str:
    from samfast.models import get_spec, resolve_weights

    spec = get_spec(name)
    if spec.is_test_config:
        return "random weights only (test config)"
    try:
        weights = resolve_weights(name)
    except CheckpointError as error:
        return (
            f"missing: {error}"
            if "needs the official" not in str(error)
            else (f"not present (official {spec.checkpoint_file}; pass --checkpoint or --random-weights)")
        )
    return f"present, sha256 verified ({weights.path})"


def collect() -> dict:
    from samfast.backends import backend_status
    from samfast.models import MODEL_REGISTRY

    models = {
        name: {
            "input_size": spec.input_size,
            "embedding_shape": list(spec.embedding_shape),
            "aliases": list(spec.aliases),
            "weights": weights_status(name),
            "licence": spec.licence,
            "description": spec.description,
        }
        for name, spec in MODEL_REGISTRY.items()
    }
    return {
        "samfast": __version__,
        "models": models,
        "backends": backend_status(),
        "executors": executor_status(),
        "profile": _profile(),
    }


def executor_status() -> dict:
    """Where `bench brats` / `eval` can run their cases: this process always, Ray when installed."""
    from samfast.artifacts.manifest import dist_version

    version = dist_version("ray")
    return {
        "process": {"usable": True, "version": __version__, "hint": ""},
        "ray": {
            "usable": version is not None,
            "version": version,
            "hint": "--ray local|auto|ADDRESS" if version else "pip install 'samfast[ray]'",
        },
    }


def _profile() -> dict:
    """This machine's profile (samfast tune), or where it would be."""
    from samfast.runtime.profile import load_profile, profile_path

    profile = load_profile()
    return {"path": str(profile_path()), "found": profile is not None, **(profile or {})}


@guarded
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Models, their weights, and the backends this machine can run."""
    report = collect()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console = Console()
    console.print(f"samfast {report['samfast']}")
    models = Table("model", "input", "weights", "licence", title="models")
    for name, entry in report["models"].items():
        alias = f" ({', '.join(entry['aliases'])})" if entry["aliases"] else ""
        models.add_row(
            name + alias, str(entry["input_size"]), escape(entry["weights"]), escape(entry["licence"])
        )
    console.print(models)
    backends = Table("backend", "usable", "version", "details", title="backends")
    for name, entry in report["backends"].items():
        details = {k: v for k, v in entry.items() if k not in ("usable", "version") and v}
        backends.add_row(
            name,
            "yes" if entry["usable"] else "no",
            str(entry["version"]),
            escape(", ".join(f"{k}={v}" for k, v in details.items())),
        )
    console.print(backends)
    executors = Table("executor", "usable", "version", "how", title="executors (bench brats, eval)")
    for name, entry in report["executors"].items():
        executors.add_row(name, "yes" if entry["usable"] else "no", str(entry["version"]), entry["hint"])
    console.print(executors)
    profile = report["profile"]
    if not profile["found"]:
        console.print(
            f"machine profile: none for this machine at {escape(profile['path'])} (run samfast tune)"
        )
        return
    from samfast.cli.tune import profile_table

    choice = profile["choice"]
    console.print(
        profile_table(profile, f"machine profile ({escape(profile['path'])}, {profile['created']})")
    )
    console.print(
        f"default: {choice['backend']} {choice['precision']}" if choice else "default: fp32 reference"
    )
