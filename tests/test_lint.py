"""`edgeseg.export.lint`: each rule on a small hand-built graph, real ORT-quantized and fp16 graphs, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseg.cli import main
from edgeseg.export.lint import Finding, format_findings, lint_onnx

FLOAT = TensorProto.FLOAT
TARGETS = ("onnxruntime", "openvino", "tensorrt")


def tensor(name: str, dims: list[int | str], dtype: int = FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, dims)


def const(name: str, value: object, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: tuple[onnx.TensorProto, ...] = (),
    opset: int = 18,
    extra_opsets: tuple[tuple[str, int], ...] = (),
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    return helper.make_model(graph, opset_imports=opsets)


def one_node(op: str, inputs: list[str], initializers: tuple[onnx.TensorProto, ...] = (), **attrs: object):
    """x (1×4×8×8 float) → ``op`` → y."""
    node = helper.make_node(op, inputs, ["y"], name=f"the_{op.lower()}", **attrs)
    return model([node], [tensor("x", [1, 4, 8, 8])], [tensor("y", [])], initializers)


def rules(findings: list[Finding], severity: str | None = None) -> set[str]:
    return {f.rule for f in findings if severity is None or f.severity == severity}


# ---- a clean graph --------------------------------------------------------------------------------------------


def clean_model() -> onnx.ModelProto:
    """Conv → Relu → bilinear Resize ×2 → ReduceMean (constant axes) → LayerNormalization (opset 18)."""
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Resize", ["r", "", "scales"], ["up"], name="resize", mode="linear"),
        helper.make_node("ReduceMean", ["up", "axes"], ["m"], name="mean", keepdims=1),
        helper.make_node("Sub", ["up", "m"], ["s"], name="sub"),
        helper.make_node("LayerNormalization", ["s", "gamma"], ["y"], name="norm", axis=-1),
    ]
    initializers = (
        const("w", np.ones((4, 4, 3, 3))),
        const("b", np.zeros(4)),
        const("scales", [1, 1, 2, 2]),
        const("axes", [1], np.int64),
        const("gamma", np.ones(16)),
    )
    return model(nodes, [tensor("x", [1, 4, 8, 8])], [tensor("y", [1, 4, 16, 16])], initializers)


@pytest.mark.parametrize("target", TARGETS)
def test_a_clean_graph_has_no_findings(target):
    assert lint_onnx(clean_model(), target) == []


def test_unknown_target_is_refused():
    with pytest.raises(ValueError, match="unknown lint target 'coreml'"):
        lint_onnx(clean_model(), "coreml")


# ---- TensorRT rules -------------------------------------------------------------------------------------------


def opset_model(opset: int) -> onnx.ModelProto:
    return model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", [1, 4])], [tensor("y", [1, 4])], opset=opset)


@pytest.mark.parametrize(("opset", "severity"), [(8, "error"), (21, "warning"), (26, "error")])
def test_trt_opset(opset, severity):
    (finding,) = lint_onnx(opset_model(opset), "tensorrt")
    assert (finding.rule, finding.severity, finding.node) == ("trt-opset", severity, "(graph)")
    assert lint_onnx(opset_model(20), "tensorrt") == []


def test_trt_unsupported_ops():
    nodes = [
        helper.make_node("Unique", ["x"], ["u"], name="unique"),
        helper.make_node("Swish", ["x"], ["s"], name="swish"),
    ]
    graph = model(nodes, [tensor("x", [8])], [tensor("u", [None]), tensor("s", [8])], opset=24)
    found = {f.node: f for f in lint_onnx(graph, "tensorrt") if f.rule == "trt-unsupported-op"}
    assert set(found) == {"unique", "swish"}
    assert "does not support Unique" in found["unique"].message
    assert "not in TensorRT's supported-operator list" in found["swish"].message


def test_trt_rejects_ort_integer_ops_with_a_qdq_hint():
    node = helper.make_node("ConvInteger", ["x", "w"], ["y"], name="conv_int")
    graph = model(
        [node],
        [tensor("x", [1, 1, 4, 4], TensorProto.UINT8)],
        [tensor("y", [1, 1, 4, 4], TensorProto.INT32)],
        [const("w", np.ones((1, 1, 1, 1)), np.uint8)],
    )
    (finding,) = lint_onnx(graph, "tensorrt")
    assert finding.rule == "trt-unsupported-op" and "quant_format=QDQ" in finding.message


def test_custom_domain_ops():
    node = helper.make_node("FusedConv", ["x", "w"], ["y"], name="fused", domain="com.microsoft")
    graph = model(
        [node],
        [tensor("x", [1, 4, 8, 8])],
        [tensor("y", [1, 4, 8, 8])],
        [const("w", np.ones((4, 4, 1, 1)))],
        extra_opsets=(("com.microsoft", 1),),
    )
    assert [(f.rule, f.severity) for f in lint_onnx(graph, "tensorrt")] == [("trt-custom-domain", "error")]
    assert [(f.rule, f.severity) for f in lint_onnx(graph, "openvino")] == [("ov-custom-domain", "warning")]
    assert lint_onnx(graph, "onnxruntime") == []


@pytest.mark.parametrize(
    ("attrs", "says"),
    [
        ({"mode": "cubic"}, "nearest and linear only"),
        ({"mode": "linear", "antialias": 1}, "antialias=1"),
        ({"mode": "linear", "keep_aspect_ratio_policy": "not_larger"}, "keep_aspect_ratio_policy"),
        ({"mode": "linear", "axes": [2, 3]}, "axes [2, 3]"),
        ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}, "tf_crop_and_resize"),
    ],
)
def test_trt_resize(attrs, says):
    scales = [2, 2] if "axes" in attrs else [1, 1, 2, 2]
    (finding,) = (
        f for f in lint_onnx(one_node("Resize", ["x", "", "scales"], (const("scales", scales),), **attrs), "tensorrt")
    )
    assert finding.rule == "trt-resize" and finding.node == "the_resize" and says in finding.message
    assert finding.message.startswith("the_resize: ")


def test_resize_antialias_warns_on_cpu_runtimes():
    graph = one_node("Resize", ["x", "", "scales"], (const("scales", [1, 1, 2, 2]),), mode="linear", antialias=1)
    for target in ("onnxruntime", "openvino"):
        assert [(f.rule, f.severity) for f in lint_onnx(graph, target)] == [("resize-antialias", "warning")]


def test_trt_pools():
    one_d = model(
        [helper.make_node("MaxPool", ["x"], ["y"], name="pool1d", kernel_shape=[2])],
        [tensor("x", [1, 4, 8])],
        [tensor("y", [1, 4, 7])],
    )
    dilated = one_node("MaxPool", ["x"], kernel_shape=[2, 2], dilations=[2, 2])
    indices = model(
        [helper.make_node("MaxPool", ["x"], ["y", "idx"], name="pool_idx", kernel_shape=[2, 2])],
        [tensor("x", [1, 4, 8, 8])],
        [tensor("y", [1, 4, 7, 7]), tensor("idx", [1, 4, 7, 7], TensorProto.INT64)],
    )
    messages = [f.message for g in (one_d, dilated, indices) for f in lint_onnx(g, "tensorrt") if f.rule == "trt-pool"]
    assert len(messages) == 3
    assert "1-D MaxPool" in messages[0] and "dilations [2, 2]" in messages[1] and "Indices" in messages[2]
    assert lint_onnx(one_node("MaxPool", ["x"], kernel_shape=[2, 2]), "tensorrt") == []


def test_trt_reduce_and_unsqueeze_axes_must_be_constant():
    computed = model(
        [
            helper.make_node("ReduceMean", ["x", "axes"], ["m"], name="mean"),
            helper.make_node("Unsqueeze", ["m", "axes"], ["y"], name="unsqueeze"),
        ],
        [tensor("x", [1, 4, 8, 8]), tensor("axes", [1], TensorProto.INT64)],
        [tensor("y", [])],
    )
    found = [f for f in lint_onnx(computed, "tensorrt") if f.rule == "trt-input-not-constant"]
    assert [f.node for f in found] == ["mean", "unsqueeze"] and "'axes'" in found[0].message
    from_constant_node = model(
        [
            helper.make_node("Constant", [], ["axes"], value=const("v", [1], np.int64)),
            helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean"),
        ],
        [tensor("x", [1, 4, 8, 8])],
        [tensor("y", [])],
    )
    assert lint_onnx(from_constant_node, "tensorrt") == []


@pytest.mark.parametrize(("k", "attrs", "says"), [(4000, {}, "k=4000"), (3, {"sorted": 0}, "sorted=0")])
def test_trt_topk(k, attrs, says):
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk", axis=-1, **attrs)
    graph = model([node], [tensor("x", [1, 5000])], [tensor("v", []), tensor("i", [], TensorProto.INT64)])
    graph.graph.initializer.append(const("k", [k], np.int64))
    (finding,) = lint_onnx(graph, "tensorrt")
    assert finding.rule == "trt-topk" and says in finding.message


def qdq_model(zero_point: int, zero_point_type: type, bias_type: int = TensorProto.INT8) -> onnx.ModelProto:
    """x → Q → DQ → Add(DQ(bias)) → y."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="quant"),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"], name="dequant"),
        helper.make_node("DequantizeLinear", ["bias_q", "s"], ["bias"], name="dequant_bias"),
        helper.make_node("Add", ["dq", "bias"], ["y"], name="add"),
    ]
    bias = numpy_helper.from_array(np.ones(4, dtype=helper.tensor_dtype_to_np_dtype(bias_type)), "bias_q")
    initializers = (const("s", 0.1), const("zp", zero_point, zero_point_type), bias)
    return model(nodes, [tensor("x", [1, 4])], [tensor("y", [1, 4])], initializers)


