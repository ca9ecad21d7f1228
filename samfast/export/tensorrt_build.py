"""TensorRT engines from the exported ONNX graphs: FP16 with norms and softmax kept in FP32.

TensorRT is imported inside functions only, so importing samfast never needs it installed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from samfast.artifacts.gpu import gpu_identity, tensorrt_available
from samfast.errors import SamfastError
from samfast.io import atomic_write_bytes

PRECISIONS = ("fp16", "fp32")
ENGINE_FILES = {"encoder": "encoder.engine", "decoder": "decoder.engine"}
# The runtime's decoder adds up to two points to the user's: box corners (2) or a padding point (1).
EXTRA_DECODER_POINTS = 2
# ONNX ops kept in FP32 when TensorRT >= 11 needs the precision in the graph (strong typing).
_FP32_ONNX_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt")
_NORM_PARTS_ONNX = ("Sub", "Add", "Div", "Mul")


def engine_profiles(spec, max_slices: int, max_prompts: int, max_points: int) -> dict[str, dict]:
    """Optimization-profile shapes [min, opt, max] per graph input, as lists (JSON-ready)."""
    size, low = spec.input_size, spec.low_res_size
    points = max_points + EXTRA_DECODER_POINTS
    opt_prompts, opt_points = min(16, max_prompts), min(3, points)
    embedding = [1, *spec.embedding_shape]
    return {
        "encoder": {
            "images": [[1, 3, size, size], [min(8, max_slices), 3, size, size], [max_slices, 3, size, size]]
        },
        "decoder": {
            "image_embeddings": [embedding, embedding, embedding],
            "point_coords": [[1, 1, 2], [opt_prompts, opt_points, 2], [max_prompts, points, 2]],
            "point_labels": [[1, 1], [opt_prompts, opt_points], [max_prompts, points]],
            "mask_input": [[1, 1, low, low], [opt_prompts, 1, low, low], [max_prompts, 1, low, low]],
            "has_mask_input": [[1], [1], [1]],
        },
    }


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _is_float(trt, tensor) -> bool:
    return tensor.dtype in (trt.float32, trt.float16) and not getattr(tensor, "is_shape_tensor", False)


def _scope(name: str) -> str | None:
    return name.rsplit("/", 1)[0] if "/" in name else None


def pin_norms_fp32(trt, network) -> int:
    """Keep LayerNorm, softmax and other normalisation layers in FP32; return how many were pinned.

    Matched by type (NORMALIZATION, SOFTMAX, REDUCE), by name (norm / softmax), and, for LayerNorm2d
    decomposed into ReduceMean/Sub/Pow/Sqrt/Div, every elementwise or unary layer of the ONNX scope
    that holds a float REDUCE layer. Only layers whose tensors are all float data are touched.
    """
    layers = [network.get_layer(i) for i in range(network.num_layers)]

    def all_float(layer) -> bool:
        tensors = [layer.get_input(i) for i in range(layer.num_inputs)]
        tensors += [layer.get_output(i) for i in range(layer.num_outputs)]
        tensors = [t for t in tensors if t is not None]
        return bool(tensors) and all(_is_float(trt, t) for t in tensors)

    by_type = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE}
    pointwise = {trt.LayerType.ELEMENTWISE, trt.LayerType.UNARY}
    norm_scopes = {
        _scope(layer.name) for layer in layers if layer.type == trt.LayerType.REDUCE and all_float(layer)
    } - {None}
    pinned = 0
    for layer in layers:
        if layer.type == trt.LayerType.CONSTANT or not all_float(layer):
            continue
        lowered = layer.name.lower()
        if (
            layer.type in by_type
            or "norm" in lowered
            or "softmax" in lowered
            or (layer.type in pointwise and _scope(layer.name) in norm_scopes)
        ):
            layer.precision = trt.float32
            for index in range(layer.num_outputs):
                layer.set_output_type(index, trt.float32)
            pinned += 1
    return pinned


def mixed_precision_onnx(source: Path, target: Path) -> int:
    """Write an FP16 copy of ``source`` with norms, softmax and casts in FP32; return the FP32 node count.

    For TensorRT >= 11, which builds strongly typed networks only (no FP16 builder flag): the
    precision must be in the graph. Inputs and outputs stay FP32.
    """
    try:
        import onnx
        from onnxconverter_common import float16
    except ImportError:
        raise SamfastError(
            "TensorRT >= 11 needs an FP16 ONNX graph; install onnxconverter-common (pip install .[gpu])"
        ) from None
    # Shape inference on the graph without its weights: a ViT-H graph is past protobuf's 2 GiB.
    model = onnx.shape_inference.infer_shapes(onnx.load(str(source), load_external_data=False))
    onnx.external_data_helper.load_external_data_for_model(model, str(source.parent))
    nodes = model.graph.node
    scopes = {_scope(n.name) for n in nodes if n.op_type == "ReduceMean"} - {None}
    norm_parts = [n.name for n in nodes if n.op_type in _NORM_PARTS_ONNX and _scope(n.name) in scopes]
    casts = [n.name for n in nodes if n.op_type == "Cast"]  # their target types are fixed in the graph
    pinned = sum(n.op_type in _FP32_ONNX_OPS for n in nodes) + len(norm_parts)
    outputs = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    converted = float16.convert_float_to_float16(
        model,
        min_positive_val=1e-7,
        max_finite_val=65504.0,
        keep_io_types=True,
        disable_shape_infer=True,
        op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(_FP32_ONNX_OPS),
        node_block_list=norm_parts + casts,
    )
    _restore_float_outputs(onnx, converted, outputs)
    onnx.save_model(
        converted,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{target.name}.data",
    )
    return pinned


def _restore_float_outputs(onnx, model, original: dict[str, int]) -> None:
    """keep_io_types misses an output produced by a blocked node; cast such outputs back to FP32."""
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    for output in model.graph.output:
        if original.get(output.name) != float32 or output.type.tensor_type.elem_type != float16:
            continue
        inner = f"{output.name}__fp16"
        for node in model.graph.node:
            node.output[:] = [inner if name == output.name else name for name in node.output]
        model.graph.node.append(onnx.helper.make_node("Cast", [inner], [output.name], to=float32))
        output.type.tensor_type.elem_type = float32


def _build_engine(trt, builder, logger, onnx_path: Path, shapes: dict, precision: str, config_args: dict):
    """Parse, configure, build one engine: (engine, FP32-pinned count, inputs, outputs, timing cache)."""
    if not onnx_path.is_file():
        raise SamfastError(f"{onnx_path} is missing: export the ONNX graphs first")
    work = None
    strongly_typed = precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16")
    try:
        source, pinned = onnx_path, 0
        if strongly_typed:
            work = Path(tempfile.mkdtemp(prefix=".fp16-onnx-", dir=config_args["folder"]))
            source = work / onnx_path.name
            pinned = mixed_precision_onnx(onnx_path, source)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT >= 10
        parser = trt.OnnxParser(network, logger)  # owns the weights: keep it alive until the build ends
        if not parser.parse_from_file(str(source)):
            first = parser.get_error(0).desc() if parser.num_errors else "unknown error"
            raise SamfastError(f"TensorRT could not parse {onnx_path}: {_one_line(first)}")
        inputs = [network.get_input(i).name for i in range(network.num_inputs)]
        outputs = [network.get_output(i).name for i in range(network.num_outputs)]
        if sorted(inputs) != sorted(shapes):
            raise SamfastError(f"{onnx_path} has inputs {inputs}, expected {sorted(shapes)}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config_args["workspace"])
        if precision == "fp16" and not strongly_typed:
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            pinned = pin_norms_fp32(trt, network)
        elif precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # fp32 engines are judged at rtol 1e-3
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, tuple(low), tuple(opt), tuple(high))
        config.add_optimization_profile(profile)
        try:
            cache = config.create_timing_cache(config_args["cache_bytes"])
            accepted = cache is not None and config.set_timing_cache(cache, ignore_mismatch=False)
        except (RuntimeError, TypeError, ValueError):
            accepted = False
        if not accepted:  # written by another GPU or TensorRT version
            config_args["log"]("the timing cache does not fit this GPU or TensorRT; starting a new one")
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise SamfastError(f"TensorRT could not build an engine from {onnx_path} (see its log above)")
        return bytes(serialized), pinned, inputs, outputs, bytes(cache.serialize())
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def write_engines(
    onnx_folder: Path,
    folder: Path,
    spec,
    precision: str,
    max_slices: int = 16,
    max_prompts: int = 64,
    max_points: int = 10,
    workspace_gib: float = 4.0,
    timing_cache: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Build encoder.engine and decoder.engine into ``folder``; return the manifest fragment.

    The timing cache, when given, is loaded if present and saved back (atomically) after the builds.
    """
    available, reason = tensorrt_available()
    if not available:
        raise SamfastError(f"cannot build TensorRT engines: {reason}")
    if precision not in PRECISIONS:
        raise SamfastError(f"TensorRT engines are built in {' or '.join(PRECISIONS)}, not {precision!r}")
    if min(max_slices, max_prompts, max_points) < 1 or workspace_gib <= 0:
        raise SamfastError("max slices, prompts and points must be >= 1 and the workspace > 0 GiB")
    import tensorrt as trt

    onnx_folder, folder = Path(onnx_folder), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    timing_cache = Path(timing_cache) if timing_cache is not None else None
    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    loaded = len(cache_bytes)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    profiles = engine_profiles(spec, max_slices, max_prompts, max_points)
    fragment: dict = {}
    pinned: dict[str, int] = {}
    for graph, file in ENGINE_FILES.items():
        log(f"building TensorRT {precision} {graph} engine (TensorRT {trt.__version__}); takes minutes")
        args = {"folder": folder, "workspace": int(workspace_gib * (1 << 30)), "cache_bytes": cache_bytes}
        args["log"] = log
        engine, pinned[graph], inputs, outputs, cache_bytes = _build_engine(
            trt, builder, logger, onnx_folder / f"{graph}.onnx", profiles[graph], precision, args
        )
        atomic_write_bytes(folder / file, engine)
        fragment[graph] = {"file": file, "inputs": inputs, "outputs": outputs, "profile": profiles[graph]}
        log(f"wrote {folder / file} ({len(engine) / 2**20:.1f} MiB, {pinned[graph]} layers kept in FP32)")
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(timing_cache, cache_bytes)
    return fragment | {
        "precision": precision,
        # TensorRT >= 11 has no FP16 builder flag: the FP16 graph itself carries the precision.
        "typing": "weak" if hasattr(trt.BuilderFlag, "FP16") else "strong",
        "fp32_pinned_layers": pinned,
        "limits": {"max_slices": max_slices, "max_prompts": max_prompts, "max_points": max_points},
        "workspace_gib": workspace_gib,
        "timing_cache": str(timing_cache) if timing_cache is not None else None,
        "timing_cache_loaded_bytes": loaded,
        **gpu_identity(),
    }
