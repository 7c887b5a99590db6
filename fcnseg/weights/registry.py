"""Known published weights: where each file lives, how to check it, and what it belongs to.

Facts and their sources (no checksum is made up: ``checksum=None`` means none is published):

- FCN caffemodel URLs: the ``<net>/caffemodel-url`` files of shelhamer/fcn.berkeleyvision.org
  (commit 1305c73, 2018-04-04); seg11valid mean IU: that repository's README. The project
  publishes no checksums or sizes.
- fcn8s-heavy-pascal sha1: OpenCV's model list, opencv/opencv_extra testdata/dnn/download_models.py.
- VGG_ILSVRC_16_layers URL: ``caffemodel_url`` of the VGG team's gist ksimonyan/211839e770f7b538e2d8;
  md5 and size: as quoted by ry/tensorflow-vgg16's README (md5) and the project's weights issue (553,432,081 bytes).
- torchvision VGG16: ``torchvision.models.VGG16_Weights.IMAGENET1K_V1.url``; torch.hub's
  ``check_hash`` convention puts the first hex digits of the file's sha256 in its name.
- FCN-8s paper Table 2 (Long, Shelhamer, Darrell, CVPR 2015: the earlier, non-"heavy" FCN-8s).

``approx_mb`` of the FCN files is an estimate, not a published size: float32 parameters x 4 bytes
(the counts ``fcnseg models`` prints; AlexNet counted from voc-fcn-alexnet/net.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .checks import WeightsError

_CAFFE_DL = "http://dl.caffe.berkeleyvision.org/"
_README = "fcn.berkeleyvision.org README, seg11valid"


@dataclass(frozen=True)
class Checksum:
    """A published digest. ``digest`` may be a prefix (torch.hub file names carry 8 hex digits of sha256)."""

    algorithm: str  # a hashlib name: "md5", "sha1", "sha256"
    digest: str

    def __str__(self) -> str:
        return f"{self.algorithm} {self.digest}"


@dataclass(frozen=True)
class Published:
    """Figures published for a set of weights: metric key (as ``ConfusionMatrix.compute``) -> percent."""

    source: str
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class KnownWeights:
    """One published weights file and what it belongs to."""

    name: str
    filename: str
    urls: tuple[str, ...]
    checksum: Checksum | None  # None: no checksum is published for this file
    model: str | None  # the fcnseg model the weights fill; None for an ImageNet backbone
    classes: str  # "voc" (21 classes, converted with fcnseg.data's names and palette) or a description
    preprocessing: str  # "caffe" (fcnseg.CAFFE) or "torchvision" (fcnseg.TORCHVISION)
    description: str
    size_bytes: int | None = None  # exact size, where published (then checked)
    approx_mb: int | None = None
    published: tuple[Published, ...] = ()
    width: float = 1.0
    unsupported: str = ""  # why fcnseg cannot use these weights yet ("" = it can)

    @property
    def is_backbone(self) -> bool:
        return self.model is None


def _voc_fcn(name: str, filename: str, model: str, mean_iu: float, approx_mb: int, description: str,
             checksum: Checksum | None = None, extra: tuple[Published, ...] = ()) -> KnownWeights:
    return KnownWeights(name, filename, (_CAFFE_DL + filename,), checksum, model, "voc", "caffe", description,
                        approx_mb=approx_mb, published=(Published(_README, {"mean_iu": mean_iu}), *extra))


def _not_yet(variant: str, dataset: str, stream: str, reason: str) -> KnownWeights:
    """A published FCN fcnseg cannot use yet; ``variant`` is the architecture ("fcn32s") the file holds."""
    filename = f"{dataset}-{variant}-{stream + '-' if stream else ''}heavy.caffemodel"
    return KnownWeights(f"{variant}-{dataset}{'-' + stream if stream else ''}", filename, (_CAFFE_DL + filename,), None,
                        variant, dataset, "caffe", f"FCN-{variant[3:]} {dataset} {stream}".rstrip(), unsupported=reason)


_CONTEXT = "PASCAL-Context has no dataset or class list in fcnseg yet (59 classes + background)"
_SIFTFLOW = "two output heads (33 semantic + 3 geometric classes); fcnseg's FCN has one"

_ENTRIES = (
    _voc_fcn("fcn32s-voc", "fcn32s-heavy-pascal.caffemodel", "fcn32s", 63.6, 545, "FCN-32s PASCAL VOC (heavy)"),
    _voc_fcn("fcn16s-voc", "fcn16s-heavy-pascal.caffemodel", "fcn16s", 65.0, 539, "FCN-16s PASCAL VOC (heavy)"),
    _voc_fcn("fcn8s-voc", "fcn8s-heavy-pascal.caffemodel", "fcn8s", 65.5, 538, "FCN-8s PASCAL VOC (heavy)",
             Checksum("sha1", "c449ea74dd7d83751d1357d6a8c323fcf4038962"),
             (Published("paper Table 2, CVPR 2015 FCN-8s (earlier weights)",
                        {"pixel_acc": 90.3, "mean_acc": 75.9, "mean_iu": 62.7, "fw_iu": 83.2}),)),
    _voc_fcn("fcn8s-atonce-voc", "fcn8s-atonce-pascal.caffemodel", "fcn8s_atonce", 65.4, 538,
             "FCN-8s at-once PASCAL VOC"),
    _voc_fcn("fcn-alexnet-voc", "fcn-alexnet-pascal.caffemodel", "fcn_alexnet", 48.0, 235, "FCN-AlexNet PASCAL VOC"),
    KnownWeights("vgg16-caffe", "VGG_ILSVRC_16_layers.caffemodel",
                 ("http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel",),
                 Checksum("md5", "441315b0ff6932dbfde97731be7ca852"), None, "imagenet (1000 classes; fc8 unused)",
                 "caffe", "VGG16 ILSVRC-2014 (the paper's initialisation; train --init caffe:PATH)",
                 size_bytes=553_432_081, approx_mb=553),
    KnownWeights("vgg16-torchvision", "vgg16-397923af.pth", ("https://download.pytorch.org/models/vgg16-397923af.pth",),
                 Checksum("sha256", "397923af"), None, "imagenet (1000 classes; fc8 unused)", "torchvision",
                 "torchvision VGG16 IMAGENET1K_V1 (train --init vgg16-torchvision:PATH)", approx_mb=553),
    *(_not_yet(f"fcn{s}", "pascalcontext", "", _CONTEXT) for s in ("32s", "16s", "8s")),
    *(_not_yet(f"fcn{s}", "siftflow", "", _SIFTFLOW) for s in ("32s", "16s", "8s")),
    _not_yet("fcn32s", "nyud", "color", "NYUDv2 (40 classes, its own BGR mean) has no dataset in fcnseg yet"),
    _not_yet("fcn32s", "nyud", "hha", "HHA depth-image input, not RGB"),
    _not_yet("fcn32s", "nyud", "color-hha", "two-stream late fusion of colour and HHA inputs"),
)

#: Registry name -> entry. Tests swap in their own table (monkeypatch this attribute).
KNOWN_WEIGHTS: dict[str, KnownWeights] = {entry.name: entry for entry in _ENTRIES}


def known_weights(name: str) -> KnownWeights:
    """The registry entry called ``name``; :class:`WeightsError` listing the names otherwise."""
    if name not in KNOWN_WEIGHTS:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(KNOWN_WEIGHTS)} (fcnseg weights list)")
    return KNOWN_WEIGHTS[name]