def test_trt_symmetric_int8_qdq_passes():
    assert lint_onnx(qdq_model(0, np.int8), "tensorrt") == []


def test_trt_qdq_zero_point_uint8_and_int32_bias():
    findings = lint_onnx(qdq_model(128, np.uint8, TensorProto.INT32), "tensorrt")
    by_rule = {(f.rule, f.node) for f in findings}
    assert by_rule == {
        ("trt-qdq-zero-point", "quant"),
        ("trt-qdq-zero-point", "dequant"),
        ("trt-qdq-type", "quant"),
        ("trt-qdq-type", "dequant"),
        ("trt-dq-int32-bias", "dequant_bias"),
    }
    assert all(f.severity == "error" for f in findings)
    bias = next(f for f in findings if f.rule == "trt-dq-int32-bias")
    assert "'QuantizeBias': False" in bias.message
    assert rules(lint_onnx(qdq_model(3, np.int8), "tensorrt")) == {"trt-qdq-zero-point"}


def test_trt_layernorm_extra_outputs():
    node = helper.make_node("LayerNormalization", ["x", "g"], ["y", "mean"], name="ln", axis=-1)
    graph = model([node], [tensor("x", [2, 4])], [tensor("y", [2, 4]), tensor("mean", [])], [const("g", np.ones(4))])
    (finding,) = lint_onnx(graph, "tensorrt")
    assert finding.rule == "trt-layernorm-outputs" and finding.node == "ln"


