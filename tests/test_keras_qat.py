"""Keras entry (`convert_keras_model`) and quantization-aware fine-tuning (`finetune`) on a
tiny Keras model built here (seconds). TensorFlow is the `tf` extra: these tests skip, with
the reason printed, only where it is not installed (CI installs it, so there they run)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="TensorFlow (the 'tf' extra) is not installed")
import keras  # noqa: E402

from tflite_quantmcu.analysis.model_analysis import analyze_model  # noqa: E402
from tflite_quantmcu.errors import ConfigError  # noqa: E402
from tflite_quantmcu.ir.reader import read_model_bytes  # noqa: E402
from tflite_quantmcu.keras import (FinetuneOptions, convert_keras_model, finetune,  # noqa: E402
                                   keras_layer_of, keras_to_int8)
from tflite_quantmcu.quant.bitops_target import plan_bitops, plan_for_bitops_ratio  # noqa: E402
from tflite_quantmcu.quant.plan import BitwidthPlan  # noqa: E402
from tflite_quantmcu.reference.executor import run_graph  # noqa: E402
from tflite_quantmcu.runtimes.litert import run_litert  # noqa: E402

SRAM = "36KB"  # below the tiny model's layer-based arena: a patch stage is needed
SETTINGS = {"max_file_growth": None, "measure_tflm": False}


def _tiny_model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((48, 48, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    y = keras.layers.Conv2D(32, 1, use_bias=False, name="expand")(x)
    y = keras.layers.BatchNormalization(name="expand_bn")(y)   # folded into the filter
    y = keras.layers.ReLU(6.0, name="expand_relu")(y)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(y)
    y = keras.layers.ReLU(6.0, name="dw_relu")(y)
    y = keras.layers.Conv2D(8, 1, name="project")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="tail")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x), name="tiny")


def _data():
    """Class k < 3: channel k brightened; class 3: none (GAP-separable, noisy)."""
    rng = np.random.default_rng(0)
    x = rng.random((320, 48, 48, 3), dtype=np.float32) * 0.6
    y = rng.integers(0, 4, 320).astype(np.int32)
    for k in range(len(y)):
        if y[k] < 3:
            x[k, :, :, y[k]] += 0.12
    return x, y


@pytest.fixture(scope="module")
def trained():
    x, y = _data()
    model = _tiny_model()
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:256], y[:256], epochs=4, batch_size=32, verbose=0, shuffle=False)
    return model, x, y


def _generator(x):
    def representative():
        for k in range(24):
            yield [x[k:k + 1]]
    return representative


@pytest.fixture(scope="module")
def converted(trained):
    model, x, y = trained
    return convert_keras_model(model, representative_dataset=_generator(x), sram=SRAM,
                               eval_data=[(x[256:], y[256:])], max_accuracy_drop=None,
                               **SETTINGS)


@pytest.fixture(scope="module")
def qat_plan(converted):
    """Every branch map VDQS put below 8 bits goes to 2 bits (no ranges: QAT learns them)."""
    bits = {k: (2 if b < 8 else 8) for k, b in converted.plan.bits.items()}
    assert any(b == 2 for b in bits.values())
    return BitwidthPlan(policy="test", options={}, bits=bits)


@pytest.fixture(scope="module")
def tuned(trained, qat_plan):
    model, x, y = trained
    return finetune(model, plan=qat_plan, train_data=(x[:256], y[:256]), epochs=1,
                    representative_dataset=_generator(x), sram=SRAM,
                    options=FinetuneOptions(learning_rate=1e-3, batch_size=32, progress=False),
                    **SETTINGS)


def test_convert_keras_model_round_trip(trained, converted):
    model, x, _ = trained
    conv = converted.conversion
    assert conv.patch_plan.is_patched and converted.plan is not None
    assert any(b < 8 for b in converted.plan.bits.values())
    # The int8 model our pipeline read is the converter's, bit-exact with LiteRT's reference
    # kernels under our executor, and the generator object (not only the function) works.
    again = keras_to_int8(model, samples=[x[k:k + 1] for k in range(24)])
    assert again == conv.input_bytes
    inputs = [np.clip(np.round(x[:4] / conv.graph.main.tensors[conv.graph.main.inputs[0]]
                               .quantization.scale[0]) - 128, -128, 127).astype(np.int8)]
    assert np.array_equal(run_graph(graph=conv.graph, inputs=inputs)[0],
                          run_litert(model_bytes=conv.input_bytes, inputs=inputs)[0])
    final = read_model_bytes(data=converted.model_bytes)
    logits = run_graph(graph=final, inputs=inputs)[0]
    assert logits.reshape(4, -1).shape == (4, 4)
    assert converted.report["accuracy"]["int8"] > 0.5  # learned, far above chance (0.25)


def test_representative_dataset_errors_are_typed(trained):
    model, x, _ = trained
    with pytest.raises(ConfigError, match="no samples"):
        convert_keras_model(model, representative_dataset=lambda: iter(()), sram=SRAM)
    with pytest.raises(ConfigError, match="one input"):
        convert_keras_model(model, representative_dataset=[[x[:1], x[:1]]], sram=SRAM)


def test_keras_layer_of_converter_names():
    names = ["block1_expand_relu6", "block1_expand", "block1_add"]
    assert keras_layer_of(tensor_name="m_1/block1_expand_relu6_1/Relu6;m_1/block1_expand_1/c",
                          layer_names=names) == "block1_expand_relu6"
    assert keras_layer_of(tensor_name="m_1/block1_add_1/Add", layer_names=names) == "block1_add"
    with pytest.raises(ConfigError, match="no Keras layer"):
        keras_layer_of(tensor_name="StatefulPartitionedCall_1:0", layer_names=names)


def test_finetune_applies_the_plan_widths_per_branch(tuned, qat_plan):
    sub_byte = {k for k, b in qat_plan.bits.items() if b < 8}
    covered = {k for site in tuned.sites for k, b in zip(site.keys, site.bits) if b < 8}
    assert covered == sub_byte
    for site in tuned.sites:
        # a branch map: every branch owns at least one pixel of the layer-based map
        assert site.owner is not None
        assert set(np.unique(site.owner)) == set(range(len(site.keys)))
    # each site's layer output is the map the owner array covers
    x, _ = _data()
    for site in tuned.sites:
        out = keras.Model(tuned.model.inputs, tuned.model.get_layer(site.layer).output)(x[:1])
        assert tuple(out.shape[1:3]) == site.owner.shape


def test_fake_quant_levels_match_the_plan_width(trained, qat_plan, tuned):
    """The wrapped layer's output has at most 2^b distinct values on each b-bit branch's
    pixels, computed with the learned interval exactly as the module's quantizer says."""
    from tflite_quantmcu.keras import fake_quant_model
    _, x, _ = trained
    site = tuned.sites[0]
    intervals = {k: (-0.0, 3.0) for s in tuned.sites for k in s.keys}
    fq = fake_quant_model(tuned.model, sites=tuned.sites, intervals=intervals)
    wrapped = fq.get_layer(f"{site.layer}_qat")
    values = keras.Model(fq.inputs, wrapped.output)(x[:2]).numpy()
    raw = keras.Model(tuned.model.inputs, tuned.model.get_layer(site.layer).output)(x[:2]).numpy()
    for branch, bits in enumerate(site.bits):
        mask = site.owner == branch
        got = values[:, mask, :]
        if bits == 8:
            np.testing.assert_array_equal(got, raw[:, mask, :])
            continue
        levels = (1 << bits) - 1
        step = np.float32(3.0) / np.float32(levels)
        expected = np.clip(np.round(raw[:, mask, :] / step), 0, levels) * step
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert len(np.unique(got)) <= levels + 1


