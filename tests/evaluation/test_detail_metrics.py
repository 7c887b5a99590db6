"""Size-binned IU, boundary IoU, Dice and per-image IU against hand-made cases and independent numpy code."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
import torch
from scipy import ndimage

from fcnseg.evaluation.detail_metrics import BoundaryIoU, DiceScore, PerImageIU, SizeIU, boundary_width, dice_scores
from fcnseg.evaluation.metrics import ConfusionMatrix

IGNORE = 255


# ---------------------------------------------------------------- IU by object size


def _size_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 10x10 images. Image 0, class 1 segments: A = 1 px at (0, 0); E = 1 px at (2, 1); a diagonal
    chain of 4 px (0,6)-(3,9) (one segment with 8-connectivity, four with 4); C = 5x4 block at rows 5-9,
    cols 0-3; D = 2x2 block at rows 6-7, cols 6-7; (9, 9) ignored; the rest class 0 (69 px). Image 1: all
    class 0, with class-2 blobs of 3 px and 5 px predicted where there is none."""
    target = torch.zeros(2, 10, 10, dtype=torch.int64)
    target[0, 0, 0] = target[0, 2, 1] = 1
    for i in range(4):
        target[0, i, 6 + i] = 1
    target[0, 5:10, 0:4] = 1
    target[0, 6:8, 6:8] = 1
    target[0, 9, 9] = IGNORE
    pred = torch.zeros_like(target)
    pred[0, 0, 6] = pred[0, 1, 7] = 1  # half the chain found, A missed
    # E found inside a 3x3 blob; its 8 false positives are nearest to A or E (small), though the blob
    # joins C's predicted component below (a large one)
    pred[0, 1:4, 0:3] = 1
    pred[0, 4:10, 0:4] = 1  # C found, plus 4 false positives on row 4 (nearest segment: C)
    pred[0, 6:8, 6:9] = 1  # D found, plus 2 false positives in column 8 (nearest segment: D)
    pred[0, 9, 9] = 1  # on the ignored pixel: counted nowhere
    pred[1, 0, 0:3] = 2
    pred[1, 5:6, 2:7] = 2
    return pred, target


def test_size_bins_of_hand_made_segments_with_8_connectivity():
    pred, target = _size_case()
    metric = SizeIU(3, edges=(4, 16))  # small < 4 px, medium 4..15, large >= 16
    metric.update(pred, target)
    counts = {key: value.tolist() for key, value in metric.counts.items()}
    # class 1: small = A, E; medium = chain + D; large = C
    assert counts["segments"][1] == [2, 2, 1]
    assert counts["gt"][1] == [2, 8, 20]
    assert counts["tp"][1] == [1, 2 + 4, 20]
    assert counts["fp"][1] == [8, 2, 4]
    # class 0: one background segment per image, 69 and 100 px (the chain does not cut it with
    # 8-connectivity); image 0 misses 14 of its pixels and calls A and two chain pixels background;
    # image 1 loses 8 to class 2
    assert counts["segments"][0] == [0, 0, 2]
    assert counts["gt"][0] == [0, 0, 169]
    assert counts["tp"][0] == [0, 0, 55 + 92]
    assert counts["fp"][0] == [0, 0, 3]
    # class 2 exists only as hallucinated blobs, judged by their own size
    assert counts["gt"][2] == [0, 0, 0] and counts["fp"][2] == [3, 5, 0]

    result = metric.compute()
    small, medium, large = result["bins"]
    assert [b["name"] for b in result["bins"]] == ["<4", "4-15", ">=16"] and result["connectivity"] == 8
    assert medium["acc"][1] == pytest.approx(6 / 8) and medium["iu"][1] == pytest.approx(6 / 10)
    assert large["iu"][1] == pytest.approx(20 / 24) and large["iu"][0] == pytest.approx(147 / 172)
    assert small["iu"][1] == pytest.approx(1 / 10) and small["iu"][2] == 0
    assert math.isnan(large["iu"][2]) and math.isnan(small["acc"][2])
    assert small["mean_iu"] == pytest.approx(0.05) and math.isnan(small["iu"][0])
    assert large["pixel_acc"] == pytest.approx((20 + 147) / 189)
    assert (small["min_area"], small["max_area"], large["max_area"]) == (0, 4, None)
    assert medium["segments"] == 2 and medium["pixels"] == 8