def test_trt_double_tensors_warn():
    graph = model(
        [helper.make_node("Cast", ["x"], ["y"], name="to_double", to=TensorProto.DOUBLE)],
        [tensor("x", [4])],
        [tensor("y", [4], TensorProto.DOUBLE)],
    )
    (finding,) = lint_onnx(graph, "tensorrt")
    assert (finding.rule, finding.severity) == ("trt-double", "warning")
    assert lint_onnx(graph, "onnxruntime") == []


# ---- rules for every target -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_mixed_fp16_fp32_inputs_are_an_error(target):
    graph = one_node("Add", ["x", "h"], (const("h", np.ones(8), np.float16),))
    (finding,) = lint_onnx(graph, target)
    assert (finding.rule, finding.severity) == ("mixed-float-types", "error")
    assert "FLOAT and FLOAT16" in finding.message and "Cast" in finding.message


@pytest.mark.parametrize("target", TARGETS)
def test_resize_scales_converted_to_fp16_are_an_error(target):
    graph = one_node("Resize", ["x", "", "scales"], (const("scales", [1, 1, 2, 2], np.float16),), mode="linear")
    (finding,) = lint_onnx(graph, target)
    assert (finding.rule, finding.severity) == ("resize-scales-type", "error") and "FLOAT16" in finding.message


@pytest.mark.parametrize("target", TARGETS)
def test_argmax_warns(target):
    (finding,) = lint_onnx(one_node("ArgMax", ["x"], axis=1), target)
    assert (finding.rule, finding.severity, finding.node) == ("argmax-int64", "warning", "the_argmax")


def decomposed_layernorm(opset: int, dtype: type = np.float32) -> onnx.ModelProto:
    """TorchScript's opset-11 LayerNorm: x - mean(x), squared, mean, + eps, sqrt, divide; in ``dtype``."""
    mean_attrs = {"axes": [-1]} if opset < 18 else {}
    mean_inputs = [] if opset < 18 else ["axes"]
    nodes = [
        helper.make_node("ReduceMean", ["x", *mean_inputs], ["m"], name="mean", **mean_attrs),
        helper.make_node("Sub", ["x", "m"], ["d"], name="centre"),
        helper.make_node("Pow", ["d", "two"], ["d2"], name="square"),
        helper.make_node("ReduceMean", ["d2", *mean_inputs], ["v"], name="variance", **mean_attrs),
        helper.make_node("Add", ["v", "eps"], ["ve"], name="add_eps"),
        helper.make_node("Sqrt", ["ve"], ["std"], name="std"),
        helper.make_node("Div", ["d", "std"], ["y"], name="normalise"),
    ]
    initializers = [const("two", 2.0, dtype), const("eps", 1e-5, dtype)]
    if opset >= 18:
        initializers.append(const("axes", [-1], np.int64))
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return model(nodes, [tensor("x", [2, 8], elem)], [tensor("y", [2, 8], elem)], tuple(initializers), opset=opset)


