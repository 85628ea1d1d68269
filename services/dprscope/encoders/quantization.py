"""The int8 recipe: outlier smoothing, then dynamic per-channel int8 of every weight MatMul.

Why not plain ``quantize_dynamic``: it quantises each MatMul's *input* per tensor (one
scale per call), and BERT-style encoders carry a few outlier channels (on
all-MiniLM-L6-v2, one channel of the FFN's GELU output reaches 25 while the next largest
is 6; the attention LayerNorm output has one at 30 against 8). One scale for the whole
tensor then spends the int8 range on those channels and rounds everything else coarsely:
cosine vs fp32 0.993, but top-10 overlap only ~0.91 (bench/RESULTS.md). Excluding the
sensitive MatMuls from quantisation fixes quality only by giving up the speed (they are
the FFN, two thirds of the work).

The recipe here is SmoothQuant's identity ``X @ W = (X / s) @ (s * W)`` applied to the
outliers only: for every tensor that feeds weight MatMuls, channels whose calibrated
|max| is above the 95th percentile of that tensor's channel maxima are divided down to
it (``s = max(1, amax / p95)``), the consuming weights' rows are multiplied back up, and
the graph gains one ``Mul`` per such tensor. The fp32 graph computes the same function;
the activation range that int8 has to cover shrinks 4-9x. Then ``quantize_dynamic`` with
``per_channel=True`` on MatMuls only: the word-embedding Gather stays fp32 (quantising it
too saved 35 MB but cost ~0.006 overlap).

Measured on all-MiniLM-L6-v2 against torch fp32 (bench/RESULTS.md "Encoder backends"):
cosine 0.9984, top-10 overlap 0.958 over 4,000 real passages for 100 NQ questions encoded
in batches of 64 (0.954 on 500 questions; 0.961 encoded one at a time), versus 0.9932 /
0.907 for plain per-channel int8, at 90-95 % of its speed (still ~1.7-2.1x ORT fp32).
What did not help: SmoothQuant's alpha=0.5 on every channel (0.879), capping the scales,
lower percentiles (75-90: same or worse), reduce_range. Keeping the FFN output MatMuls of
layers 0-2 in fp32 reaches 0.963 batched but costs 8-17 % of the speed: not the default.

Calibration runs the fp32 export on ``calibration.py``'s built-in texts, one at a time and
as padded batches (``onnx_backend.calibration_feeds``); the scales come out as good as
from real NQ questions and Wikipedia passages (overlap 0.961 either way).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

OUTLIER_PERCENTILE = 95.0
# Smooth a tensor only when its largest channel is at least this far above the percentile:
# below that there is no outlier worth a Mul (MiniLM's attention context tensors, 1.3-2x).
MIN_SCALE_GAIN = 2.0
# Bump when the recipe changes in a way the parameters do not show (2: padded calibration batches).
RECIPE_VERSION = 2
# Part of the int8 cache key, built from the parameters so a changed recipe never reuses an old file.
RECIPE = f"sq{OUTLIER_PERCENTILE:g}g{MIN_SCALE_GAIN:g}pc{RECIPE_VERSION}"

Feeds = dict[str, np.ndarray]


def _weight_matmuls(model) -> dict[str, list]:
    """MatMul nodes with a constant 2-D weight, grouped by the activation tensor they read."""
    inits = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits and len(inits[node.input[1]].dims) == 2:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def channel_absmax(model, feeds: Iterable[Feeds], tensors: list[str]) -> dict[str, np.ndarray]:
    """Per-channel max |x| of ``tensors`` (last axis) over every token of every feed."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every probed tensor
    so.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    amax: dict[str, np.ndarray] = {}
    for feed in feeds:
        outputs = session.run(tensors, {k: v for k, v in feed.items() if k in wanted})
        for name, value in zip(tensors, outputs, strict=True):
            m = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            amax[name] = m if name not in amax else np.maximum(amax[name], m)
    if not amax:
        raise ValueError("calibration needs at least one input")
    return amax


def outlier_scales(amax: np.ndarray, percentile: float = OUTLIER_PERCENTILE) -> np.ndarray | None:
    """``s = max(1, amax / p)``: only outlier channels shrink; None when nothing stands out."""
    level = float(np.percentile(amax, percentile))
    if level <= 0 or float(amax.max()) < MIN_SCALE_GAIN * level:
        return None
    return np.maximum(1.0, amax / level).astype(np.float32)


def smooth_outliers(model, feeds: Iterable[Feeds], percentile: float = OUTLIER_PERCENTILE) -> int:
    """Rewrite ``model`` in place (same function in fp32); returns how many tensors were smoothed."""
    from onnx import helper, numpy_helper

    groups = _weight_matmuls(model)
    amax = channel_absmax(model, feeds, sorted(groups))
    inits = {i.name: i for i in model.graph.initializer}
    nodes = list(model.graph.node)
    smoothed = 0
    for tensor, consumers in groups.items():
        scales = outlier_scales(amax[tensor], percentile)
        if scales is None:
            continue
        inverse = numpy_helper.from_array((1.0 / scales).astype(np.float32), f"{tensor}/outlier_inv_scale")
        model.graph.initializer.append(inverse)
        scaled_input = f"{tensor}/outlier_smoothed"
        mul = helper.make_node("Mul", [tensor, inverse.name], [scaled_input], name=f"{tensor}/outlier_smooth")
        for node in consumers:
            weight = numpy_helper.to_array(inits[node.input[1]])
            # a new initializer per consumer: a weight shared elsewhere must keep its values
            new_weight = numpy_helper.from_array((weight * scales[:, None]).astype(np.float32),
                                                 f"{node.input[1]}/outlier_scaled/{node.name}")
            model.graph.initializer.append(new_weight)
            node.input[0] = scaled_input
            node.input[1] = new_weight.name
        first = min(nodes.index(n) for n in consumers)  # the producer of ``tensor`` comes earlier
        nodes.insert(first, mul)
        smoothed += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return smoothed


def quantize_smoothed_int8(fp32_path: Path, out_path: Path, feeds: list[Feeds]) -> int:
    """fp32 ONNX file -> outlier-smoothed, per-channel dynamic int8 file (not atomic; see caller)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32_path))
    smoothed = smooth_outliers(model, feeds)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".smooth-") as tmp:
        staged = Path(tmp) / "smoothed.onnx"
        onnx.save_model(model, str(staged))
        quantize_dynamic(str(staged), str(out_path), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"])
    log.info("int8 recipe %s: smoothed %d activation tensors before quantising", RECIPE, smoothed)
    return smoothed
