"""Evaluation over a dataset and the ``fcnseg eval`` command, end to end on files the test writes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from dataset_files import CLASSES, PALETTE, hand_masks, write_folder_dataset
from PIL import Image
from tiny_models import tiny_model
from torch.utils.data import DataLoader

import fcnseg
from fcnseg.checkpoint import save_checkpoint
from fcnseg.cli import main
from fcnseg.data import PadCollate, open_dataset
from fcnseg.evaluation.loop import confusion_matrix, evaluate
from fcnseg.predict.images import predict_mask


def test_evaluate_equals_a_per_image_loop_with_numpy_metrics():
    model = tiny_model("fcn32s", 4, score_std=1.0)
    dataset = open_dataset("synthetic", None, "val", num_images=3, size=48, num_classes=4)
    result = evaluate(model, dataset, 4, "cpu", 255, progress=False)
    hist = np.zeros((4, 4), dtype=np.int64)
    for index in range(len(dataset)):
        image, mask = dataset[index]
        pred = predict_mask(model, image).numpy().ravel()
        gt = mask.numpy().ravel()
        keep = gt != 255
        np.add.at(hist, (gt[keep], pred[keep]), 1)
    t = hist.sum(1)
    assert result["pixel_acc"] == pytest.approx(np.trace(hist) / hist.sum())
    ius = [
        hist[i, i] / (t[i] + hist[:, i].sum() - hist[i, i]) if t[i] + hist[:, i].sum() else math.nan for i in range(4)
    ]
    assert result["mean_iu"] == pytest.approx(np.nanmean(ius))


def test_batched_loader_of_equal_sizes_gives_the_same_matrix_and_mode_is_restored():
    model = tiny_model("fcn32s", 4, score_std=1.0).train()
    dataset = open_dataset("synthetic", None, "val", num_images=4, size=40, num_classes=4)
    one_by_one = confusion_matrix(model, dataset, 4, progress=False)
    loader = DataLoader(dataset, batch_size=2, collate_fn=PadCollate(fill=(0, 0, 0)))
    batched = confusion_matrix(model, loader, 4, progress=False)
    assert torch.equal(one_by_one.matrix, batched.matrix)
    assert model.training


def _distributed_worker(rank: int, init_file: str, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = tiny_model("fcn32s", 4, score_std=1.0)
    dataset = open_dataset("synthetic", None, "val", num_images=3, size=40, num_classes=4)  # odd: 2 + 1 images
    matrix = confusion_matrix(model, dataset, 4, progress=False)
    queue.put((rank, matrix.matrix.tolist()))
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes import torch: ~10-30 s on the shared 2-core machine
def test_two_gloo_ranks_count_every_image_once(tmp_path):
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    dataset = open_dataset("synthetic", None, "val", num_images=3, size=40, num_classes=4)
    single = confusion_matrix(tiny_model("fcn32s", 4, score_std=1.0), dataset, 4, progress=False)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_distributed_worker, args=(rank, str(tmp_path / "init"), queue)) for rank in range(2)]
    for proc in procs:
        proc.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
    assert results[0] == results[1] == single.matrix.tolist()


@pytest.fixture
def zero_checkpoint(tmp_path):
    """The paper's initialisation: zero score layers, so every pixel is predicted as class 0."""
    model = fcnseg.create_model("fcn32s", num_classes=len(CLASSES), width=0.0625)
    return save_checkpoint(tmp_path / "zero.safetensors", model, classes=CLASSES, palette=PALETTE)


