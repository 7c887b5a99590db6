"""The dataset doctor: what in a dataset makes training fail or silently learn the wrong thing.

:func:`diagnose` reads the masks (and images) of a split, and optionally of the
other split, and returns :class:`Finding` s, each with its remedy:

- masks holding only 0 and 255 (binary masks whose foreground is the ignore value)
- RGB colour masks (a colour -> id table is proposed: ids 0..K-1, an unlabelled-looking colour -> 255),
  JPEG masks (refused: lossy)
- masks the size of their image as stored while the image is read EXIF-rotated
- unreadable items (missing, truncated, bad labels, size mismatch), of both splits, all in one pass
- classes that never occur in train, or only in val; identical image files in both splits
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .base import SegmentationDataset
from .colours import BLACK, ColourTable, count_border_colours, count_colours, propose_colour_table
from .errors import ColourMaskError, DatasetError, LossyMaskError
from .palette import VOC_VOID_COLOUR
from .readers import check_regular_file, read_colour_mask, read_image_header


@dataclass(frozen=True)
class Finding:
    """One problem: ``severity`` "error" (items unusable), "warning" (training would be wrong) or "info"."""

    severity: str
    code: str
    message: str
    detail: str = ""  # further lines, e.g. a proposed colour table


@dataclass
class Survey:
    """What one pass over (some) items of a split found; :func:`survey` makes it."""

    dataset: SegmentationDataset
    indices: list[int]
    bad: list[tuple[int, str]] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (id, reason) of items dropped when opened
    colour_items: list[int] = field(default_factory=list)
    colours: Counter = field(default_factory=Counter)
    colour_borders: Counter = field(default_factory=Counter)  # pixels of each colour on a region border
    lossy_items: list[int] = field(default_factory=list)
    rotated_items: list[int] = field(default_factory=list)  # masks that match the image as stored, not upright
    values: set[int] = field(default_factory=set)  # raw mask values seen
    class_pixels: np.ndarray | None = None
    digests: dict[bytes, int] = field(default_factory=dict)  # image file SHA-256 -> index

    @property
    def looks_binary(self) -> bool:
        """Masks hold 0 and 255 and nothing else: a 0/255 binary mask whose foreground is the ignore value."""
        return self.values == {0, 255} and not getattr(self.dataset, "binary", False)


def _sample(length: int, max_items: int | None) -> list[int]:
    if max_items is None or max_items >= length:
        return list(range(length))
    return sorted({int(i) for i in np.linspace(0, length - 1, max_items)})


def _digest(path: str) -> bytes | None:
    try:
        check_regular_file(path, "image")  # never open a FIFO
        with open(path, "rb") as handle:
            digest = hashlib.sha256()
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        return digest.digest()
    except (DatasetError, OSError):
        return None  # reported by the item check


def _mask_drawn_on_stored_pixels(dataset: SegmentationDataset, index: int, mask_shape: tuple[int, ...]) -> bool:
    """Whether the image is EXIF-rotated and the mask has its size as stored (a fixable mismatch)."""
    width, height, orientation = read_image_header(dataset.image_paths[index])  # type: ignore[attr-defined]
    return orientation != 1 and tuple(mask_shape) == (height, width)


def survey(dataset: SegmentationDataset, *, max_items: int | None = None, decode_images: bool = True) -> Survey:
    """Read each (sampled) item's mask, and image if ``decode_images``; collect what :func:`diagnose` reports."""
    result = Survey(dataset, _sample(len(dataset), max_items))
    result.missing = list(getattr(dataset, "dropped", []))  # opened with skip_bad: a missing file is no item
    result.class_pixels = np.zeros(dataset.num_classes, np.int64)
    has_files = hasattr(dataset, "image_paths")
    for index in result.indices:
        if has_files and (digest := _digest(dataset.image_paths[index])) is not None:  # type: ignore[attr-defined]
            result.digests.setdefault(digest, index)
        try:
            mask = dataset.load_mask(index)
            values, counts = np.unique(mask.numpy(), return_counts=True)
            result.values.update(values.tolist())
            if decode_images:
                image = dataset.load_image(index)
                if (
                    image.shape[-2:] != mask.shape
                    and has_files
                    and _mask_drawn_on_stored_pixels(dataset, index, mask.shape)
                ):
                    result.rotated_items.append(index)
                    continue
                dataset.check_size(image, mask, index)
            dataset.check_labels(mask, index)
            keep = values != dataset.ignore_index
            np.add.at(result.class_pixels, values[keep], counts[keep])
        except ColourMaskError:
            try:
                rgb = read_colour_mask(dataset.mask_paths[index])  # type: ignore[attr-defined]
                result.colours.update(count_colours(rgb))
                result.colour_borders.update(count_border_colours(rgb))
                result.colour_items.append(index)
            except DatasetError as error:
                result.bad.append((index, str(error)))
        except LossyMaskError:
            result.lossy_items.append(index)
        except DatasetError as error:
            result.bad.append((index, str(error)))
    return result


