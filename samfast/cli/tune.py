"""`samfast tune`: time every backend × precision here, gate the reduced ones, write the profile."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from samfast.cli._common import guarded
from samfast.cli.options import Device, Model, RandomWeights
from samfast.errors import InputError


def profile_table(profile: dict, title: str) -> Table:
    table = Table(
        "backend", "precision", "encoder ms", "click ms", "encoder speed-up", "click share", "judged by",
        "passed", title=title,
    )  # fmt: skip
    choice = profile.get("choice") or {}
    for c in profile["configurations"]:
        mark = (
            " ←" if (c["backend"], c["precision"]) == (choice.get("backend"), choice.get("precision")) else ""
        )
        table.add_row(
            c["backend"] + mark, c["precision"], f"{c['encoder_ms']:.0f}", f"{c['click_ms']:.1f}",
            f"{c['encoder_speedup_vs_torch_fp32']:.2f}×", f"{100 * c['click_share_of_torch_fp32']:.0f} %",
            c["judged_by"], "yes" if c["passed"] else "NO",
        )  # fmt: skip
    return table


@guarded
def tune(
    slices: Annotated[
        int, typer.Option("--slices", help="Demo slices the accuracy gate runs on (0: all 110, the default).")
    ] = 0,
    rounds: Annotated[int, typer.Option("--rounds", help="Timed rounds per configuration.")] = 3,
    threads: Annotated[int, typer.Option("--threads", help="Threads of every backend.")] = 2,
    device: Device = "cpu",
    model: Model = "litemedsam",
    random_weights: RandomWeights = False,
    write: Annotated[bool, typer.Option("--write/--no-write", help="Write the machine profile.")] = True,
) -> None:
    """Time each backend × precision on demo slices, run the accuracy gate, write the machine profile
    that --precision auto (and the default of predict, segment and serve) then picks from."""
    from samfast.eval.tuning import tune as run_tune
    from samfast.runtime.profile import profile_path, write_profile

    if slices < 0 or rounds < 1 or threads < 1:
        raise InputError("--slices must be 0 (all) or more, --rounds and --threads at least 1")
    console = Console(stderr=True)
    log = lambda m: console.print(m, markup=False)  # noqa: E731
    profile = run_tune(device, slices, rounds, threads, model, log, random_weights)
    Console().print(profile_table(profile, f"{profile['machine']['cpu_model']}, {threads} threads"))
    for c in profile["configurations"]:
        for protocol, verdict in c.get("gate", {}).get("protocols", {}).items():
            if not verdict["passed"]:
                console.print(
                    f"{c['backend']} {c['precision']} fails the gate on {protocol}: Δ DSC "
                    f"{verdict['delta_mean_dice']:+.4f}, Δ best IoU {verdict['delta_mean_best_iou']:+.4f}",
                    markup=False,
                )
    choice = profile["choice"]
    console.print(f"choice: {choice['backend']} {choice['precision']}" if choice else "choice: none passed")
    if write:
        console.print(f"profile: {write_profile(profile)}", markup=False)
    else:
        console.print(f"not written (--no-write); it would go to {profile_path()}", markup=False)