def test_4_connectivity_splits_the_diagonal_chain():
    pred, target = _size_case()
    metric = SizeIU(3, edges=(4, 16), connectivity=4)
    metric.update(pred[:1], target[:1])
    assert metric.counts["segments"][1].tolist() == [2 + 4, 1, 1]
    assert metric.counts["gt"][1].tolist() == [6, 4, 20]
    assert metric.counts["tp"][1].tolist() == [1 + 2, 4, 20]
    assert metric.counts["fp"][1].tolist() == [8, 2, 4]


def test_default_bins_are_coco_sizes():
    target = torch.zeros(1, 120, 120, dtype=torch.int64)
    target[0, :31, :32] = 1  # 992 px: small
    target[0, 40:72, 40:72] = 2  # 1024 px: medium (the lower edge is inclusive)
    target[0, 119, :] = 3  # 120 px: small
    metric = SizeIU(4)
    metric.update(target, target)
    assert [b["name"] for b in metric.compute()["bins"]] == ["small", "medium", "large"]
    assert metric.counts["segments"].tolist() == [[0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0]]
    assert metric.compute()["bins"][0]["mean_iu"] == 1.0


def _components(mask: np.ndarray, eight: bool) -> list[list[tuple[int, int]]]:
    """Connected components by breadth-first search, independent of scipy."""
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)] + ([(-1, -1), (-1, 1), (1, -1), (1, 1)] if eight else [])
    seen = np.zeros_like(mask, dtype=bool)
    components = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        queue, pixels = deque([start]), []
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for dy, dx in steps:
                ny, nx = y + dy, x + dx
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        components.append(pixels)
    return components


@pytest.mark.parametrize("connectivity", [4, 8])
def test_random_maps_against_a_breadth_first_reference_and_the_confusion_matrix(connectivity):
    generator = np.random.default_rng(3)
    target = ndimage.zoom(generator.integers(0, 4, (3, 6, 7)), (1, 3, 3), order=0)  # blobs, 18 x 21
    target[generator.random(target.shape) < 0.05] = IGNORE
    pred = np.where(generator.random(target.shape) < 0.3, generator.integers(0, 4, target.shape), target)
    pred[pred == IGNORE] = 0
    edges = (3, 12, 40)
    metric = SizeIU(4, edges=edges, connectivity=connectivity)
    metric.update(torch.from_numpy(pred), torch.from_numpy(target))

    segments, gt, tp = (np.zeros((4, 4), dtype=np.int64) for _ in range(3))
    for image, truth in zip(pred, target, strict=True):
        for c in range(4):
            for pixels in _components(truth == c, connectivity == 8):
                b = sum(len(pixels) >= e for e in edges)
                segments[c, b] += 1
                gt[c, b] += len(pixels)
                tp[c, b] += sum(image[y, x] == c for y, x in pixels)
    assert metric.counts["segments"].numpy().tolist() == segments.tolist()
    assert metric.counts["gt"].numpy().tolist() == gt.tolist()
    assert metric.counts["tp"].numpy().tolist() == tp.tolist()
    # the bins partition each class's confusion counts
    confusion = ConfusionMatrix(4)
    confusion.update(torch.from_numpy(pred), torch.from_numpy(target))
    matrix = confusion.matrix
    assert metric.counts["fp"].sum(1).tolist() == (matrix.sum(0) - matrix.diag()).tolist()
    assert metric.counts["tp"].sum(1).tolist() == matrix.diag().tolist()


