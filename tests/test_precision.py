"""Lower precision: fp16 graphs, int8 Q/DQ and NNCF, bf16 hints, the gated parity ladder and --auto-exclude."""

from __future__ import annotations

import collections
import itertools
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from edgeseg.bundle import read_bundle
from edgeseg.export import ExportRequest, ParityError, export_bundle, fp16, quantize
from edgeseg.export.fp16 import FP32_OPS, float16_nodes, to_fp16
from edgeseg.export.lint import lint_onnx
from edgeseg.export.quantize import quantize_onnx
from edgeseg.export.rewrites import fold_hardsigmoid, fuse_gelu
from edgeseg.export.sensitivity import rank_onnx, search_kept_float
from edgeseg.runtime import load
from edgeseg.runtimes import BackendUnavailableError

pytestmark = pytest.mark.slow

SIZE = (64, 64)


@pytest.fixture(scope="module")
def random_export(tmp_path_factory):
    """Export afformer-tiny with random weights for (target, precision), once per module."""
    root = tmp_path_factory.mktemp("precision")
    made: dict[tuple[str, str], Path] = {}

    def make(target: str, precision: str) -> Path:
        if (target, precision) not in made:
            out = root / f"{target}-{precision}"
            export_bundle(
                ExportRequest(
                    model="afformer-tiny",
                    out=out,
                    target=target,
                    precision=precision,
                    input_size=SIZE,
                    num_classes=6,
                    calib_count=8,
                    parity_count=4,
                )
            )
            made[(target, precision)] = out
        return made[(target, precision)]

    return make


@pytest.fixture(scope="module")
def float_graph(random_export) -> Path:
    return random_export("onnx", "fp32") / "model.onnx"


def calibration(count: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.standard_normal((1, 3, *SIZE), dtype=np.float32) for _ in range(count)]


