"""Every samfast module imports with only the base dependencies installed (as Polygraphy's tests
check): the optional extras (TensorRT, torch-tensorrt, OpenVINO, onnxconverter-common, the dev
tools) are made unimportable in a fresh interpreter, then each module is imported in turn.
"""

from __future__ import annotations

from child import run_json

# import names of the pyproject extras (gpu, openvino, dev) that are not base dependencies
OPTIONAL = (
    "tensorrt",
    "torch_tensorrt",
    "onnxconverter_common",
    "openvino",
    "pytest",
    "httpx",
    "pytest_benchmark",
)

_SCRIPT = """
import importlib, importlib.machinery, importlib.util, json, pkgutil, sys
blocked = set(sys.argv[1].split(","))
class NotInstalled(importlib.machinery.PathFinder):
    # the path finder, blind to the blocked packages: importing one raises ModuleNotFoundError and
    # importlib.util.find_spec answers None, exactly as when it is not installed
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            return None
        return super().find_spec(name, path, target)
sys.meta_path = [NotInstalled if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
import samfast
walked = pkgutil.walk_packages(samfast.__path__, "samfast.")
# samfast.__main__ runs the command line: it is a script, not a module to import
names = ["samfast"] + [m.name for m in walked if not m.name.endswith("__main__")]
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as error:
        failed[name] = f"{type(error).__name__}: {error}"
leaked = sorted(m for m in sys.modules if m.split(".")[0] in blocked)
hidden = all(importlib.util.find_spec(name) is None for name in blocked)
print(json.dumps({"modules": names, "failed": failed, "leaked": leaked, "hidden": hidden}))
"""


def test_every_module_imports_with_only_the_base_dependencies():
    result = run_json(_SCRIPT, ",".join(OPTIONAL))
    assert len(result["modules"]) > 60, "the walk found too few modules to be the whole package"
    assert {"samfast.backends.tensorrt_backend", "samfast.backends.openvino_backend"} <= set(
        result["modules"]
    )
    assert not result["failed"], result["failed"]
    assert not result["leaked"] and result["hidden"]