def test_eval_command_prints_writes_json_and_picture(tmp_path, zero_checkpoint, capsys):
    root = tmp_path / "data"
    write_folder_dataset(root, hand_masks())
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            str(zero_checkpoint),
            "--data",
            "folder",
            "--root",
            str(root),
            "--split",
            "val",
            "--json",
            str(tmp_path / "m.json"),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    # By hand: everything predicted background. Counted pixels 18 + 9 = 27 (2 ignored);
    # background t=18, cat t=3, dog t=6, bird absent from GT and prediction.
    expected = {
        "pixel_acc": 18 / 27,
        "mean_acc": (1 + 0 + 0) / 3,
        "mean_iu": (18 / 27 + 0 + 0) / 3,
        "fw_iu": 18 / 27 * 18 / 27,
    }
    document = json.loads((tmp_path / "m.json").read_text())
    for key, value in expected.items():
        assert document[key] == pytest.approx(value), key
    assert document["iu"][3] is None  # NaN written as null: bird is in neither GT nor prediction
    assert document["per_class"]["dog"] == {"iu": 0.0, "acc": 0.0, "pixels": 6}
    assert document["confusion_matrix"] == [[18, 0, 0, 0], [3, 0, 0, 0], [6, 0, 0, 0], [0, 0, 0, 0]]
    assert json.loads((out / "metrics.json").read_text())["mean_iu"] == pytest.approx(expected["mean_iu"])
    with Image.open(out / "confusion_matrix.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 300
    printed = capsys.readouterr().out
    assert "mean IU    0.2222" in printed and "pixel acc  0.6667" in printed
    assert any(line.split()[:2] == ["bird", "-"] for line in printed.splitlines())
    assert (
        main(
            [
                "eval",
                str(zero_checkpoint),
                "--data",
                "folder",
                "--root",
                str(root),
                "--split",
                "val",
                "--json",
                str(tmp_path / "plain.json"),
                "--no-fast-paths",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "plain.json").read_text())["confusion_matrix"] == document["confusion_matrix"]


def test_eval_rejects_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    write_folder_dataset(tmp_path / "data", hand_masks())
    fake = tmp_path / "fake.safetensors"
    fake.write_text("hello")
    code = main(["eval", str(fake), "--data", "folder", "--root", str(tmp_path / "data"), "--split", "val"])
    err = capsys.readouterr().err
    assert code == 2 and "fake.safetensors" in err and "not an fcnseg checkpoint" in err and "Traceback" not in err


def test_eval_rejects_classes_that_do_not_match(tmp_path, zero_checkpoint, capsys):
    write_folder_dataset(tmp_path / "three", hand_masks(), classes=["background", "cat", "dog"])
    code = main(["eval", str(zero_checkpoint), "--data", "folder", "--root", str(tmp_path / "three"), "--split", "val"])
    err = capsys.readouterr().err
    assert code == 2 and "predicts 4 classes but the dataset has 3" in err

    write_folder_dataset(tmp_path / "renamed", hand_masks(), classes=["background", "cat", "horse", "bird"])
    code = main(
        ["eval", str(zero_checkpoint), "--data", "folder", "--root", str(tmp_path / "renamed"), "--split", "val"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "id 2: checkpoint 'dog', dataset 'horse'" in err


def test_eval_reports_a_label_outside_the_classes(tmp_path, zero_checkpoint, capsys):
    masks = hand_masks()
    masks[1][2, 2] = 7  # no class 7 among 4
    write_folder_dataset(tmp_path / "data", masks)
    code = main(["eval", str(zero_checkpoint), "--data", "folder", "--root", str(tmp_path / "data"), "--split", "val"])
    err = capsys.readouterr().err
    assert code == 2 and "img1" in err and "7" in err and "Traceback" not in err


def test_eval_detail_reports_small_objects_boundaries_dice_and_the_worst_images(tmp_path, capsys, monkeypatch):
    from fcnseg.data import SHAPE_CLASSES
    from fcnseg.evaluation import figures
    from fcnseg.evaluation.detail_metrics import dice_scores

    drawn = {}
    draw = figures.overlay_grid
    monkeypatch.setattr(
        figures,
        "overlay_grid",
        lambda images, preds, targets, palette, path, *, titles: (
            drawn.update(images=images, titles=titles) or draw(images, preds, targets, palette, path, titles=titles)
        ),
    )
    model = tiny_model("fcn32s", len(SHAPE_CLASSES), score_std=1.0)
    path = save_checkpoint(
        tmp_path / "m.safetensors",
        model,
        classes=SHAPE_CLASSES,
        palette=[(i * 30, 0, 0) for i in range(len(SHAPE_CLASSES))],
    )
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                str(path),
                "--data",
                "synthetic",
                "--data-option",
                "size=48",
                "--data-option",
                "num_images=5",
                "--detail",
                "--worst",
                "2",
                "--out",
                str(out),
                "--json",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "by object size" in printed and "small" in printed and "mean boundary IoU" in printed and "worst:" in printed
    document = json.loads((tmp_path / "m.json").read_text())
    detail = document["detail"]
    assert len(detail["per_image"]["mean_iu"]) == 5 and len(detail["boundary"]["boundary_iou"]) == 7
    matrix = torch.tensor(document["confusion_matrix"], dtype=torch.float64)
    expected = [None if v != v else round(v, 9) for v in dice_scores(matrix).tolist()]  # same matrix, same Dice
    assert [None if v is None else round(v, 9) for v in detail["dice"]["dice"]] == expected
    # worst_images.png: the two images of lowest per-image mean IU, worst first, each with its score
    scores = detail["per_image"]["mean_iu"]
    worst = sorted((i for i, v in enumerate(scores) if v is not None), key=lambda i: scores[i])[:2]
    dataset = open_dataset("synthetic", None, "val", size=48, num_images=5)
    assert [title.rsplit(": ", 1)[1] for title in drawn["titles"]] == [f"{scores[i]:.3f}" for i in worst]
    assert all(torch.equal(image, dataset[i][0]) for image, i in zip(drawn["images"], worst, strict=True))
    with Image.open(out / "worst_images.png") as picture:
        assert picture.format == "PNG"
