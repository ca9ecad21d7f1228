"""Options more than one command takes are defined once: samfast.eval.settings.Settings' fields, which
samfast.cli.options turns into Typer options."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from samfast.cli import app
from samfast.errors import InputError
from samfast.eval.settings import Settings

CLI = Path(__file__).resolve().parents[1] / "samfast" / "cli"
# Flags some commands give another meaning, so they keep their own definition there.
OWN_MEANING = {
    ("export.py", "--out"),  # the engines root, not a results folder
    ("export.py", "--model"),  # optional beside --list
    ("export.py", "--precision"),  # the artifact's precision (fp32 / fp16 engines), not the runtime's
    ("predict.py", "--out"),  # a mask file
    ("segment.py", "--out"),  # a mask volume
}


def option_flags(path: Path) -> set[str]:
    """The long flags of every typer.Option(...) written in ``path``."""
    flags = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Option":
            flags |= {
                a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")
            }
    return flags


def shared_flags() -> set[str]:
    """The long flags of every Settings field that is a command-line option."""
    return {f.metadata["flag"].names[0] for f in fields(Settings) if "flag" in f.metadata}


def test_no_command_defines_a_shared_option_again():
    shared = shared_flags()
    assert {"--out", "--model", "--protocol", "--workers"} <= shared
    again = [
        f"{path.name}: {flag}"
        for path in sorted(CLI.glob("*.py"))
        for flag in sorted(option_flags(path) & shared)
        if (path.name, flag) not in OWN_MEANING
    ]
    assert not again, f"defined again outside samfast/eval/settings.py: {again}"


@pytest.mark.parametrize(
    ("command", "defaults"),
    [
        (["bench", "brats"], {}),
        (["eval"], {"--out": "runs/eval", "--target": "nonzero", "--normalization": "medsam-mr"}),
    ],
)
def test_bench_and_eval_offer_every_setting_with_its_one_default(command, defaults):
    """Each Settings field with a flag is an option of both commands, with the field's default
    (or the command's own, for the three eval changes) as the parsed value."""
    from typer.main import get_command

    cmd = get_command(app)
    for name in command:
        cmd = cmd.commands[name]
    params = {p.opts[0]: p for p in cmd.params if p.param_type_name == "option"}
    for spec in fields(Settings):
        if "flag" not in spec.metadata:
            continue
        flag = spec.metadata["flag"]
        assert flag.names[0] in params, flag.names
        option = params[flag.names[0]]
        assert option.opts == list(flag.names)
        assert option.help == flag.help
        expected = defaults.get(flag.names[0], spec.default)
        assert str(option.default) == str(expected), (flag.names[0], option.default, expected)


def test_settings_refuse_bad_values_in_one_line():
    with pytest.raises(InputError, match="follow 'best': use oracle or suggested"):
        Settings(follow="best")
    with pytest.raises(InputError, match="plane 'oblique': use axial, coronal, sagittal or tri"):
        Settings(plane="oblique")
    with pytest.raises(InputError, match="volume runs on its own"):
        Settings(protocol="volume,box")
    with pytest.raises(InputError, match="need --ray"):
        Settings(workers=2)
    assert Settings(protocol="volume").runs_volume
    with pytest.raises(InputError, match="protocol 'volume'"):
        Settings(protocol="volume").protocols  # noqa: B018 -- volume is not a per-slice protocol


def test_every_predicting_command_offers_the_shared_model_options():
    runner = CliRunner()
    for command in (["predict"], ["segment"], ["serve"], ["eval"], ["bench", "brats"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        for flag in ("--model", "--backend", "--device"):
            assert flag in result.output, f"{' '.join(command)} has no {flag}"
        assert "torch, onnxruntime, openvino, torchscript or tensorrt" in result.output