def test_exported_ranges_are_applied_by_the_converter(tuned, qat_plan):
    plan = tuned.plan
    sub_byte = {k for k, b in plan.bits.items() if b < 8}
    assert set(plan.ranges) == sub_byte and all(r.rule == "qat" for r in plan.ranges.values())
    deployed = tuned.deploy(sram=SRAM, **SETTINGS)
    final = read_model_bytes(data=deployed.model_bytes).main
    exported = read_model_bytes(data=tuned.tflite_bytes).main
    for key, subbyte in plan.ranges.items():
        tensor = final.tensors[key]
        assert float(tensor.quantization.scale[0]) == float(np.float32(subbyte.scale))
        assert int(tensor.quantization.zero_point[0]) == subbyte.zero_point
        # the range spans the learned interval in the exported int8 map's codes
        op = int(key.split("/")[1])
        int8 = exported.tensors[exported.operators[op].outputs[0]].quantization
        span = (subbyte.high_code - subbyte.low_code) * float(int8.scale[0]) / \
            ((1 << subbyte.bits) - 1)
        assert abs(span - subbyte.scale) <= 1e-6 * span
    assert deployed.plan.ranges == plan.ranges


def test_deployed_accuracy_is_the_executors(trained, tuned):
    _, x, y = trained
    deployed = tuned.deploy(sram=SRAM, eval_data=[(x[256:], y[256:])], **SETTINGS)
    graph = read_model_bytes(data=deployed.model_bytes)
    scale = graph.main.tensors[graph.main.inputs[0]].quantization.scale[0]
    zp = graph.main.tensors[graph.main.inputs[0]].quantization.zero_point[0]
    codes = np.clip(np.round(x[256:] / scale) + zp, -128, 127).astype(np.int8)
    logits = run_graph(graph=graph, inputs=[codes])[0]
    expected = float(np.mean(np.argmax(logits.reshape(len(codes), -1), axis=1) == y[256:]))
    assert deployed.report["accuracy"]["final"] == pytest.approx(expected)