@pytest.mark.parametrize("target", TARGETS)
def test_decomposed_layernorm_warns(target):
    (finding,) = lint_onnx(decomposed_layernorm(11), target)
    assert (finding.rule, finding.severity, finding.node) == ("decomposed-layernorm", "warning", "std")
    assert "export with opset >= 17" in finding.message
    (at_18,) = lint_onnx(decomposed_layernorm(18), target)
    assert at_18.rule == "decomposed-layernorm" and "LayerNormalization/GroupNormalization" in at_18.message
    (in_fp16,) = lint_onnx(decomposed_layernorm(18, np.float16), target)
    assert in_fp16.rule == "decomposed-layernorm" and "runs in FLOAT16" in in_fp16.message


def test_decomposed_layernorm_kept_in_fp32_inside_an_fp16_graph_is_fine():
    graph = decomposed_layernorm(18)
    graph.graph.node.append(helper.make_node("Cast", ["y"], ["y16"], name="to_half", to=TensorProto.FLOAT16))
    graph.graph.output.append(tensor("y16", [2, 8], TensorProto.FLOAT16))
    assert lint_onnx(graph, "tensorrt") == []


@pytest.mark.parametrize("target", TARGETS)
def test_average_pool_baked_for_one_size_in_a_dynamic_graph(target):
    node = helper.make_node("AveragePool", ["x"], ["y"], name="ppm_pool", kernel_shape=[8, 8], strides=[8, 8])
    dynamic = model([node], [tensor("x", [1, 4, "h", "w"])], [tensor("y", [])])
    (finding,) = lint_onnx(dynamic, target)
    assert (finding.rule, finding.severity, finding.node) == ("baked-adaptive-pool", "warning", "ppm_pool")
    assert lint_onnx(one_node("AveragePool", ["x"], kernel_shape=[8, 8], strides=[8, 8]), target) == []


def test_einsum_warns_on_cpu_runtimes_only():
    graph = one_node("Einsum", ["x", "x"], equation="nchw,nchw->nc")
    assert [(f.rule, f.severity) for f in lint_onnx(graph, "openvino")] == [("export-unfriendly-op", "warning")]
    assert lint_onnx(graph, "tensorrt") == []


def test_format_groups_by_severity_with_a_summary():
    argmax = Finding("warning", "a", "ArgMax", "argmax-int64", "why")
    findings = [*lint_onnx(qdq_model(0, np.int8, TensorProto.INT32), "tensorrt"), argmax]
    text = format_findings(findings)
    assert text.index("errors:") < text.index("warnings:")
    assert "[trt-dq-int32-bias] dequant_bias: DequantizeLinear of INT32 'bias_q'" in text
    assert text.splitlines()[-1] == "1 error(s), 1 warning(s) (trt-dq-int32-bias x1, argmax-int64 x1)"
    assert format_findings([]) == "0 error(s), 0 warning(s)"


# ---- real quantized and fp16 graphs from ONNX Runtime's tools -----------------------------------------------


