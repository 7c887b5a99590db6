"""Initialising FCN weights: torchvision ImageNet trunks, the paper's Caffe files, and FCN -> FCN surgery.

Every function checks shapes and raises :class:`WeightsError` naming the file and the layer. The state-dict functions
are pure; the ``load_*`` / ``transfer_*`` functions apply them to a model in place and return the reference names of the
layers they loaded.

Published weights by name: :data:`KNOWN_WEIGHTS` (the registry), :func:`fetch` (download
into the cache, verified), :func:`resolve_checkpoint` (a name or a path -> a checkpoint file).
"""

from .caffe import load_caffe_weights
from .caffemodel import CaffeLayer, read_caffemodel
from .checks import WeightsError, assign_reference_weights, reference_tensors
from .convert import convert_caffemodel, resolve_checkpoint
from .download import cache_dir, fetch
from .imagenet import load_imagenet, torchvision_weights, trunk_state_from_torchvision
from .registry import KNOWN_WEIGHTS, KnownWeights, known_weights
from .surgery import change_num_classes_state, class_index_map, transfer_fcn, transfer_fcn_state, with_num_classes
from .torchvision_vgg import (
    download_vgg16_state,
    load_vgg16_torchvision,
    read_state_dict_file,
    torchvision_cache_path,
    vgg16_from_torchvision,
)

__all__ = [
    "KNOWN_WEIGHTS",
    "CaffeLayer",
    "KnownWeights",
    "WeightsError",
    "assign_reference_weights",
    "cache_dir",
    "change_num_classes_state",
    "class_index_map",
    "convert_caffemodel",
    "download_vgg16_state",
    "fetch",
    "load_imagenet",
    "known_weights",
    "load_caffe_weights",
    "load_vgg16_torchvision",
    "read_caffemodel",
    "read_state_dict_file",
    "reference_tensors",
    "resolve_checkpoint",
    "torchvision_cache_path",
    "transfer_fcn",
    "transfer_fcn_state",
    "trunk_state_from_torchvision",
    "torchvision_weights",
    "vgg16_from_torchvision",
    "with_num_classes",
]