def test_finetune_is_deterministic(trained, qat_plan, tuned):
    model, x, y = trained
    again = finetune(model, plan=qat_plan, train_data=(x[:256], y[:256]), epochs=1,
                     representative_dataset=_generator(x), sram=SRAM,
                     options=FinetuneOptions(learning_rate=1e-3, batch_size=32, progress=False),
                     **SETTINGS)
    assert again.tflite_bytes == tuned.tflite_bytes
    assert again.plan.to_json() == tuned.plan.to_json()
    assert again.tflite_bytes != keras_to_int8(model, samples=[x[k:k + 1] for k in range(24)])


def test_bitops_ratio_plan(converted):
    patched = converted.conversion.patched
    base = plan_bitops(graph=patched, bits={})
    assert base == analyze_model(graph=patched).bitops
    plan = plan_for_bitops_ratio(patched=patched, start=None, ratio=1.1)
    assert base / plan_bitops(graph=patched, bits=plan.bits) >= 1.1
    assert analyze_model(graph=patched, bitwidths=plan.bits).bitops == \
        plan_bitops(graph=patched, bits=plan.bits)
    with pytest.raises(ConfigError, match="cannot be reached"):
        plan_for_bitops_ratio(patched=patched, start=None, ratio=50.0)


# ---- filters cut below 8 bits: fake quantization as weight_cuts applies it ------------------

@pytest.fixture(scope="module")
def weight_plan(converted, qat_plan):
    """qat_plan plus every cuttable filter: the BN-folded expand and the depthwise at 2 bits,
    the others at 4."""
    from tflite_quantmcu.quant.apply_bitwidths import filter_candidates
    patched = converted.conversion.patched
    graph = converted.conversion.graph.main
    filters = filter_candidates(graph=patched)
    names = {k: graph.tensors[k].name for k in filters}
    assert any("expand" in n for n in names.values()) and any("dw" in n for n in names.values())
    bits = {k: (2 if ("expand" in names[k] or "dw" in names[k]) and 2 in w else 4)
            for k, w in filters.items() if 4 in w}
    return BitwidthPlan(policy="test", options={}, bits={**qat_plan.bits, **bits})


@pytest.fixture(scope="module")
def weight_tuned(trained, weight_plan):
    model, x, y = trained
    return finetune(model, plan=weight_plan, train_data=(x[:256], y[:256]), epochs=1,
                    representative_dataset=_generator(x), sram=SRAM,
                    options=FinetuneOptions(learning_rate=1e-3, batch_size=32, progress=False),
                    **SETTINGS)


def _numpy_cut(*, folded: np.ndarray, bits: int):
    """weight_cuts' rule on a float folded filter [N, C] (an independent numpy reading)."""
    from tflite_quantmcu.quant.weight_cuts import CLIP_GRID
    qmax = (1 << (bits - 1)) - 1
    codes, scales = np.zeros(folded.shape, np.int64), []
    for c in range(folded.shape[1]):
        col = folded[:, c].astype(np.float64)
        best = None
        for alpha in CLIP_GRID:
            s = float(np.float32(alpha * np.abs(col).max() / qmax))
            q = np.clip(np.sign(col / s) * np.floor(np.abs(col / s) + 0.5), -qmax, qmax)
            err = float(np.sum((q * s - col) ** 2))
            if best is None or err < best[0]:
                best = (err, q, s)
        codes[:, c], _ = best[1], scales.append(best[2])
    return codes, np.asarray(scales)


