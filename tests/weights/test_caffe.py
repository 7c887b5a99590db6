"""load_caffe_weights against caffemodels written by the tests' own encoder (tests/caffe_encoder.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from caffe_encoder import (
    V1_CONVOLUTION,
    V1_INNER_PRODUCT,
    V1_RELU,
    blob,
    fcn_caffemodel,
    layer_v1,
    layer_v2,
    net,
)
from tiny_models import tiny_model

import fcnseg
from fcnseg.weights import WeightsError, read_caffemodel

WIDTH = 1 / 32  # fc6 has 128 x 16 x 7 x 7 weights: small enough for unpacked floats
#: The source models have every tensor random (scores and deconvolutions included), N(0, 1).
EVERY_TENSOR = {"width": WIDTH, "all_std": 1.0}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    layers_a, layers_b = a.reference_layers(), b.reference_layers()
    assert list(layers_a) == list(layers_b)
    for name in layers_a:
        for (kind, pa), (_, pb) in zip(
            layers_a[name].named_parameters(), layers_b[name].named_parameters(), strict=True
        ):
            assert torch.equal(pa, pb), f"{name}.{kind} differs"


@pytest.mark.parametrize(
    "version, shape, values, inner_product",
    [
        ("v2", "dims", "packed", False),  # the published FCN files
        ("v2", "legacy", "packed", False),
        ("v2", "dims", "double", False),
        ("v2", "dims", "packed", True),
        ("v1", "legacy", "packed", True),  # VGG_ILSVRC_16_layers: V1, legacy dims, fc6/fc7 InnerProduct
        ("v1", "dims", "unpacked", False),
    ],
)
def test_caffemodel_loads_bit_exactly(tmp_path, version, shape, values, inner_product):
    source = tiny_model("fcn8s", seed=1, **EVERY_TENSOR)
    path = tmp_path / "net.caffemodel"
    path.write_bytes(fcn_caffemodel(source, version=version, shape=shape, values=values, inner_product=inner_product))

    target = fcnseg.create_model("fcn8s", num_classes=3, width=WIDTH)
    loaded = fcnseg.load_caffe_weights(target, path)

    assert loaded == list(source.reference_layers())
    assert_same_weights(source, target)
    assert target.preprocessing == fcnseg.CAFFE


def test_fc6_inner_product_reshapes_rows_as_channel_row_column(tmp_path):
    # One hand-made fc6 row: value = 100*c + 10*y + x at flat index (c*7 + y)*7 + x.
    model = fcnseg.create_model("fcn32s", num_classes=2, width=WIDTH)
    out_c, in_c = model.backbone.fc6.weight.shape[:2]
    c, y, x = np.meshgrid(np.arange(in_c), np.arange(7), np.arange(7), indexing="ij")
    row = (100 * c + 10 * y + x).astype(np.float32).ravel()
    weight = np.tile(row, (out_c, 1))
    fc6 = layer_v1("fc6", V1_INNER_PRODUCT, [blob(weight, shape="legacy"), blob(np.zeros(out_c), shape="legacy")])
    path = tmp_path / "fc6.caffemodel"
    path.write_bytes(net(layers_v1=[fc6]))

    assert fcnseg.load_caffe_weights(model, path) == ["fc6"]
    loaded = model.backbone.fc6.weight
    assert loaded[5, 3, 2, 6].item() == 100 * 3 + 10 * 2 + 6
    assert loaded[0, in_c - 1, 6, 0].item() == 100 * (in_c - 1) + 60


def test_vgg16_ilsvrc_layout_loads_trunk_and_skips_fc8(tmp_path, caplog):
    source = tiny_model("fcn32s", seed=2, **EVERY_TENSOR)
    fc8 = layer_v1("fc8", V1_INNER_PRODUCT, [blob(np.ones((10, 4)), shape="legacy"), blob(np.ones(10), shape="legacy")])
    relu = layer_v1("relu1_1", V1_RELU, [])
    trunk = {name: module for name, module in source.reference_layers().items() if not name.startswith(("score", "up"))}
    layers = []
    for name, module in trunk.items():
        weight, bias = module.weight.detach().numpy(), module.bias.detach().numpy()
        kind = V1_INNER_PRODUCT if name in ("fc6", "fc7") else V1_CONVOLUTION
        if kind == V1_INNER_PRODUCT:
            weight = weight.reshape(weight.shape[0], -1)
        layers.append(layer_v1(name, kind, [blob(weight, shape="legacy"), blob(bias, shape="legacy")]))
    path = tmp_path / "VGG_ILSVRC_16_layers.caffemodel"
    path.write_bytes(net(layers_v1=[layers[0], relu, *layers[1:], fc8]))

    target = fcnseg.create_model("fcn32s", num_classes=3, width=WIDTH)
    with caplog.at_level(logging.INFO, logger="fcnseg.weights.caffe"):
        loaded = fcnseg.load_caffe_weights(target, path)

    assert loaded == list(trunk)
    for name in trunk:
        assert torch.equal(target.reference_layers()[name].weight, trunk[name].weight)
    assert not target.score_fr.weight.any(), "score_fr is not in the file: it keeps its zero init"
    assert "fc8" in caplog.text


def test_atonce_scales_are_checked_and_loaded(tmp_path):
    source = tiny_model("fcn8s_atonce", seed=1, **EVERY_TENSOR)
    path = tmp_path / "atonce.caffemodel"
    path.write_bytes(fcn_caffemodel(source))
    target = fcnseg.create_model("fcn8s_atonce", num_classes=3, width=WIDTH)
    loaded = fcnseg.load_caffe_weights(target, path)
    assert {"scale_pool4", "scale_pool3"} <= set(loaded)

    # A file whose scale differs is loaded into the model's fixed scale (the file is the truth).
    with torch.no_grad():
        source.scale_pool4.fill_(0.5)
    path.write_bytes(fcn_caffemodel(source))
    fcnseg.load_caffe_weights(target, path)
    assert target.scale_pool4.item() == 0.5


def test_atonce_file_into_plain_fcn8s_is_refused(tmp_path):
    path = tmp_path / "atonce.caffemodel"
    path.write_bytes(fcn_caffemodel(tiny_model("fcn8s_atonce", seed=1, **EVERY_TENSOR)))
    with pytest.raises(WeightsError, match="scale_pool4.*fcn8s_atonce"):
        fcnseg.load_caffe_weights(fcnseg.create_model("fcn8s", num_classes=3, width=WIDTH), path)


@pytest.mark.parametrize(
    "scale_blob, message",
    [
        (blob(np.array([0.01, 0.02] * 8, dtype=np.float32)), "scales channels differently"),
        (blob(np.full(5, 0.01, dtype=np.float32)), r"shape \(5,\); expected \(16,\)"),
    ],
)
def test_bad_atonce_scale_blobs(tmp_path, scale_blob, message):
    path = tmp_path / "atonce.caffemodel"
    path.write_bytes(net([layer_v2("scale_pool4", "Scale", [scale_blob])]))
    model = fcnseg.create_model("fcn8s_atonce", num_classes=3, width=WIDTH)
    assert model.score_pool4.in_channels == 16
    with pytest.raises(WeightsError, match=message):
        fcnseg.load_caffe_weights(model, path)


def test_shape_mismatch_names_layer_and_shapes_and_loads_nothing(tmp_path):
    path = tmp_path / "five_classes.caffemodel"
    path.write_bytes(fcn_caffemodel(tiny_model("fcn8s", 5, seed=1, **EVERY_TENSOR)))
    target = fcnseg.create_model("fcn8s", num_classes=3, width=WIDTH)
    before = target.backbone.conv1_1.weight.clone()
    with pytest.raises(WeightsError) as error:
        fcnseg.load_caffe_weights(target, path)
    message = str(error.value)
    assert "'score_fr'" in message and "(5, 128, 1, 1)" in message and "(3, 128, 1, 1)" in message
    assert str(path) in message
    assert torch.equal(target.backbone.conv1_1.weight, before), "a failed load must not half-load the model"
    assert target.preprocessing == fcnseg.TORCHVISION


def test_wrong_number_of_blobs_is_an_error(tmp_path):
    bias_blob = blob(np.zeros(3, dtype=np.float32))
    weight_blob = blob(np.zeros((3, 3, 4, 4), dtype=np.float32))
    path = tmp_path / "deconv_with_bias.caffemodel"
    path.write_bytes(net([layer_v2("upscore2", "Deconvolution", [weight_blob, bias_blob])]))
    with pytest.raises(WeightsError, match="'upscore2' has 2 blobs"):
        fcnseg.load_caffe_weights(fcnseg.create_model("fcn8s", num_classes=3, width=WIDTH), path)


def test_blob_with_wrong_value_count_is_an_error(tmp_path):
    lying = blob(np.zeros(10, dtype=np.float32), stored_shape=(3,))
    path = tmp_path / "short.caffemodel"
    path.write_bytes(net([layer_v2("score_fr", "Convolution", [blob(np.zeros((3, 128, 1, 1))), lying])]))
    with pytest.raises(WeightsError, match="10 values for shape"):
        fcnseg.load_caffe_weights(fcnseg.create_model("fcn32s", num_classes=3, width=WIDTH), path)


def test_not_a_caffemodel(tmp_path):
    model = fcnseg.create_model("fcn32s", num_classes=3, width=WIDTH)
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(WeightsError, match="garbage.caffemodel: not a caffemodel"):
        fcnseg.load_caffe_weights(model, garbage)

    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text('name: "fcn"\nlayer { name: "conv1_1" type: "Convolution" }\n')
    with pytest.raises(WeightsError, match="prototxt"):
        fcnseg.load_caffe_weights(model, prototxt)

    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        fcnseg.load_caffe_weights(model, empty)

    with pytest.raises(WeightsError, match="no such"):
        fcnseg.load_caffe_weights(model, tmp_path / "missing.caffemodel")

    no_weights = tmp_path / "deploy_only.caffemodel"
    no_weights.write_bytes(net([layer_v2("relu1", "ReLU", [])]))
    with pytest.raises(WeightsError, match="no parameter blobs"):
        fcnseg.load_caffe_weights(model, no_weights)


def test_truncated_caffemodel_is_an_error(tmp_path):
    data = fcn_caffemodel(tiny_model("fcn32s", seed=1, **EVERY_TENSOR))
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a caffemodel"):
        fcnseg.load_caffe_weights(fcnseg.create_model("fcn32s", num_classes=3, width=WIDTH), path)


def test_reader_reports_names_types_and_stored_shapes(tmp_path):
    path = tmp_path / "mixed.caffemodel"
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    path.write_bytes(
        net(
            [layer_v2("new_style", "InnerProduct", [blob(weight)])],
            layers_v1=[layer_v1("old_style", V1_INNER_PRODUCT, [blob(weight, shape="legacy")])],
        )
    )
    layers = {layer.name: layer for layer in read_caffemodel(path)}
    assert layers["new_style"].type == layers["old_style"].type == "InnerProduct"
    assert layers["new_style"].blob_shapes() == [(2, 3)]
    assert layers["old_style"].blob_shapes() == [(1, 1, 2, 3)]
    assert np.array_equal(layers["old_style"].blob(0).reshape(2, 3), weight)