def run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def test_fp16_graph_keeps_float32_io_and_statistics(float_graph):
    converted = to_fp16(onnx.load(str(float_graph)))
    assert converted.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert converted.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    half, total = float16_nodes(converted)
    assert 0.5 * total < half < total  # most of the graph is fp16, but not the blocked ops
    inferred = onnx.shape_inference.infer_shapes(converted)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    kept = [n for n in inferred.graph.node if n.op_type in FP32_OPS]
    assert kept and all(types.get(n.output[0], onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT for n in kept)
    x = calibration(1)[0]
    reference = run(float_graph, x)
    path = float_graph.parent / "fp16-test.onnx"
    onnx.save(converted, str(path))
    difference = np.abs(run(path, x) - reference).max()
    assert 0 < difference < 0.05 * np.abs(reference).max()


def test_tensorrt_int8_is_symmetric_and_lints_clean(float_graph, tmp_path):
    out = tmp_path / "trt.onnx"
    assert quantize_onnx(float_graph, out, calibration(), "tensorrt") == []
    model = onnx.load(str(out))
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dequantize = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert quantize and dequantize
    for node in (*quantize, *dequantize):
        zero_point = initializer(model, node.input[2])
        assert zero_point.dtype == np.int8 and not zero_point.any()
    assert not [f for f in lint_onnx(model, "tensorrt") if f.severity == "error"]


def test_onnxruntime_int8_uses_uint8_activations_and_fails_tensorrt_lint(float_graph, tmp_path):
    out = tmp_path / "ort.onnx"
    quantize_onnx(float_graph, out, calibration(), "onnxruntime")
    model = onnx.load(str(out))
    zero_points = [initializer(model, n.input[2]) for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert any(z.dtype == np.uint8 for z in zero_points)
    assert {f.rule for f in lint_onnx(model, "tensorrt") if f.severity == "error"}
    x = calibration(1)[0]
    assert np.abs(run(out, x) - run(float_graph, x)).max() < 1.0


def test_onnxruntime_recipe_keeps_softmax_its_matmuls_and_the_stem_in_float(float_graph, tmp_path):
    out = tmp_path / "ort.onnx"
    kept = quantize_onnx(float_graph, out, calibration(), "onnxruntime", ["extra_node"])
    model = onnx.load(str(out))
    readers = {i: n for n in model.graph.node for i in n.input}
    softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
    assert len(softmaxes) == 8
    for softmax in softmaxes:
        # no Q after it and no quantized MatMul reading it: ONNX Runtime cannot fuse a QLinearSoftmax
        consumer = readers[softmax.output[0]]
        assert consumer.op_type == "MatMul" and {softmax.name, consumer.name} <= set(kept)
    stem = readers[model.graph.input[0].name]
    assert stem.op_type == "Conv" and stem.name in kept and kept[-1] == "extra_node"


def test_sensitivity_ranks_quantized_nodes_and_exclusion_keeps_them_float(float_graph, tmp_path):
    quantized = tmp_path / "q.onnx"
    quantize_onnx(float_graph, quantized, calibration(), "tensorrt")
    ranking = rank_onnx(float_graph, quantized, calibration(2), "tensorrt")
    assert ranking and all(a.drop_db >= b.drop_db for a, b in itertools.pairwise(ranking))
    assert {n.op for n in ranking} <= {"Conv", "MatMul", "Gemm", "ConvTranspose"}
    worst = ranking[0].name
    quantize_onnx(float_graph, tmp_path / "k.onnx", calibration(), "tensorrt", [worst])
    kept = onnx.load(str(tmp_path / "k.onnx"))
    dequantized = {n.output[0] for n in kept.graph.node if n.op_type == "DequantizeLinear"}
    node = next(n for n in kept.graph.node if n.name == worst)
    assert not any(i in dequantized for i in node.input)


def test_onnxruntime_int8_runs_each_gelu_as_one_float_op(float_graph, tmp_path):
    out = tmp_path / "ort.onnx"
    quantize_onnx(float_graph, out, calibration(), "onnxruntime")
    model = onnx.load(str(out))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops["Gelu"] == 8 and ops["Erf"] == 0  # AFFormer-tiny: one exact GELU per encoder MLP
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    readers = {i: n.op_type for n in model.graph.node for i in n.input}
    for gelu in (n for n in model.graph.node if n.op_type == "Gelu"):
        assert producers[gelu.input[0]] == "DequantizeLinear" and readers[gelu.output[0]] == "QuantizeLinear"
    x = calibration(1)[0]
    assert np.abs(run(out, x) - run(float_graph, x)).max() < 1.0
    tensorrt = tmp_path / "trt.onnx"  # TensorRT's parser has no com.microsoft ops: its graph keeps the Erf
    quantize_onnx(float_graph, tensorrt, calibration(), "tensorrt")
    assert collections.Counter(n.op_type for n in onnx.load(str(tensorrt)).graph.node)["Erf"] == 8


def optimized_op_types(path: Path, tmp_path: Path) -> collections.Counter:
    """Op types of the graph ONNX Runtime runs (its Q/DQ fusions applied, no hardware-specific layouts)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def test_onnxruntime_int8_dequantizes_only_what_runs_in_float(float_graph, tmp_path):
    out = tmp_path / "ort.onnx"
    quantize_onnx(float_graph, out, calibration(), "onnxruntime")
    model = onnx.load(str(out))
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    norms = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "InstanceNormalization")]
    assert len(norms) == 17 and not any(i in dequantized for n in norms for i in n.input[1:])  # float weights
    weights = {
        n.output[0]: n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in {t.name for t in model.graph.initializer}
    }
    constant_left = [weights[n.input[0]] for n in model.graph.node if n.op_type == "MatMul" and n.input[0] in weights]
    assert len(constant_left) == 48  # AFFormer-tiny's pooling matrices: 3 filters × 2 sides × 8 layers
    for node in constant_left:  # per tensor, as QLinearMatMul needs
        assert initializer(model, node.input[0]).dtype == np.uint8 and initializer(model, node.input[1]).size == 1
    ops = optimized_op_types(out, tmp_path)
    assert ops["HardSigmoid"] == 0 and ops["MatMul"] == ops["Softmax"] == 8  # only the Softmax readers stay float
    x = calibration(1)[0]
    assert np.abs(run(out, x) - run(float_graph, x)).max() < 1.0


def hardsigmoid_graph(x_scale: float, x_zero: int, y_scale: float, y_zero: int) -> onnx.ModelProto:
    """input → Q → DQ → HardSigmoid(1/6, ½) → Q → DQ → y: the Q/DQ pattern of one quantized HardSwish gate."""
    constants = {
        "xs": np.array(x_scale, np.float32),
        "xz": np.array(x_zero, np.uint8),
        "ys": np.array(y_scale, np.float32),
        "yz": np.array(y_zero, np.uint8),
    }
    nodes = [
        onnx.helper.make_node("QuantizeLinear", ["input", "xs", "xz"], ["xq"], name="qx"),
        onnx.helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dqx"),
        onnx.helper.make_node("HardSigmoid", ["xd"], ["h"], name="gate", alpha=1 / 6, beta=0.5),
        onnx.helper.make_node("QuantizeLinear", ["h", "ys", "yz"], ["hq"], name="qh"),
        onnx.helper.make_node("DequantizeLinear", ["hq", "ys", "yz"], ["y"], name="dqh"),
    ]
    io = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 512]) for n in ("input", "y")]
    inits = [numpy_helper.from_array(v, k) for k, v in constants.items()]
    graph = onnx.helper.make_graph(nodes, "g", io[:1], io[1:], inits)
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 19)], ir_version=10)


def test_hardsigmoid_becomes_one_quantized_add_with_the_same_output(tmp_path):
    x = np.linspace(-8, 8, 512, dtype=np.float32)[None]
    original = hardsigmoid_graph(16 / 255, 128, 0.97 / 255, 0)  # the gate's Q saturates inside [0, 1]
    folded = ir.from_proto(original)
    assert fold_hardsigmoid(folded) == 1
    assert [n.op_type for n in folded.graph] == [
        "QuantizeLinear",
        *["DequantizeLinear"] * 2,
        "Add",
        "QuantizeLinear",
        "DequantizeLinear",
    ]
    paths = [tmp_path / "original.onnx", tmp_path / "folded.onnx"]
    for model, path in zip((original, ir.to_proto(folded)), paths, strict=True):
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    ops = optimized_op_types(paths[1], tmp_path)
    assert ops["QLinearAdd"] == 1 and ops["HardSigmoid"] == 0
    expected, got = run(paths[0], x), run(paths[1], x)
    assert np.abs(got - expected).max() <= 0.97 / 255 * 1.001  # at most one step apart (rounding)
    assert (got == expected).mean() > 0.99
    assert expected.min() == 0 and expected.max() == pytest.approx(0.97)  # the clip at both ends was exercised
    for unsafe in (hardsigmoid_graph(16 / 255, 128, 1.2 / 255, 0), hardsigmoid_graph(16 / 255, 128, 1 / 255, 20)):
        assert fold_hardsigmoid(ir.from_proto(unsafe)) == 0  # its Q could hold values outside [0, 1]


def test_gelu_fusion_needs_the_exact_pattern():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])

    def graph(root_two: float, half: float, half_last: bool = False) -> onnx.ModelProto:
        constants = {"r": root_two, "one": 1.0, "half": half}
        muls = [("half", "a"), ("x", "h")] if not half_last else [("a", "x"), ("h", "half")]  # ½·(…)·x or (…)·x·½
        nodes = [
            onnx.helper.make_node("Div", ["x", "r"], ["d"]),
            onnx.helper.make_node("Erf", ["d"], ["e"]),
            onnx.helper.make_node("Add", ["one", "e"] if half_last else ["e", "one"], ["a"]),
            onnx.helper.make_node("Mul", list(muls[0]), ["h"]),
            onnx.helper.make_node("Mul", list(muls[1]), ["y"], name="outer"),
        ]
        inits = [onnx.numpy_helper.from_array(np.array(v, np.float32), k) for k, v in constants.items()]
        return onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [x], [y], inits))

    for half_last in (False, True):
        exact = ir.from_proto(graph(float(np.sqrt(2.0)), 0.5, half_last))
        assert fuse_gelu(exact) == 1 and [(n.op_type, n.name) for n in exact.graph] == [("Gelu", "outer")]
        assert exact.graph.outputs[0].name == "y" and exact.opset_imports["com.microsoft"] == 1
    for wrong in (graph(2.0, 0.5), graph(float(np.sqrt(2.0)), 0.25)):
        model = ir.from_proto(wrong)
        assert fuse_gelu(model) == 0 and len(model.graph) == 5
    shared = graph(float(np.sqrt(2.0)), 0.5)  # the Erf is read outside the pattern: nothing may be removed
    shared.graph.output.append(onnx.helper.make_tensor_value_info("e", onnx.TensorProto.FLOAT, [1, 4]))
    assert fuse_gelu(ir.from_proto(shared)) == 0


def test_inlined_nodes_are_named_ranked_and_can_be_kept_float(float_graph, tmp_path):
    # ONNX Runtime's pre-processing inlines HardSwish into nameless HardSigmoid and Mul nodes
    before = quantize._prepared.cache_info().hits
    prepared = onnx.load(str(quantize.prepare_for_quantization(float_graph, tmp_path / "prepared.onnx", "onnxruntime")))
    names = [n.name for n in prepared.graph.node]
    assert all(names) and len(set(names)) == len(names)
    gates = {n.output[0] for n in prepared.graph.node if n.op_type == "HardSigmoid"}
    hard_swish = {
        n.name: next(i for i in n.input if i in gates)
        for n in prepared.graph.node
        if n.op_type == "Mul" and gates & set(n.input)
    }  # Mul → the HardSigmoid output it reads
    quantized = tmp_path / "q.onnx"
    quantize_onnx(float_graph, quantized, calibration(), "onnxruntime")
    assert quantize._prepared.cache_info().hits > before  # prepared once per graph

    def quantized_tensors(path: Path) -> set[str]:
        return {n.input[0] for n in onnx.load(str(path)).graph.node if n.op_type == "QuantizeLinear"}

    ranked = {n.name for n in rank_onnx(float_graph, quantized, calibration(2), "onnxruntime")}
    assert len(hard_swish) == len(gates) and set(hard_swish) <= ranked
    mul, gate = next(iter(hard_swish.items()))
    assert gate in quantized_tensors(quantized)
    kept = tmp_path / "k.onnx"
    quantize_onnx(float_graph, kept, calibration(), "onnxruntime", [mul])
    assert gate not in quantized_tensors(kept)  # the Mul reads the HardSigmoid in float


@pytest.mark.parametrize(
    ("target", "precision", "artifact", "hint"),
    [
        ("onnxruntime", "fp16", "model.fp16.onnx", None),
        ("onnxruntime", "int8", "model.int8.onnx", None),
        ("openvino", "fp16", "model.xml", "f32"),
        ("openvino", "bf16", "model.xml", "bf16"),
        ("openvino", "int8", "model.xml", "bf16"),
        ("tensorrt", "fp16", "model.fp16.onnx", None),
        ("tensorrt", "int8", "model.int8.onnx", None),
    ],
)
def test_precision_bundles_report_the_ladder_and_run(random_export, target, precision, artifact, hint):
    bundle = read_bundle(random_export(target, precision))
    bundle.verify()
    manifest = bundle.manifest
    assert manifest.precision == precision and manifest.artifacts[target] == artifact
    parity = manifest.parity
    assert parity["passed"] and not parity["gated"] and "random weights" in parity["note"]
    result = parity["results"][target]
    assert result["precision"] == precision and result["gates"] == {}  # random weights: reported, not gated
    ladder = result["ladder"]
    assert ladder["images"] == 4 and 0 < ladder["agreement"] <= 1 and ladder["cosine"] > 0.9
    assert parity["results"]["onnx"]["gates"] == {"max_abs": 1e-4}  # the fp32 graph stays gated
    if hint:
        assert manifest.backend_config("openvino") == {"INFERENCE_PRECISION_HINT": hint}
    # AFFormer's encoder: the official token layout where OpenVINO runs f32 kernels, no LayerNorm
    # transposes where it runs bf16 and int8
    openvino_layouts = {"fp16": "tokens", "bf16": "channels-reduce", "int8": "channels-reduce"}
    layout = openvino_layouts[precision] if target == "openvino" else "channels"
    assert manifest.export["encoder_layout"] == layout
    transposes = manifest.export["ops"]["Transpose"]
    assert transposes == {"tokens": 88, "channels": 48, "channels-reduce": 16}[layout]
    if target != "tensorrt":
        segmenter = load(bundle.path)
        labels = segmenter.predict(np.zeros((40, 50, 3), np.uint8))
        assert labels.shape == (40, 50)


def test_openvino_int8_and_fp16_artifacts(random_export):
    fp32_weights = 4 * read_bundle(random_export("openvino", "bf16")).manifest.model.params
    fp16 = read_bundle(random_export("openvino", "fp16")).manifest
    assert fp16.files["model.bin"].bytes < 0.6 * fp32_weights
    int8 = read_bundle(random_export("openvino", "int8")).manifest
    assert int8.export["precision"]["fake_quantize_nodes"] > 10
    assert int8.export["calibration"].startswith("8 images of a synthetic set")


def test_tensorrt_bundle_carries_commands_and_says_the_engine_is_unverified(random_export):
    manifest = read_bundle(random_export("tensorrt", "int8")).manifest
    section = manifest.tensorrt
    assert section["graph"] == "model.int8.onnx" and section["engine_build"].startswith("UNVERIFIED")
    assert section["lint"]["errors"] == 0
    commands = " ".join(section["trtexec"].values())
    assert "model.int8.onnx" in commands and "--saveEngine" in commands
    assert manifest.parity["results"]["tensorrt"]["run_with"] == "onnxruntime"
    assert "TensorRT is not installed" in manifest.parity["proxies"]["tensorrt"]
    with pytest.raises(BackendUnavailableError, match="pip install"):
        load(random_export("tensorrt", "int8"))
    proxy = load(random_export("tensorrt", "int8"), backend="onnxruntime")  # runs the Q/DQ graph itself
    assert proxy.runner.path.name == proxy.artifact == "model.int8.onnx" and proxy.precision == "int8"


def test_another_backend_runs_the_same_precision_or_refuses_naming_what_it_would_run(random_export):
    bundle = random_export("onnxruntime", "fp16")
    with pytest.raises(
        ValueError, match=r"no fp16 artifact for openvino: it would run the fp32 portable graph model\.onnx"
    ):
        load(bundle, backend="openvino")
    with load(bundle, backend="openvino", any_precision=True) as seg:
        assert (seg.precision, seg.artifact, seg.runner.path.name) == ("fp32", "model.onnx", "model.onnx")
        assert "precision='fp32', artifact='model.onnx'" in repr(seg)
    with load(bundle) as seg:
        assert (seg.precision, seg.artifact) == ("fp16", seg.runner.path.name) and seg.artifact != "model.onnx"


@pytest.mark.parametrize(
    ("target", "precision", "reason"),
    [("onnxruntime", "bf16", "no bf16 kernels"), ("onnx", "int8", "portable fp32"), ("tensorrt", "bf16", "fp16")],
)
def test_unsupported_precisions_say_why(tmp_path, target, precision, reason):
    with pytest.raises(ValueError, match=reason):
        export_bundle(ExportRequest(model="afformer-tiny", out=tmp_path / "b", target=target, precision=precision))


def test_auto_exclude_needs_int8(tmp_path):
    with pytest.raises(ValueError, match="--precision int8"):
        export_bundle(ExportRequest(model="afformer-tiny", out=tmp_path / "b", precision="fp16", auto_exclude=True))


# ---- gated: a model that has learnt something (tests/conftest.py: trained_afformer) ----------------------


def trained_request(trained_afformer, out: Path, target: str, precision: str, **extra) -> ExportRequest:
    checkpoint, data, _ = trained_afformer
    return ExportRequest(
        model="afformer-tiny",
        out=out,
        target=target,
        precision=precision,
        input_size=(128, 128),
        num_classes=6,
        checkpoint=checkpoint,
        calib=data,
        calib_count=16,
        parity_data=data,
        **extra,
    )


@pytest.mark.parametrize(("target", "precision"), [("openvino", "bf16"), ("onnxruntime", "int8")])
def test_trained_model_is_gated_on_labelled_images(trained_afformer, tmp_path, target, precision):
    out = export_bundle(trained_request(trained_afformer, tmp_path / "b", target, precision, gates={"agreement": 0.9}))
    parity = read_bundle(out).manifest.parity
    assert parity["gated"] and parity["note"] is None and parity["passed"]
    result = parity["results"][target]
    assert result["gates"]["agreement"] == 0.9
    ladder = result["ladder"]
    assert ladder["images"] == 8 and 0.9 <= ladder["agreement"] < 1.0
    assert ladder["miou_reference"] > 0.4 and "miou_drop" in ladder and "boundary_f" in ladder
    if precision == "int8":
        assert result["gates"]["miou_drop"] == 1.0
        assert ladder["miou_drop"] <= 1.0


def test_failing_rung_is_named_and_nothing_is_written(trained_afformer, tmp_path):
    request = trained_request(trained_afformer, tmp_path / "b", "onnxruntime", "int8", gates={"sqnr_db": 99.0})
    with pytest.raises(ParityError, match=r"onnxruntime: sqnr_db [\d.]+ < 99.*lose the most SQNR.*dB.*--auto-exclude"):
        export_bundle(request)
    assert list(tmp_path.iterdir()) == []


def test_auto_exclude_keeps_the_fewest_nodes_in_float(trained_afformer, tmp_path):
    # An SQNR gate above what full int8 reaches but below fp32: some nodes must stay float.
    full = export_bundle(trained_request(trained_afformer, tmp_path / "full", "tensorrt", "int8"))
    sqnr = read_bundle(full).manifest.parity["results"]["tensorrt"]["ladder"]["sqnr_db"]
    request = trained_request(
        trained_afformer, tmp_path / "b", "tensorrt", "int8", gates={"sqnr_db": sqnr + 1.0}, auto_exclude=True
    )
    parity = read_bundle(export_bundle(request)).manifest.parity
    report = parity["auto_exclude"]
    assert report["passed"] and parity["passed"]
    kept = report["kept_float"]
    assert kept and parity["results"]["tensorrt"]["ladder"]["sqnr_db"] >= sqnr + 1.0
    # The fewest: one node less fails (it was tried), and the kept nodes really are float.
    assert any(t["kept_float"] == len(kept) - 1 and not t["passed"] for t in report["tries"])
    graph = onnx.load(str(tmp_path / "b" / "model.int8.onnx"))
    weights = {t.name for t in graph.graph.initializer}
    quantized_weights = {
        n.output[0] for n in graph.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights
    }
    kept_nodes = [n for n in graph.graph.node if n.name in kept]
    assert len(kept_nodes) == len(kept)
    assert not any(i in quantized_weights for n in kept_nodes for i in n.input)
    assert report["worst_nodes"][0]["drop_db"] >= report["worst_nodes"][-1]["drop_db"]


def test_dynamic_tensorrt_bundle_gets_an_optimisation_profile(tmp_path):
    request = ExportRequest(
        model="segformer-b0", out=tmp_path / "b", target="tensorrt", precision="fp16", input_size=SIZE, dynamic=True
    )
    manifest = read_bundle(export_bundle(request)).manifest
    assert manifest.input.shape == (1, 3, None, None)
    assert set(manifest.parity["results"]["tensorrt"]["by_size"]) == {"64x64", "96x64"}
    command = manifest.tensorrt["trtexec"]["tensorrt-11"]
    assert "--minShapes=input:1x3x64x64" in command and "--maxShapes=input:1x3x128x128" in command
    assert "--fp16" not in command and "--stronglyTyped" in manifest.tensorrt["trtexec"]["tensorrt-10"]


def test_fp16_graph_has_one_cast_per_tensor_where_several_fp32_ops_read_it(tmp_path):
    # CGRSeg feeds one tensor to two ReduceMeans (kept fp32): the converter writes the same Cast twice.
    export_bundle(ExportRequest(model="cgrseg-t", out=tmp_path / "b", target="onnx", input_size=SIZE))
    converted = to_fp16(onnx.load(str(tmp_path / "b" / "model.onnx")))
    outputs = [o for n in converted.graph.node for o in n.output]
    assert len(outputs) == len(set(outputs))
    x = calibration(1)[0]
    onnx.save(converted, str(tmp_path / "fp16.onnx"))
    reference = run(tmp_path / "b" / "model.onnx", x)
    assert np.abs(run(tmp_path / "fp16.onnx", x) - reference).max() < 0.05 * np.abs(reference).max()


def test_fp16_repeats_of_one_node_are_dropped():
    # Converters before ONNX Runtime 1.32 append one identical Cast per fp32 reader of a tensor.
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, [2])
    ys = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, []) for n in ("a", "b")]
    cast = onnx.helper.make_node("Cast", ["x"], ["c"], name="cast", to=onnx.TensorProto.FLOAT)
    nodes = [
        onnx.helper.make_node("ReduceMean", ["c"], ["a"], name="a", keepdims=0),
        onnx.helper.make_node("ReduceSum", ["c"], ["b"], name="b", keepdims=0),
        cast,
        cast,
    ]
    graph = onnx.helper.make_graph(nodes, "g", [x], ys)
    fp16._drop_repeated_nodes(graph)
    assert [n.name for n in graph.node] == ["a", "b", "cast"]
    other = onnx.helper.make_node("Cast", ["x"], ["c"], name="other", to=onnx.TensorProto.DOUBLE)
    graph.node.append(other)
    with pytest.raises(ValueError, match="writes 'c' from two different nodes"):
        fp16._drop_repeated_nodes(graph)


def _parity(agreement: float, passed: bool) -> dict:
    """A parity report as the ladder writes it, reduced to what the search reads."""
    failures = [] if passed else [f"openvino: agreement {agreement:.4f} < 0.99"]
    ladder = {"agreement": agreement}
    results = {"onnx": {"precision": "fp32", "ladder": {"agreement": 1.0}}}
    results["openvino"] = {"precision": "int8", "ladder": ladder}
    return {"passed": passed, "failures": failures, "results": results}


def test_auto_exclude_search_reports_the_best_build_when_none_passes():
    # Agreement falls as more nodes stay float (seen after a brief training): the best build is an early one.
    agreements = {0: 0.9870, 1: 0.9878, 2: 0.9861, 4: 0.9840, 8: 0.9826}
    built: list[int] = []

    def rebuild(kept: tuple[str, ...]):
        built.append(len(kept))
        return f"artifacts of {len(kept)}", _parity(agreements[len(kept)], passed=False)

    count, tries, (artifacts, parity) = search_kept_float([f"n{i}" for i in range(8)], _parity(0.9870, False), rebuild)
    assert [t["kept_float"] for t in tries] == [0, 1, 2, 4, 8]
    assert (
        count == 1 and artifacts == "artifacts of 1" and parity["results"]["openvino"]["ladder"]["agreement"] == 0.9878
    )
    assert built[-1] == 1  # rebuilt last, so the files on disk are the reported build's


def test_auto_exclude_search_bisects_to_the_fewest_that_pass():
    def rebuild(kept: tuple[str, ...]):
        return len(kept), _parity(0.98 + len(kept) / 1000, passed=len(kept) >= 5)

    count, tries, (artifacts, parity) = search_kept_float([f"n{i}" for i in range(16)], _parity(0.98, False), rebuild)
    assert count == 5 and artifacts == 5 and parity["passed"]
    assert [t["kept_float"] for t in tries] == [0, 1, 2, 4, 8, 6, 5]


@pytest.mark.slow
def test_readme_int8_recipe_passes_its_default_gates(trained_afformer, tmp_path):
    # The README's recipe (openvino int8 with --auto-exclude, default gates) after a brief `edgeseg train`, at 128².
    request = trained_request(trained_afformer, tmp_path / "b", "openvino", "int8", auto_exclude=True)
    parity = read_bundle(export_bundle(request)).manifest.parity
    assert parity["passed"] and parity["gated"]
    result = parity["results"]["openvino"]
    assert result["gates"] == {"agreement": 0.99, "miou_drop": 1.0}
    assert result["ladder"]["agreement"] >= 0.99 and result["ladder"]["miou_drop"] <= 1.0
    report = parity.get("auto_exclude")  # present only when full int8 missed a gate
    if report is not None:
        assert report["passed"] and report["tries"][0]["kept_float"] == 0
