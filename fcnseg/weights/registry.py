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

from collections.abc import Mapping
from dataclasses import dataclass

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
    classes: str  # "voc", "siftflow", "nyud" (class names and palette from fcnseg.data) or a description
    preprocessing: str  # "caffe" (fcnseg.CAFFE) or "torchvision" (fcnseg.TORCHVISION)
    description: str
    size_bytes: int | None = None  # exact size, where published (then checked)
    approx_mb: int | None = None
    published: tuple[Published, ...] = ()
    width: float = 1.0
    unsupported: str = ""  # why fcnseg cannot use these weights yet ("" = it can)
    #: The input the file was trained on, where it is not the model's own Caffe preprocessing:
    #: "nyud-color" (BGR minus the NYUDv2 colour mean) or "nyud-hha" (HHA images minus the HHA mean).
    caffe_input: str = ""

    @property
    def is_backbone(self) -> bool:
        return self.model is None


def _voc_fcn(
    name: str,
    filename: str,
    model: str,
    mean_iu: float,
    approx_mb: int,
    description: str,
    checksum: Checksum | None = None,
    extra: tuple[Published, ...] = (),
) -> KnownWeights:
    return KnownWeights(
        name,
        filename,
        (_CAFFE_DL + filename,),
        checksum,
        model,
        "voc",
        "caffe",
        description,
        approx_mb=approx_mb,
        published=(Published(_README, {"mean_iu": mean_iu}), *extra),
    )


#: float32 parameters x 4 bytes of the VGG16 FCN-32s (the 21-class count; the other class counts differ by < 1 MB).
_FCN32S_MB = 545


def _other_dataset(
    variant: str,
    dataset: str,
    stream: str = "",
    model: str | None = None,
    description: str = "",
    caffe_input: str = "",
    unsupported: str = "",
) -> KnownWeights:
    """A published FCN of PASCAL-Context, SIFT Flow or NYUDv2 (the README gives no seg11valid figures for them)."""
    filename = f"{dataset}-{variant}-{stream + '-' if stream else ''}heavy.caffemodel"
    return KnownWeights(
        f"{variant}-{dataset}{'-' + stream if stream else ''}",
        filename,
        (_CAFFE_DL + filename,),
        None,
        model or variant,
        dataset,
        "caffe",
        description or f"FCN-{variant[3:]} {dataset}",
        approx_mb=_FCN32S_MB * (2 if stream == "color-hha" else 1),
        caffe_input=caffe_input,
        unsupported=unsupported,
    )


#: The 59 classes' output order is that of the release's 59_labels.txt, which fcnseg does not bundle (the
#: pascal_context dataset reads it from the user's copy); naming the outputs without it would risk a wrong order.
_CONTEXT = (
    "its 59 classes' output order is that of the release's 59_labels.txt, which fcnseg does not bundle "
    "(the pascal_context dataset reads the user's copy to train and evaluate)"
)

_ENTRIES = (
    _voc_fcn("fcn32s-voc", "fcn32s-heavy-pascal.caffemodel", "fcn32s", 63.6, 545, "FCN-32s PASCAL VOC (heavy)"),
    _voc_fcn("fcn16s-voc", "fcn16s-heavy-pascal.caffemodel", "fcn16s", 65.0, 539, "FCN-16s PASCAL VOC (heavy)"),
    _voc_fcn(
        "fcn8s-voc",
        "fcn8s-heavy-pascal.caffemodel",
        "fcn8s",
        65.5,
        538,
        "FCN-8s PASCAL VOC (heavy)",
        Checksum("sha1", "c449ea74dd7d83751d1357d6a8c323fcf4038962"),
        (
            Published(
                "paper Table 2, CVPR 2015 FCN-8s (earlier weights)",
                {"pixel_acc": 90.3, "mean_acc": 75.9, "mean_iu": 62.7, "fw_iu": 83.2},
            ),
        ),
    ),
    _voc_fcn(
        "fcn8s-atonce-voc", "fcn8s-atonce-pascal.caffemodel", "fcn8s_atonce", 65.4, 538, "FCN-8s at-once PASCAL VOC"
    ),
    _voc_fcn("fcn-alexnet-voc", "fcn-alexnet-pascal.caffemodel", "fcn_alexnet", 48.0, 235, "FCN-AlexNet PASCAL VOC"),
    KnownWeights(
        "vgg16-caffe",
        "VGG_ILSVRC_16_layers.caffemodel",
        ("http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel",),
        Checksum("md5", "441315b0ff6932dbfde97731be7ca852"),
        None,
        "imagenet (1000 classes; fc8 unused)",
        "caffe",
        "VGG16 ILSVRC-2014 (the paper's initialisation; train --init caffe:PATH)",
        size_bytes=553_432_081,
        approx_mb=553,
    ),
    KnownWeights(
        "vgg16-torchvision",
        "vgg16-397923af.pth",
        ("https://download.pytorch.org/models/vgg16-397923af.pth",),
        Checksum("sha256", "397923af"),
        None,
        "imagenet (1000 classes; fc8 unused)",
        "torchvision",
        "torchvision VGG16 IMAGENET1K_V1 (train --init vgg16-torchvision:PATH)",
        approx_mb=553,
    ),
    *(_other_dataset(f"fcn{s}", "pascalcontext", unsupported=_CONTEXT) for s in ("32s", "16s", "8s")),
    *(
        _other_dataset(
            f"fcn{s}",
            "siftflow",
            "",
            f"siftflow_fcn{s}",
            f"FCN-{s} SIFT Flow: 33 semantic + 3 geometric classes, two heads",
        )
        for s in ("32s", "16s", "8s")
    ),
    _other_dataset(
        "fcn32s",
        "nyud",
        "color",
        "fcn32s",
        "FCN-32s NYUDv2 colour (40 classes, NYUDv2 BGR mean)",
        caffe_input="nyud-color",
    ),
    _other_dataset(
        "fcn32s",
        "nyud",
        "hha",
        "fcn32s",
        "FCN-32s NYUDv2 HHA: give it HHA images (fcnseg.data.hha), not photos",
        caffe_input="nyud-hha",
    ),
    _other_dataset(
        "fcn32s",
        "nyud",
        "color-hha",
        "nyud_fcn32s_color_hha",
        "FCN-32s NYUDv2 colour + HHA late fusion (6-channel input: the nyud dataset's modality=color_hha)",
    ),
)

#: Registry name -> entry. Tests swap in their own table (monkeypatch this attribute).
KNOWN_WEIGHTS: dict[str, KnownWeights] = {entry.name: entry for entry in _ENTRIES}


def known_weights(name: str) -> KnownWeights:
    """The registry entry called ``name``; :class:`WeightsError` listing the names otherwise."""
    if name not in KNOWN_WEIGHTS:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(KNOWN_WEIGHTS)} (fcnseg weights list)")
    return KNOWN_WEIGHTS[name]
