"""The registry's published facts, ``fcnseg weights list/fetch/convert``, and registry names as checkpoints."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from caffe_encoder import fcn_caffemodel
from tiny_models import TINY_WIDTH as WIDTH
from tiny_models import tiny_model
from weights_server import FileServer

import fcnseg
from fcnseg.checkpoint import CheckpointError, load_checkpoint
from fcnseg.cli import main
from fcnseg.weights import WeightsError, registry, resolve_checkpoint
from fcnseg.weights.registry import Checksum, KnownWeights

#: DESIGN §5, typed here independently of fcnseg.data.
VOC_NAMES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]


def tiny_entry(
    url: str, data: bytes, name: str = "tiny-fcn8s-voc", model: str | None = "fcn8s", classes: str = "voc", **fields
) -> KnownWeights:
    return KnownWeights(
        name,
        f"{name}.caffemodel",
        (url,),
        Checksum("sha256", hashlib.sha256(data).hexdigest()),
        model,
        classes,
        "caffe",
        "test weights",
        width=WIDTH,
        **fields,
    )


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    pairs = zip(a.reference_layers().items(), b.reference_layers().items(), strict=True)
    for (name, layer_a), (_, layer_b) in pairs:
        for (kind, pa), (_, pb) in zip(layer_a.named_parameters(), layer_b.named_parameters(), strict=True):
            assert torch.equal(pa, pb), f"{name}.{kind} differs"


@pytest.fixture
def served(fcnseg_home, monkeypatch):
    """A random tiny FCN-8s as a caffemodel on a local server, registered as the only known weights."""
    source = tiny_model("fcn8s", 21, seed=3, all_std=0.1)
    data = fcn_caffemodel(source)
    with FileServer({"/tiny.caffemodel": data}) as server:
        entry = tiny_entry(server.url + "/tiny.caffemodel", data)
        monkeypatch.setattr(registry, "KNOWN_WEIGHTS", {entry.name: entry})
        yield source, entry, server


# --- the published facts -------------------------------------------------------------------------------


def test_registry_holds_the_published_links_checksums_and_scores():
    known = registry.KNOWN_WEIGHTS
    fcn8s = known["fcn8s-voc"]
    assert fcn8s.urls == ("http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel",)
    assert fcn8s.checksum == Checksum("sha1", "c449ea74dd7d83751d1357d6a8c323fcf4038962")
    vgg = known["vgg16-caffe"]
    assert vgg.checksum == Checksum("md5", "441315b0ff6932dbfde97731be7ca852") and vgg.size_bytes == 553_432_081
    import torchvision

    torchvision_url = torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
    assert known["vgg16-torchvision"].urls == (torchvision_url,)
    assert torchvision_url.endswith(f"-{known['vgg16-torchvision'].checksum.digest}.pth")
    # Only those three files have a published checksum; no other entry may claim one.
    assert sorted(name for name, e in known.items() if e.checksum) == ["fcn8s-voc", "vgg16-caffe", "vgg16-torchvision"]
    readme = {
        "fcn32s-voc": 63.6,
        "fcn16s-voc": 65.0,
        "fcn8s-voc": 65.5,
        "fcn8s-atonce-voc": 65.4,
        "fcn-alexnet-voc": 48.0,
    }
    assert {name: e.published[0].metrics["mean_iu"] for name, e in known.items() if e.published} == readme
    assert fcn8s.published[1].metrics == {"pixel_acc": 90.3, "mean_acc": 75.9, "mean_iu": 62.7, "fw_iu": 83.2}
    assert known["fcn-alexnet-voc"].model == "fcn_alexnet"
    # Every caffemodel-url file of shelhamer/fcn.berkeleyvision.org (commit 1305c73), as published.
    published_files = [
        "fcn32s-heavy-pascal",
        "fcn16s-heavy-pascal",
        "fcn8s-heavy-pascal",
        "fcn8s-atonce-pascal",
        "fcn-alexnet-pascal",
        "pascalcontext-fcn32s-heavy",
        "pascalcontext-fcn16s-heavy",
        "pascalcontext-fcn8s-heavy",
        "siftflow-fcn32s-heavy",
        "siftflow-fcn16s-heavy",
        "siftflow-fcn8s-heavy",
        "nyud-fcn32s-color-heavy",
        "nyud-fcn32s-hha-heavy",
        "nyud-fcn32s-color-hha-heavy",
    ]
    fcn_urls = sorted(url for e in known.values() for url in e.urls if "berkeleyvision" in url)
    assert fcn_urls == sorted(f"http://dl.caffe.berkeleyvision.org/{name}.caffemodel" for name in published_files)
    for entry in known.values():
        assert all(url.rsplit("/", 1)[1] == entry.filename for url in entry.urls)
        assert entry.preprocessing == ("torchvision" if entry.name == "vgg16-torchvision" else "caffe")
        supported_model = entry.model in fcnseg.list_models() or entry.model in (None, "fcn_alexnet")
        assert supported_model and bool(entry.unsupported) == (entry.name.split("-")[1] == "pascalcontext")
    assert [known[f"fcn{s}-siftflow"].model for s in ("32s", "16s", "8s")] == [
        "siftflow_fcn32s",
        "siftflow_fcn16s",
        "siftflow_fcn8s",
    ]
    assert known["fcn32s-nyud-color-hha"].model == "nyud_fcn32s_color_hha"


def test_weights_list_shows_every_entry_with_its_state(fcnseg_home, capsys):
    assert main(["weights", "list"]) == 0
    printed = capsys.readouterr().out
    assert f"cache: {fcnseg_home}" in printed
    for entry in registry.KNOWN_WEIGHTS.values():
        assert entry.name in printed and entry.urls[0] in printed
    rows = {line.split()[0]: line for line in printed.splitlines() if line and not line.startswith(" ")}
    assert "sha1 c449ea74dd7d83751d1357d6a8c323fcf4038962" in rows["fcn8s-voc"]
    assert "553 MB" in rows["vgg16-caffe"] and "no checksum published" in rows["fcn32s-voc"]
    assert "not supported yet: its 59 classes' output order" in printed


# --- fetch, convert, resolve ----------------------------------------------------------------------------


def test_fetch_converts_once_into_a_checkpoint_that_loads(served, fcnseg_home, capsys):
    source, entry, server = served
    assert main(["weights", "fetch", entry.name]) == 0
    path = Path(capsys.readouterr().out.splitlines()[0])
    assert path == fcnseg_home / "checkpoints" / f"{entry.name}.safetensors"
    checkpoint = load_checkpoint(path)
    assert_same_weights(source, checkpoint.model)
    assert checkpoint.classes == VOC_NAMES
    assert checkpoint.palette[1] == (128, 0, 0) and checkpoint.palette[15] == (192, 128, 128)
    assert checkpoint.preprocessing == fcnseg.CAFFE and checkpoint.extra["weights"] == entry.name
    stamp = path.stat().st_mtime_ns
    assert resolve_checkpoint(entry.name, progress=False) == path and main(["weights", "fetch", entry.name]) == 0
    assert path.stat().st_mtime_ns == stamp and len(server.log) == 1  # converted once, downloaded once


def test_resolve_checkpoint_takes_paths_and_explains_names_it_cannot_use(served, tmp_path, monkeypatch):
    _, entry, server = served
    monkeypatch.chdir(tmp_path)
    Path(entry.name).write_text("a local file of that name")
    assert resolve_checkpoint(entry.name) == Path(entry.name)  # an existing file wins
    assert resolve_checkpoint("runs/x.safetensors") == Path("runs/x.safetensors")  # load_checkpoint reports it
    with pytest.raises(
        CheckpointError, match=f"fcn8z-voc: neither a checkpoint file nor a known weights name .*{entry.name}"
    ):
        resolve_checkpoint("fcn8z-voc")
    monkeypatch.setattr(
        registry,
        "KNOWN_WEIGHTS",
        {
            "backbone": tiny_entry(entry.urls[0], b"", name="backbone", model=None),
            "later": tiny_entry(entry.urls[0], b"", name="later", model="fcn_not_here"),
            "context": tiny_entry(entry.urls[0], b"", name="context", unsupported="no PASCAL-Context dataset"),
        },
    )
    for name, message in (
        ("backbone", "backbone is an ImageNet backbone, not a segmentation model"),
        ("later", "later needs the model 'fcn_not_here', which this fcnseg does not have yet"),
        ("context", "context: not supported yet: no PASCAL-Context dataset"),
    ):
        with pytest.raises(WeightsError, match=message):
            resolve_checkpoint(name)
    assert server.log == []  # refused before downloading anything


def test_fcn_alexnet_needs_its_model(fcnseg_home):
    if "fcn_alexnet" in fcnseg.list_models():
        pytest.skip("fcn_alexnet is registered: the weights load (and would be downloaded from the internet)")
    with pytest.raises(WeightsError, match="fcn-alexnet-voc needs the model 'fcn_alexnet'"):
        resolve_checkpoint("fcn-alexnet-voc")


def test_convert_command_writes_a_checkpoint_and_refuses_another_variant(tmp_path, capsys):
    fcn32s = tiny_model("fcn32s", 21, seed=3, all_std=0.1)
    caffemodel = tmp_path / "fcn32s.caffemodel"
    caffemodel.write_bytes(fcn_caffemodel(fcn32s))
    out = tmp_path / "fcn32s.safetensors"
    assert (
        main(["weights", "convert", str(caffemodel), "--model", "fcn32s", "--width", str(WIDTH), "--out", str(out)])
        == 0
    )
    assert_same_weights(fcn32s, load_checkpoint(out).model)
    capsys.readouterr()
    for model, message in (
        ("fcn8s", "the model has layers the file lacks: ['score_pool4', 'score_pool3']"),
        ("fcn16s", "the model has layers the file lacks: ['score_pool4']"),
    ):
        target = tmp_path / f"{model}.safetensors"
        assert (
            main(["weights", "convert", str(caffemodel), "--model", model, "--width", str(WIDTH), "--out", str(target)])
            == 1
        )
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and not target.exists()
    fcn8s = tmp_path / "fcn8s.caffemodel"
    fcn8s.write_bytes(fcn_caffemodel(tiny_model("fcn8s", 21, seed=3, all_std=0.1)))
    for model, message in (
        ("fcn32s", "the file has layers the model lacks: ['score_pool4', 'upscore2'"),
        ("fcn8s_atonce", "the model has layers the file lacks: ['scale_pool4', 'scale_pool3']"),
    ):
        assert main(["weights", "convert", str(fcn8s), "--model", model, "--width", str(WIDTH), "--out", str(out)]) == 1
        assert message in capsys.readouterr().err


def test_export_takes_a_registry_name(served, tmp_path, capsys, one_torch_thread):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    _, entry, _ = served
    out = tmp_path / "tiny.onnx"
    code = main(["export", entry.name, "--out", str(out), "--exporter", "torchscript", "--check-shape", "1x3x19x23"])
    assert code == 0 and out.is_file(), capsys.readouterr().err
    assert main(["export", "fcn8z-voc", "--out", str(out)]) == 2
    assert "neither a checkpoint file nor a known weights name" in capsys.readouterr().err


# --- the SIFT Flow and NYUDv2 nets ----------------------------------------------------------------------

#: Typed here from the datasets' documentation, independently of fcnseg.data: the HHA mean of the
#: reference nyud_layers.py, the first and last names of SIFT Flow's 33 and NYUDv2's 40 classes.
NYUD_HHA_MEAN = (132.431, 94.076, 118.477)
NYUD_COLOR_MEAN_RGB = (92.318, 97.203, 116.190)


def test_siftflow_weights_convert_with_both_heads_and_their_classes(fcnseg_home, monkeypatch, capsys):
    source = tiny_model("siftflow_fcn8s", 36, seed=5, all_std=0.1)
    data = fcn_caffemodel(source)
    with FileServer({"/sift.caffemodel": data}) as server:
        entry = tiny_entry(
            server.url + "/sift.caffemodel",
            data,
            name="tiny-fcn8s-siftflow",
            model="siftflow_fcn8s",
            classes="siftflow",
        )
        monkeypatch.setattr(registry, "KNOWN_WEIGHTS", {entry.name: entry})
        checkpoint = load_checkpoint(resolve_checkpoint(entry.name, progress=False))
    assert_same_weights(source, checkpoint.model)
    assert len(checkpoint.classes) == 36 and checkpoint.classes[0] == "awning" and checkpoint.classes[32] == "window"
    assert checkpoint.model.config["heads"] in ([["sem", 33], ["geo", 3]], (("sem", 33), ("geo", 3)))
    # The file's mean is SIFT Flow's, not ImageNet's (reference siftflow_layers.py: BGR 114.578, 115.294, 108.353).
    assert checkpoint.preprocessing.channel_order == "BGR"
    assert [round(v, 3) for v in checkpoint.preprocessing.mean] == [114.578, 115.294, 108.353]
    image = torch.randn(1, 3, 37, 41)
    with torch.no_grad():
        assert torch.allclose(checkpoint.model.eval()(image), source(image), atol=1e-5)


def test_nyud_hha_file_converts_like_its_registry_entry(tmp_path, capsys):
    source = tiny_model("fcn32s", 40, seed=5, all_std=0.1)
    caffemodel = tmp_path / "nyud-fcn32s-hha-heavy.caffemodel"
    caffemodel.write_bytes(fcn_caffemodel(source))
    out = tmp_path / "hha.safetensors"
    args = [
        "weights",
        "convert",
        str(caffemodel),
        "--like",
        "fcn32s-nyud-hha",
        "--width",
        str(WIDTH),
        "--out",
        str(out),
    ]
    assert main(args) == 0, capsys.readouterr().err
    checkpoint = load_checkpoint(out)
    assert_same_weights(source, checkpoint.model)
    assert len(checkpoint.classes) == 40 and checkpoint.classes[0] == "wall" and checkpoint.classes[-1] == "otherprop"
    assert checkpoint.preprocessing.channel_order == "RGB"  # HHA channels as stored
    assert [round(v, 3) for v in checkpoint.preprocessing.mean] == list(NYUD_HHA_MEAN)


def test_nyud_color_and_late_fusion_files_take_the_nyud_colour_mean(fcnseg_home, monkeypatch):
    for name, model_name, classes_kind in (
        ("tiny-nyud-color", "fcn32s", "nyud-color"),
        ("tiny-nyud-color-hha", "nyud_fcn32s_color_hha", ""),
    ):
        source = tiny_model(model_name, 40, seed=5, all_std=0.1)
        data = fcn_caffemodel(source)
        with FileServer({"/n.caffemodel": data}) as server:
            entry = tiny_entry(
                server.url + "/n.caffemodel",
                data,
                name=name,
                model=model_name,
                classes="nyud",
                caffe_input=classes_kind,
            )
            monkeypatch.setattr(registry, "KNOWN_WEIGHTS", {entry.name: entry})
            checkpoint = load_checkpoint(resolve_checkpoint(entry.name, progress=False))
        assert_same_weights(source, checkpoint.model)
        colour = checkpoint.preprocessing
        assert colour.channel_order == "BGR", name
        assert sorted(round(v, 3) for v in colour.mean) == sorted(NYUD_COLOR_MEAN_RGB), name


def test_convert_refuses_pascal_context_and_a_missing_model(tmp_path, capsys):
    caffemodel = tmp_path / "x.caffemodel"
    caffemodel.write_bytes(fcn_caffemodel(tiny_model("fcn32s", 21, seed=3, all_std=0.1)))
    out = tmp_path / "x.safetensors"
    assert main(["weights", "convert", str(caffemodel), "--like", "fcn8s-pascalcontext", "--out", str(out)]) == 1
    assert "fcn8s-pascalcontext: not supported yet: its 59 classes' output order" in capsys.readouterr().err
    assert main(["weights", "convert", str(caffemodel), "--out", str(out)]) == 1
    assert "--model NAME or --like NAME" in capsys.readouterr().err and not out.exists()