def colour_table_for(surveys: Sequence[Survey]) -> ColourTable | None:
    """The dataset's own colour table, else one proposed from the colours of the surveyed colour masks."""
    dataset = surveys[0].dataset
    own = getattr(dataset, "colour_table", None)
    colours: Counter = sum((s.colours for s in surveys), Counter())
    borders: Counter = sum((s.colour_borders for s in surveys), Counter())
    if own or not colours:
        return own
    return propose_colour_table(colours, dataset.ignore_index, num_classes=dataset.num_classes, borders=borders)


def _proposal_text(table: ColourTable, surveys: Sequence[Survey], ignore_index: int) -> str:
    """What the proposed table does, for the colour-masks finding: which colours are classes, which unlabelled, why."""
    colours: Counter = sum((s.colours for s in surveys), Counter())
    borders: Counter = sum((s.colour_borders for s in surveys), Counter())
    total = sum(colours.values()) or 1
    labelled = sorted((colour, index) for colour, index in table.entries.items() if index != ignore_index)
    text = f"; proposed below: {len(labelled)} colours as class ids" if labelled else "; proposed below:"
    if labelled and [index for _, index in labelled] == list(range(len(labelled))):  # numbered in RGB order
        text += (
            f" 0..{len(labelled) - 1} in RGB order, not your class order "
            "(check each against classes.txt, line i = id i)"
        )
    elif labelled:
        text += " (check each against classes.txt, line i = id i)"
    for colour in [c for c, index in table.entries.items() if index == ignore_index]:
        why = (
            "black"
            if colour == BLACK
            else "the VOC void colour"
            if colour == VOC_VOID_COLOUR
            else f"{borders[colour] / max(colours[colour], 1):.0%} of its pixels on region borders"
        )
        text += (
            f", and {colour} as {ignore_index}, the ignore value (not trained, not scored): it looks unlabelled "
            f"({why}, {colours[colour] / total:.1%} of the pixels)"
        )
    return text


def _examples(dataset: SegmentationDataset, indices: list[int], count: int = 2) -> str:
    paths = getattr(dataset, "mask_paths", dataset.ids)
    return ", ".join(str(paths[i]) for i in indices[:count]) + (", ..." if len(indices) > count else "")


def _class_list(dataset: SegmentationDataset, ids: np.ndarray, other_pixels: np.ndarray | None) -> str:
    def one(c: int) -> str:
        extra = (
            f"; {int(other_pixels[c]):,} pixels in the other split"
            if other_pixels is not None and other_pixels[c]
            else ""
        )
        return f"{dataset.classes[c]} (id {c}{extra})"

    return ", ".join(one(int(c)) for c in ids[:12]) + (", ..." if len(ids) > 12 else "")


def _bad_items(found: Survey) -> list[tuple[str, str]]:
    """``(id, reason)`` of every unusable item: those dropped when opened, then those that failed to read."""
    return found.missing + [(str(found.dataset.ids[index]), message) for index, message in found.bad]


def findings_of(train: Survey, other: Survey | None = None) -> list[Finding]:
    """Findings from a survey of a split and, for the cross-split checks, one of the other split."""
    dataset, found = train.dataset, []
    checked = len(train.indices)
    if checked < len(dataset):
        found.append(Finding("info", "sampled", f"checked {checked} of {len(dataset)} items (evenly spaced)"))
    # Items by id, not index: an index shifts when items with a missing file are dropped.
    found += [Finding("error", "bad-item", f"bad item {item}: {message}") for item, message in _bad_items(train)]
    if other is not None:  # every problem in one pass: the other split's unusable items too
        name = (other.dataset.split_info or {}).get("split", "other")
        found += [
            Finding("error", "other-bad-item", f"bad item {item} of the other split ({name}): {message}")
            for item, message in _bad_items(other)
        ]
    found += _mask_format_findings(train, other)
    readable = checked - len(train.bad) - len(train.colour_items) - len(train.lossy_items) - len(train.rotated_items)
    other_pixels = other.class_pixels if other is not None else None
    if readable and train.class_pixels is not None:
        missing = np.flatnonzero(train.class_pixels == 0)
        if len(missing):
            classes = _class_list(dataset, missing, other_pixels)
            message = (f"{len(missing)} of {dataset.num_classes} classes never occur in the {readable} readable train "
                       f"masks checked: {classes}; the model cannot learn them")  # fmt: skip
            found.append(Finding("warning", "class-missing", message))
    if other is not None:
        found += _cross_split_findings(train, other)
    return found


