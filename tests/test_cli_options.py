"""Options more than one command takes are defined once, in samfast.cli.options."""

from __future__ import annotations

import ast
from pathlib import Path

from typer.testing import CliRunner

from samfast.cli import app

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


def test_no_command_defines_a_shared_option_again():
    shared = option_flags(CLI / "options.py")
    again = [
        f"{path.name}: {flag}"
        for path in sorted(CLI.glob("*.py"))
        if path.name != "options.py"
        for flag in sorted(option_flags(path) & shared)
        if (path.name, flag) not in OWN_MEANING
    ]
    assert not again, f"defined again outside samfast/cli/options.py: {again}"


def test_every_predicting_command_offers_the_shared_model_options():
    runner = CliRunner()
    for command in (["predict"], ["segment"], ["serve"], ["eval"], ["bench", "brats"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        for flag in ("--model", "--backend", "--device"):
            assert flag in result.output, f"{' '.join(command)} has no {flag}"
        assert "torch, onnxruntime, openvino, torchscript or tensorrt" in result.output