def test_weight_sites_fold_the_batch_norm(weight_tuned, weight_plan):
    sites = {w.layer: w for w in weight_tuned.weight_sites}
    cut = {k for k, b in weight_plan.bits.items() if b < 8 and k.find("/") >= 0
           and not k.startswith("p")}
    assert {w.key for w in sites.values()} == {k for k in cut if k in {w.key for w in
                                                                        sites.values()}}
    assert sites["expand"].batch_norm == "expand_bn" and sites["dw"].batch_norm is None
    bn = weight_tuned.model.get_layer("expand_bn")
    expected = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    np.testing.assert_allclose(sites["expand"].multiplier, expected, rtol=1e-6)


def test_filter_fake_quant_is_the_weight_cut_rule(trained, weight_tuned):
    """The wrapper's b-bit filter is weight_cuts' rule applied to the BN-folded float filter
    (an independent numpy reading, float64), at the start model's and at the trained
    weights; training moved it."""
    from tflite_quantmcu.keras import fake_quant_model, filter_wrapper
    model, _, _ = trained
    sites = weight_tuned.weight_sites
    start = fake_quant_model(model, sites=(), intervals={}, weight_sites=sites)
    end = fake_quant_model(weight_tuned.model, sites=(), intervals={}, weight_sites=sites)
    moved = []
    for site in sites:
        codes, scale, folded, _ = (np.asarray(v) for v in
                                   filter_wrapper(model=start, layer=site.layer).folded_codes())
        want_codes, want_scales = _numpy_cut(folded=folded, bits=site.bits)
        np.testing.assert_array_equal(codes, want_codes)
        np.testing.assert_allclose(scale, want_scales, rtol=1e-6)
        assert np.abs(codes).max() == (1 << (site.bits - 1)) - 1
        # the fine-tuned model's kernel folds into the trained filter itself
        trained_codes = np.asarray(filter_wrapper(model=end, layer=site.layer).folded_codes()[0])
        cut = weight_tuned.weight_cuts[site.key]
        layout = trained_codes.reshape(cut.values.shape) if site.layer == "dw" else \
            trained_codes.reshape(model.get_layer(site.layer).kernel.shape).transpose(3, 0, 1, 2)
        np.testing.assert_array_equal(layout, cut.values)
        moved.append(not np.array_equal(codes, trained_codes))
    assert any(moved)


def test_deployed_filters_are_the_trained_codes(weight_tuned):
    """The deployed model's packed sub-byte filters hold exactly the values the fake
    quantizer produced at the end of training, at its scales (float rounding only)."""
    from tflite_quantmcu.qmcu_options import decode_options
    from tflite_quantmcu.quant.weight_cuts import unpacked_filter
    deployed = weight_tuned.deploy(sram=SRAM, **SETTINGS)
    final = read_model_bytes(data=deployed.model_bytes).main
    assert len(weight_tuned.weight_check) == len(weight_tuned.weight_sites) >= 3
    for new_key, check in weight_tuned.weight_check.items():
        assert check["values_equal"] and weight_tuned.plan.bits[new_key] == check["bits"]
        cut = weight_tuned.weight_cuts[check["trained_key"]]
        op = next(o for o in final.operators if len(o.inputs) > 1 and o.inputs[1] == new_key)
        opts = decode_options(op=op.type, data=op.custom_options)
        assert opts.w_bits == cut.bits
        values = unpacked_filter(tensor=final.tensors[new_key], bits=cut.bits,
                                 logical_shape=opts.filter_shape)
        np.testing.assert_array_equal(values, cut.values)
        np.testing.assert_allclose(final.tensors[new_key].quantization.scale, cut.scales,
                                   rtol=1e-6)


def test_weight_finetune_is_deterministic(trained, weight_plan, weight_tuned):
    model, x, y = trained
    again = finetune(model, plan=weight_plan, train_data=(x[:256], y[:256]), epochs=1,
                     representative_dataset=_generator(x), sram=SRAM,
                     options=FinetuneOptions(learning_rate=1e-3, batch_size=32, progress=False),
                     **SETTINGS)
    assert again.tflite_bytes == weight_tuned.tflite_bytes
    assert again.plan.to_json() == weight_tuned.plan.to_json()