def _mask_format_findings(train: Survey, other: Survey | None) -> list[Finding]:
    """Masks in a form the dataset cannot read as class ids: colours, JPEG, EXIF-unrotated, binary 0/255."""
    dataset, found = train.dataset, []
    if train.colour_items:
        table = colour_table_for([train] + ([other] if other else []))
        message = (f"{len(train.colour_items)} masks are RGB colour images ({_examples(dataset, train.colour_items)}), "
                   f"{len(train.colours)} colours in all; expected class ids")  # fmt: skip
        detail = ""
        if table is None:
            message += ": too many colours to be labels (JPEG-compressed or photos?)"
        else:
            if table is not getattr(dataset, "colour_table", None):
                message += _proposal_text(table, [train] + ([other] if other else []), dataset.ignore_index)
            message += ("; save the table, edit it if needed and open with --data-option colors=FILE, or let --fix OUT "
                        "convert the masks with it as it is")  # fmt: skip
            top = len(table.class_names(dataset.ignore_index)) - 1
            if top >= dataset.num_classes:
                message += f"; its ids go up to {top} but the dataset has {dataset.num_classes} classes: edit the ids"
            detail = table.text()
        found.append(Finding("error", "colour-masks", message, detail))
    if train.lossy_items:
        message = (f"{len(train.lossy_items)} masks are JPEG files ({_examples(dataset, train.lossy_items)}); expected "
                   "lossless PNG: JPEG compression changes class ids along every edge, so they are refused (export the "
                   "masks as PNG)")  # fmt: skip
        found.append(Finding("error", "jpeg-masks", message))
    if train.rotated_items:
        message = (f"{len(train.rotated_items)} masks have the size of their image as stored, but the image carries an "
                   f"EXIF rotation and is read upright ({_examples(dataset, train.rotated_items)}): the masks were "
                   "drawn on the unrotated pixels; --fix OUT writes them rotated the same way")  # fmt: skip
        found.append(Finding("error", "exif-rotation", message))
    if train.looks_binary:
        # 255 ignored leaves class 0 alone to learn: a run would "succeed" with every score perfect, so it is an error.
        ignored = dataset.ignore_index == 255
        message = (f"masks hold only the values 0 and 255, and 255 is {'the ignore value' if ignored else 'no class'}: "
                   "there is no trainable foreground (255 is never trained nor scored: a run learns class 0 alone and "
                   "every score reads perfect); open with --data-option binary=true (0 -> class 0, any other value -> "
                   "class 1), or let --fix OUT write 0/1 masks")  # fmt: skip
        found.append(Finding("error" if ignored else "warning", "binary-masks", message))
    return found


def _cross_split_findings(train: Survey, other: Survey) -> list[Finding]:
    """What the two splits say together: classes the other split lacks, identical images, its unreadable masks."""
    dataset, found = train.dataset, []
    if other.class_pixels is not None and other.dataset.num_classes == dataset.num_classes:
        absent = np.flatnonzero(other.class_pixels == 0)
        if len(absent) and len(absent) < dataset.num_classes:
            classes = _class_list(dataset, absent, None)
            message = (f"classes absent from the other split ({len(other.indices)} masks checked): {classes}; their "
                       "IU is not measured, mean IU averages the rest")  # fmt: skip
            found.append(Finding("info", "class-not-in-other", message))
        same = [(train.digests[d], i) for d, i in other.digests.items() if d in train.digests]
        if same:
            pairs = ", ".join(f"{dataset.ids[a]} = {other.dataset.ids[b]}" for a, b in same[:3])
            more = ", ..." if len(same) > 3 else ""
            message = (f"{len(same)} image files of the other split are identical to images of this split ({pairs}"
                       f"{more}): scores on them measure memory, not generalisation")  # fmt: skip
            found.append(Finding("warning", "duplicates", message))
        # said of the other split only when this split's findings do not say it already
        pairs_of_items = ((other.colour_items, train.colour_items), (other.lossy_items, train.lossy_items),
                          (other.rotated_items, train.rotated_items))  # fmt: skip
        if any(theirs and not ours for theirs, ours in pairs_of_items):
            message = ("some masks of the other split are colour, JPEG or unrotated masks; check that split itself "
                       "(fcnseg data --split ...)")  # fmt: skip
            found.append(Finding("info", "other-unreadable", message))
    return found


def diagnose(
    dataset: SegmentationDataset,
    other_split: SegmentationDataset | None = None,
    *,
    max_items: int | None = None,
    decode_images: bool = True,
) -> list[Finding]:
    """Check ``dataset`` (and, against it, ``other_split``, e.g. train and val); errors first.

    ``max_items`` bounds the items read per split (evenly spaced; for a quick check at the start of training);
    ``decode_images=False`` reads masks only (no size or EXIF checks; image files are still hashed), in both splits.
    Nothing is raised for bad items: they are findings, those of both splits listed (a dataset opened with
    ``skip_bad=True`` lists the items it dropped for a missing file, too).
    """
    train = survey(dataset, max_items=max_items, decode_images=decode_images)
    other = survey(other_split, max_items=max_items, decode_images=decode_images) if other_split is not None else None
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(findings_of(train, other), key=lambda finding: order[finding.severity])
