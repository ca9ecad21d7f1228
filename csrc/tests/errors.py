"""ctest: libsamfast's error paths return the right status code and message.

Opening: a missing folder, a folder without a manifest, and copies of the tiny_vit_test set (of
--format onnx or torchscript) whose manifest or files were changed (wrong format, model, weights,
sizes, schema, missing, truncated or altered files, swapped graphs; for ONNX also a graph that is
not ONNX and a manifest without the split decoder). Predicting on a real demo slice with
LiteMedSAM: boxes and points outside the slice, inverted boxes, bad labels, output buffers too
small, NULL pointers. Every prompt the C library refuses, samfast.Predictor (of the same backend)
refuses too (InputError), and the other way round.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import library_arguments  # noqa: E402
from samfast_ctypes import Info, Library, SamfastCError  # noqa: E402

from samfast import Predictor  # noqa: E402
from samfast.artifacts.manifest import file_entries  # noqa: E402
from samfast.errors import InputError  # noqa: E402

SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
PYTHON_BACKEND = {"onnx": "openvino", "torchscript": "torchscript"}

results: list[tuple[str, bool, str]] = []


def check(name: str, call, want: str, text: str = "") -> None:
    """`call()` must raise SamfastCError with status `want` and `text` in its message
    (want "SAMFAST_OK": must not raise)."""
    try:
        call()
        got, message = "SAMFAST_OK", ""
    except SamfastCError as error:
        got, message = error.name, error.message
    ok = got == want and text in message
    results.append((name, ok, f"{got}: {message}"))
    print(
        f"{'ok  ' if ok else 'FAIL'} {name}: {got}"
        + (f' "{message}"' if message else "")
        + ("" if ok else f'   (want {want} with "{text}")')
    )


def broken_sets(tiny: Path, fmt: str, libtorch: bool, root: Path) -> dict[str, tuple[Path, str, str]]:
    """Broken copies: name -> (folder, expected status, message fragment)."""
    encoder, decoder = f"encoder{SUFFIX[fmt]}", f"decoder{SUFFIX[fmt]}"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    cases: dict[str, tuple[Path, str, str]] = {}

    def copy(name: str, source: Path = tiny) -> tuple[Path, dict]:
        folder = root / name
        shutil.copytree(source, folder)
        return folder, json.loads((folder / "manifest.json").read_text())

    def write(folder: Path, manifest: dict) -> None:
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))

    def edited(name: str, change, status: str, text: str) -> None:
        folder, manifest = copy(name)
        change(manifest)
        write(folder, manifest)
        cases[name] = (folder, status, text)

    (root / "empty").mkdir()
    cases["folder without manifest.json"] = (root / "empty", "SAMFAST_ERR_NOT_FOUND", "no manifest.json in")
    (root / "a-file").write_text("not a folder")
    cases["a file, not a folder"] = (root / "a-file", "SAMFAST_ERR_NOT_FOUND", "is not a folder")

    folder, _ = copy("not-json")
    (folder / "manifest.json").write_text('{"format": "torchscript",')
    cases["manifest is not JSON"] = (folder, "SAMFAST_ERR_MANIFEST", "is not valid JSON")

    edited("format", lambda m: m.update(format="tflite"), "SAMFAST_ERR_MANIFEST", 'format is "tflite"')
    edited(
        "model",
        lambda m: m.update(model="vit_b"),
        "SAMFAST_ERR_MANIFEST",
        f"says model vit_b but {encoder} was exported for tiny_vit_test",
    )
    edited(
        "weights",
        lambda m: m["weights"].update(label="sha256:" + "0" * 64),
        "SAMFAST_ERR_MANIFEST",
        "says weights sha256:000",
    )
    edited("input-size", lambda m: m.update(input_size=1024), "SAMFAST_ERR_MANIFEST", "says input_size 1024")
    edited("schema", lambda m: m.update(schema=2), "SAMFAST_ERR_MANIFEST", "schema 2 is not the one")
    edited(
        "normalization",
        lambda m: m.update(normalization="zscore"),
        "SAMFAST_ERR_MANIFEST",
        'normalization "zscore" is unknown',
    )
    edited("precision", lambda m: m.update(precision="fp16"), "SAMFAST_ERR_MANIFEST", f"{fmt} set is fp32")
    edited("no-files", lambda m: m.update(files={}), "SAMFAST_ERR_MANIFEST", '"files" lists no files')
    edited(
        "escape",
        lambda m: m["files"].update({"../manifest.json": {"bytes": 1, "sha256": "0"}}),
        "SAMFAST_ERR_MANIFEST",
        "not a plain file name",
    )
    edited(
        "decoder-inputs",
        lambda m: m["decoder"].update(inputs=["image_embeddings", "boxes"]),
        "SAMFAST_ERR_MANIFEST",
        "ONNX decoder convention",
    )

    folder, manifest = copy("swapped")  # the manifest's graph entries name each other's file
    manifest["encoder"]["file"], manifest["decoder"]["file"] = decoder, encoder
    write(folder, manifest)
    cases["encoder and decoder swapped"] = (folder, "SAMFAST_ERR_MANIFEST", "the decoder graph")

    folder, _ = copy("missing-file")
    (folder / decoder).unlink()
    cases[f"{decoder} missing"] = (folder, "SAMFAST_ERR_MANIFEST", f"{decoder} listed in")
    folder, _ = copy("truncated")
    data = (folder / decoder).read_bytes()
    (folder / decoder).write_bytes(data[: len(data) // 2])
    cases[f"{decoder} truncated"] = (folder, "SAMFAST_ERR_MANIFEST", "bytes but the manifest says")
    folder, _ = copy("altered")
    data = bytearray((folder / encoder).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / encoder).write_bytes(bytes(data))
    cases[f"{encoder} altered, same size"] = (folder, "SAMFAST_ERR_MANIFEST", "does not match its sha256")

    if fmt == "onnx":
        edited(
            "no-split-decoder",
            lambda m: m.pop("decoder_prompt"),
            "SAMFAST_ERR_MANIFEST",
            "has no split decoder",
        )
        folder, manifest = copy("not-onnx")  # garbage with a matching sha256: the reader must refuse it
        (folder / "decoder_prompt.onnx").write_bytes(b"not a protobuf" * 100)
        manifest["files"].update(file_entries(folder, ["decoder_prompt.onnx"]))
        write(folder, manifest)
        cases["decoder_prompt.onnx is not ONNX"] = (
            folder,
            "SAMFAST_ERR_MANIFEST",
            "is not a readable ONNX graph",
        )

    folder, manifest = copy("engine")
    manifest.update(format="engine", precision="fp16")
    write(folder, manifest)
    without = "built without TensorRT" if libtorch else "built without LibTorch (SAMFAST_WITH_LIBTORCH=OFF)"
    cases["TensorRT engine set"] = (folder, "SAMFAST_ERR_UNSUPPORTED", without)
    return cases


def opening(lib: Library, fixtures: Path, fmt: str) -> None:
    tiny = fixtures / "sets" / fmt / "tiny_vit_test"
    check(
        "open: missing folder",
        lambda: lib.open(fixtures / "no-such-set"),
        "SAMFAST_ERR_NOT_FOUND",
        "no-such-set does not exist",
    )
    check("open: NULL folder", lambda: lib.open(None), "SAMFAST_ERR_INVALID_ARGUMENT", "export_dir is NULL")
    check(
        "open: unknown device", lambda: lib.open(tiny, "tpu"), "SAMFAST_ERR_INVALID_ARGUMENT", 'device "tpu"'
    )
    other = {"onnx": "libtorch", "torchscript": "openvino"}[fmt]
    check(
        f"open: {fmt} set with backend {other}",
        lambda: lib.open(tiny, backend=other),
        "SAMFAST_ERR_INVALID_ARGUMENT",
        f"its format is {fmt}",
    )
    check(
        "open: negative cache_slices",
        lambda: lib.open(tiny, cache_slices=-3),
        "SAMFAST_ERR_INVALID_ARGUMENT",
        "cache_slices must be between 1 and",
    )
    broken = broken_sets(tiny, fmt, lib.has_backend("libtorch"), fixtures / f"broken-{fmt}")
    for name, (folder, status, text) in broken.items():
        if status == "SAMFAST_ERR_UNSUPPORTED" and lib.lib.samfast_has_tensorrt():
            continue  # a TensorRT build goes on to check the engines themselves
        check(f"open: {name}", lambda folder=folder: lib.open(folder).close(), status, text)
    check("open: the intact set", lambda: lib.open(tiny).close(), "SAMFAST_OK")


def python_refuses(predictor: Predictor, prompt: dict) -> bool:
    try:
        predictor.predict(**prompt)
    except InputError:
        return True
    return False


def predicting(lib: Library, fixtures: Path, fmt: str) -> None:
    image = np.load(fixtures / "demo" / "slice.npy")
    model = lib.open(fixtures / "sets" / fmt / "litemedsam")
    check(
        "predict before set_slice",
        lambda: model.predict(box=[54, 134, 98, 194]),
        "SAMFAST_ERR_NO_SLICE",
        "no slice set",
    )
    check(
        "set_slice: 2 channels",
        lambda: model.set_slice(np.stack([image, image], -1)),
        "SAMFAST_ERR_INVALID_ARGUMENT",
        "channels must be 1 or 3, got 2",
    )
    poisoned = image.copy()
    poisoned[120, 7] = np.nan
    check("set_slice: NaN", lambda: model.set_slice(poisoned), "SAMFAST_ERR_INVALID_ARGUMENT", "NaN")
    check(
        "set_slice: zero spacing",
        lambda: model.set_slice(image, (0.0, 1.0)),
        "SAMFAST_ERR_INVALID_ARGUMENT",
        "spacing",
    )
    null_pixels = lambda: lib.check(  # noqa: E731
        lib.lib.samfast_set_slice(model.handle, None, 240, 240, 1, 1.0, 1.0)
    )
    check("set_slice: NULL pixels", null_pixels, "SAMFAST_ERR_INVALID_ARGUMENT", "pixels is NULL")
    model.set_slice(image, (1.0, 1.0))
    reference_mask = model.predict(box=[54, 134, 98, 194])[0]

    predictor = Predictor("litemedsam", backend=PYTHON_BACKEND[fmt], log=lambda _: None)
    predictor.set_image(image)
    prompts = {
        "box past the right edge": (
            {"box": [54, 134, 241, 194]},
            "SAMFAST_ERR_OUT_OF_RANGE",
            "lies outside the 240x240 slice",
        ),
        "box entirely outside": ({"box": [300, 300, 320, 330]}, "SAMFAST_ERR_OUT_OF_RANGE", "lies outside"),
        "box with a negative corner": (
            {"box": [-1, 134, 98, 194]},
            "SAMFAST_ERR_OUT_OF_RANGE",
            "lies outside",
        ),
        "box on the slice border": ({"box": [0, 0, 240, 240]}, "SAMFAST_OK", ""),
        "inverted box": ({"box": [98, 134, 54, 194]}, "SAMFAST_ERR_INVALID_ARGUMENT", "empty or inverted"),
        "empty box": ({"box": [54, 134, 54, 194]}, "SAMFAST_ERR_INVALID_ARGUMENT", "empty or inverted"),
        "point outside": (
            {"point_coords": [[250, 10]], "point_labels": [1]},
            "SAMFAST_ERR_OUT_OF_RANGE",
            "point 0 (250, 10) lies outside the 240x240 slice",
        ),
        "point label 2": (
            {"point_coords": [[50, 10]], "point_labels": [2]},
            "SAMFAST_ERR_INVALID_ARGUMENT",
            "labels must be 1 (foreground) or 0",
        ),
    }
    for name, (prompt, status, text) in prompts.items():
        c_prompt = {
            "box": prompt.get("box"),
            "points": prompt.get("point_coords"),
            "labels": prompt.get("point_labels"),
        }
        check(f"predict: {name}", lambda p=c_prompt: model.predict(**p), status, text)
        refused = python_refuses(predictor, prompt)
        ok = refused == (status != "SAMFAST_OK")
        verdict = f"Predictor {'refuses' if refused else 'accepts'}"
        results.append((f"python agrees: {name}", ok, verdict))
        print(f"{'ok  ' if ok else 'FAIL'} python agrees: {name}: {verdict}")

    box = [54, 134, 98, 194]
    check(
        "masks buffer one byte short",
        lambda: model.predict(box=box, capacity={"masks": 240 * 240 - 1}),
        "SAMFAST_ERR_BUFFER_TOO_SMALL",
        "out->masks_capacity holds 57599 bytes, need 57600 (1 mask of 240x240)",
    )
    check(
        "masks buffer for 1 mask, 3 asked",
        lambda: model.predict(box=box, multimask=True, capacity={"masks": 240 * 240}),
        "SAMFAST_ERR_BUFFER_TOO_SMALL",
        "need 172800 (3 masks of 240x240)",
    )
    check(
        "iou buffer too small",
        lambda: model.predict(box=box, multimask=True, capacity={"iou": 2}),
        "SAMFAST_ERR_BUFFER_TOO_SMALL",
        "out->iou_capacity holds 2 floats, need 3",
    )
    check(
        "low-res buffer too small",
        lambda: model.predict(box=box, capacity={"low_res": 100}),
        "SAMFAST_ERR_BUFFER_TOO_SMALL",
        "need 65536 (1 mask of 256x256)",
    )
    check("no prompt at all", lambda: model.predict(), "SAMFAST_ERR_INVALID_ARGUMENT", "at least one prompt")
    null_prompt = lambda: lib.check(lib.lib.samfast_predict(model.handle, None, None))  # noqa: E731
    check("predict: NULL prompt", null_prompt, "SAMFAST_ERR_INVALID_ARGUMENT", "prompt is NULL")
    info = Info()
    check(
        "get_info: NULL model",
        lambda: lib.check(lib.lib.samfast_get_info(None, ctypes.byref(info))),
        "SAMFAST_ERR_INVALID_ARGUMENT",
        "model is NULL",
    )
    after = model.predict(box=box)[0]
    ok = bool(np.array_equal(after, reference_mask))
    results.append(("errors leave the slice intact", ok, ""))
    print(f"{'ok  ' if ok else 'FAIL'} errors leave the slice intact (same mask as before them)")
    model.close()


def main() -> int:
    args = library_arguments(__doc__, SUFFIX)
    lib = Library(args.lib)
    opening(lib, args.fixtures, args.format)
    predicting(lib, args.fixtures, args.format)
    failed = sum(not ok for _, ok, _ in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