def conv_model() -> onnx.ModelProto:
    """A small float Conv net: Conv 3→8 (3×3) → Relu → Conv 8→4 (1×1), with biases."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["logits"], name="conv2"),
    ]
    initializers = (
        const("w1", rng.standard_normal((8, 3, 3, 3)) * 0.3),
        const("b1", rng.standard_normal(8) * 0.1),
        const("w2", rng.standard_normal((4, 8, 1, 1)) * 0.3),
        const("b2", rng.standard_normal(4) * 0.1),
    )
    graph = model(nodes, [tensor("input", [1, 3, 16, 16])], [tensor("logits", [1, 4, 16, 16])], initializers, 17)
    graph.ir_version = 9
    return graph


def ort_quantized(tmp_path: Path, symmetric: bool) -> onnx.ModelProto:
    """``conv_model`` through onnxruntime.quantization.quantize_static (QDQ)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.batches = iter([{"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    source, destination = tmp_path / "float.onnx", tmp_path / f"qdq-{symmetric}.onnx"
    onnx.save(conv_model(), source)
    if symmetric:
        options = {
            "activation_type": QuantType.QInt8,
            "weight_type": QuantType.QInt8,
            "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        }
    else:
        options = {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QUInt8}
    quantize_static(str(source), str(destination), Reader(), quant_format=QuantFormat.QDQ, **options)
    return onnx.load(destination)


def test_symmetric_int8_qdq_from_onnxruntime_passes_the_tensorrt_lint(tmp_path):
    quantized = ort_quantized(tmp_path, symmetric=True)
    ops = [n.op_type for n in quantized.graph.node]
    assert ops.count("QuantizeLinear") >= 2 and ops.count("DequantizeLinear") >= 4
    assert lint_onnx(quantized, "tensorrt") == []


def test_default_asymmetric_uint8_qdq_fails_the_tensorrt_lint(tmp_path):
    findings = lint_onnx(ort_quantized(tmp_path, symmetric=False), "tensorrt")
    assert {"trt-qdq-zero-point", "trt-dq-int32-bias", "trt-qdq-type"} <= rules(findings, "error")
    uint8 = [f for f in findings if f.rule == "trt-qdq-type" and f.op == "DequantizeLinear"]
    assert uint8 and "UINT8" in uint8[0].message
    assert all(f.severity == "error" for f in findings)


def test_fp16_graph_with_float_io_passes_the_tensorrt_lint():
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(conv_model(), keep_io_types=True)
    assert any(init.data_type == TensorProto.FLOAT16 for init in half.graph.initializer)
    assert lint_onnx(half, "tensorrt") == []


# ---- the command line ---------------------------------------------------------------------------------------


def test_cli_lints_an_onnx_file_with_exit_codes(tmp_path, capsys):
    bad, good = tmp_path / "bad.onnx", tmp_path / "good.onnx"
    onnx.save(qdq_model(128, np.uint8, TensorProto.INT32), bad)
    onnx.save(clean_model(), good)
    assert main(["lint", str(bad), "--target", "tensorrt"]) == 1
    out = capsys.readouterr().out
    assert "errors:" in out and "[trt-dq-int32-bias] dequant_bias" in out and "5 error(s), 0 warning(s)" in out
    assert main(["lint", str(good), "--target", "tensorrt"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("0 error(s), 0 warning(s)")
    assert main(["lint", str(bad), "--target", "onnxruntime"]) == 0


def test_cli_reports_a_missing_file(tmp_path, capsys):
    assert main(["lint", str(tmp_path / "missing.onnx"), "--target", "openvino"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_lints_a_registered_model(capsys, one_torch_thread):
    assert main(["lint", "afformer-tiny", "--target", "tensorrt", "--input-size", "64x64", "--num-classes", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("afformer-tiny for tensorrt:") and "0 error(s), 0 warning(s)" in out


@pytest.mark.slow
@pytest.mark.parametrize("target", ["tensorrt", "openvino"])
def test_lint_of_a_model_checks_the_graph_its_bundle_holds(tmp_path, capsys, one_torch_thread, target):
    """`edgeseg lint MODEL` builds the graph export writes (AFFormer: the target's encoder layout), same verdict."""
    from edgeseg.bundle import read_bundle
    from edgeseg.export import ExportRequest, export_bundle
    from edgeseg.export.lint import load_graph
    from edgeseg.export.onnx_graph import op_histogram

    request = ExportRequest(model="afformer-tiny", out=tmp_path / "b", target=target, input_size=(64, 64))
    bundle = read_bundle(export_bundle(request))
    linted = load_graph("afformer-tiny", target, (64, 64), 150)
    written = onnx.load(str(bundle.path / "model.onnx"))
    assert op_histogram(linted) == op_histogram(written)
    assert bundle.manifest.export["encoder_layout"] == ("channels" if target == "tensorrt" else "tokens")
    findings = [f"[{f.rule}] {f.message}" for f in lint_onnx(linted, target)]
    assert findings == [f"[{f.rule}] {f.message}" for f in lint_onnx(load_graph(str(bundle.path), target), target)]
    if target == "tensorrt":
        assert bundle.manifest.tensorrt is not None
        assert bundle.manifest.tensorrt["lint"] == {"errors": 0, "warnings": findings}
    # the CLI on the bundle (on a model name: test_cli_lints_a_registered_model)
    assert main(["lint", str(bundle.path), "--target", target]) == 0
    assert f"0 error(s), {len(findings)} warning(s)" in capsys.readouterr().out.splitlines()[-1]