def test_bad_size_settings_and_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="increasing"):
        SizeIU(3, edges=(16, 4))
    with pytest.raises(ValueError, match="names"):
        SizeIU(3, edges=(4,), names=["a", "b", "c"])
    with pytest.raises(ValueError, match="connectivity"):
        SizeIU(3, connectivity=6)
    with pytest.raises(ValueError, match=r"\[7\] out of range"):
        SizeIU(3).update(torch.full((4, 4), 7), torch.zeros(4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="shape"):
        SizeIU(3).update(torch.zeros(4, 4, dtype=torch.int64), torch.zeros(4, 5, dtype=torch.int64))


# ---------------------------------------------------------------- boundary IoU


def _boundary_reference(pred: np.ndarray, target: np.ndarray, num_classes: int, ratio: float) -> list[float]:
    """Boundary IoU written out with scipy's chessboard distance transform on a zero-padded mask."""
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for p, t in zip(pred, target, strict=True):
        h, w = t.shape
        d = max(1, int(round(ratio * math.sqrt(h * h + w * w))))
        valid = t != IGNORE

        def region(mask, d=d, valid=valid):
            distance = ndimage.distance_transform_cdt(np.pad(mask, 1), metric="chessboard")[1:-1, 1:-1]
            return mask & (distance <= d) & valid

        for c in range(num_classes):
            g, q = region(t == c), region(p == c)
            inter[c] += (g & q).sum()
            union[c] += (g | q).sum()
    return [i / u if u else math.nan for i, u in zip(inter, union, strict=True)]


def test_boundary_width_follows_the_image_diagonal():
    assert boundary_width(360, 480) == 12  # 2% of 600
    assert boundary_width(3, 4) == 1  # at least one pixel
    assert boundary_width(300, 400, ratio=0.05) == 25


def test_shifted_square_by_hand():
    target = torch.zeros(20, 20, dtype=torch.int64)
    target[5:15, 5:15] = 1
    pred = torch.zeros_like(target)
    pred[5:15, 6:16] = 1  # one pixel to the right; d = round(0.02 * 28.3) = 1
    metric = BoundaryIoU(2)
    metric.update(pred, target)
    # class 1: the squares' 36-px rings share their top and bottom rows (2 x 9)
    # class 0: the 76-px image frame plus the 44-px rings around the squares, sharing 2 x 11
    assert metric.counts["intersection"].tolist() == [76 + 22, 18]
    assert metric.counts["union"].tolist() == [120 + 120 - 98, 36 + 36 - 18]
    result = metric.compute()
    assert result["boundary_iou"] == pytest.approx([98 / 142, 1 / 3])
    assert result["mean_boundary_iou"] == pytest.approx((98 / 142 + 1 / 3) / 2)
    metric.update(target, target)
    assert metric.compute()["boundary_iou"][1] == pytest.approx((18 + 36) / (54 + 36))


@pytest.mark.parametrize(
    "shape, ratio",
    [((3, 37, 53), 0.02), ((2, 40, 30), 0.05), ((1, 60, 80), 0.05), ((1, 9, 11), 0.02), ((1, 9, 11), 0.9)],
)
def test_random_maps_against_a_distance_transform_reference(shape, ratio):
    generator = np.random.default_rng(sum(shape))
    n, h, w = shape
    target = ndimage.zoom(generator.integers(0, 5, (n, h // 4 + 1, w // 4 + 1)), (1, 4, 4), order=0)[:, :h, :w]
    target[generator.random(target.shape) < 0.03] = IGNORE
    pred = ndimage.zoom(generator.integers(0, 5, (n, h // 5 + 1, w // 5 + 1)), (1, 5, 5), order=0)[:, :h, :w]
    metric = BoundaryIoU(6, ratio=ratio)  # class 5 never occurs: NaN
    metric.update(torch.from_numpy(pred), torch.from_numpy(target))
    expected = _boundary_reference(pred, target, 6, ratio)
    np.testing.assert_allclose(metric.compute()["boundary_iou"], expected, rtol=1e-12)
    assert math.isnan(metric.compute()["boundary_iou"][5])


# ---------------------------------------------------------------- Dice and per-image IU


def test_dice_by_hand():
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    target = torch.tensor([0, 0, 1, 1, 2, IGNORE])
    metric = DiceScore(4)
    metric.update(pred.reshape(2, 3), target.reshape(2, 3))
    # t = (2, 2, 1, 0), p = (2, 3, 0, 0): 2*1/4, 2*2/5, 0/1, 0/0
    result = metric.compute()
    assert result["dice"][:3] == pytest.approx([0.5, 0.8, 0.0]) and math.isnan(result["dice"][3])
    assert result["mean_dice"] == pytest.approx(1.3 / 3)
    assert dice_scores(metric.counts["matrix"])[1].item() == pytest.approx(0.8)


def test_per_image_mean_iu_by_hand_with_ids():
    pred = torch.tensor([[[0, 0], [1, 1]], [[1, 1], [1, 1]], [[0, 0], [0, 0]]])
    target = torch.tensor([[[0, 0], [1, 0]], [[1, 1], [1, 1]], [[IGNORE] * 2] * 2])
    metric = PerImageIU(2)
    metric.update(pred, target, ids=["a", "b", "c"])
    result = metric.compute()
    # image a: IU_0 = 2/3, IU_1 = 1/2; image b: IU_1 = 1 (class 0 absent: left out); image c: nothing to score
    assert result["ids"] == ["a", "b", "c"]
    assert result["mean_iu"][:2] == pytest.approx([(2 / 3 + 1 / 2) / 2, 1.0]) and math.isnan(result["mean_iu"][2])
    assert result["mean"] == pytest.approx(((2 / 3 + 1 / 2) / 2 + 1.0) / 2)
    other = PerImageIU(2)
    other.update(pred[1], target[1])  # one (H, W) map, id = running index
    metric.merge(other)
    assert metric.compute()["ids"] == ["a", "b", "c", 0]
    with pytest.raises(ValueError, match="2 ids for a batch of 3"):
        metric.update(pred, target, ids=["x", "y"])


def test_merged_halves_equal_one_pass():
    generator = torch.Generator().manual_seed(5)
    target = torch.randint(0, 3, (4, 12, 12), generator=generator)
    pred = torch.randint(0, 3, (4, 12, 12), generator=generator)
    for make in (lambda: SizeIU(3, edges=(2, 6)), lambda: BoundaryIoU(3), lambda: DiceScore(3)):
        whole, first, second = make(), make(), make()
        whole.update(pred, target)
        first.update(pred[:2], target[:2])
        second.update(pred[2:], target[2:])
        first.merge(second)
        assert all(torch.equal(first.counts[k], whole.counts[k]) for k in whole.counts)
        assert any(int(v.sum()) > 0 for v in whole.counts.values())
    with pytest.raises(ValueError, match="different settings"):
        SizeIU(3).merge(SizeIU(4))


def _all_reduce_worker(rank: int, init_file: str, results) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    target = torch.tensor([[0, 1], [1, 1]]) if rank == 0 else torch.tensor([[1, 1], [0, 0]])
    dice, per_image = DiceScore(2), PerImageIU(2)
    dice.update(target, target)
    per_image.update(target, target, ids=[f"rank{rank}"])
    dice.all_reduce()
    per_image.all_reduce()
    results[rank] = (dice.counts["matrix"].tolist(), per_image.compute()["ids"])
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes: several seconds
@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)
def test_all_reduce_sums_counts_and_gathers_images_over_two_processes(tmp_path):
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_all_reduce_worker, args=(str(tmp_path / "init"), results), nprocs=2)
        results = dict(results)
    for rank in (0, 1):
        assert results[rank] == ([[3, 0], [0, 5]], ["rank0", "rank1"])
