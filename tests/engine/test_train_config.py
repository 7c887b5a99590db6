"""Training settings: layers (recipe, file, flags, --set), typed and checked values, the clock, --out safety."""

from __future__ import annotations

import json

import pytest
import torch

from fcnseg.cli import main
from fcnseg.data import DatasetError
from fcnseg.engine import build_config, load_run_config, train
from fcnseg.engine.distributed import DistContext
from fcnseg.engine.run_length import CLOCK_RESOLUTION
from fcnseg.engine.train import _apply_lr, build_run

TINY = [
    ("model.width", 0.0625),
    ("data_options", {"size": 32, "num_images": 8}),
    ("val_data_options", {"num_images": 2}),
    ("threads", 1),
    ("progress", False),
    ("overlays", 0),
    ("class_weights", None),
    ("cpu_bf16", False),
    ("recipe.batch_size", 2),
    ("log_every", 1),
]


def test_set_converts_to_each_settings_type():
    config = build_config("modern", settings=[
        ("recipe.steps", "12"), ("recipe.lr", "2e-3"), ("recipe.hflip", "no"), ("recipe.crop_size", "native"),
        ("recipe.scale_range", "[0.75, 1.25]"), ("seed", "7"), ("threads", "none"), ("model.dropout", "0.1"),
        ("data_options.size", "48"), ("init", "caffe:x.caffemodel"), ("lr", "0.5")])  # fmt: skip
    recipe = config.recipe
    assert (recipe.steps, recipe.hflip, recipe.crop_size, recipe.scale_range) == (12, False, None, (0.75, 1.25))
    assert recipe.lr == 0.5  # "lr" names recipe.lr, the only setting of that name; the last one wins
    assert (config.seed, config.threads, config.model["dropout"], config.data_options["size"]) == (7, None, 0.1, 48)
    assert config.init == "caffe:x.caffemodel"


@pytest.mark.parametrize("key, value, message", [
    ("recipe.lrr", "1", "did you mean recipe.lr"),
    ("seeds", "1", "did you mean seed"),
    ("recipe.steps", "1.5", "recipe.steps: expected int"),
    ("recipe.steps", "many", "recipe.steps: expected int"),
    ("recipe.hflip", "maybe", "expected bool"),
    ("recipe.scale_range", "[1, 2, 3]", "expects 2 values"),
    ("recipe.optimizer", "adam", "must be one of sgd, adamw"),
    ("recipe.lr", "-1", "recipe.lr must be > 0"),
    ("recipe", "{}", "unknown setting"),
])  # fmt: skip
def test_bad_settings_are_one_clear_line(key, value, message):
    with pytest.raises(ValueError, match=message):
        build_config("modern", settings=[(key, value)])


def test_layers_apply_in_order_recipe_file_flags_set(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("seed: 5\nmodel:\n  width: 0.5\nrecipe:\n  lr: 0.02\n  steps: 9\n")
    config = build_config("camvid", str(path), [("recipe.steps", 11)])
    assert (config.seed, config.model["width"]) == (5, 0.5)  # file over the recipe
    assert config.model["name"] == "fcn8s_mobilenet_v3_large"  # the recipe's, untouched by the file
    assert (config.recipe.lr, config.recipe.steps, config.recipe.minutes) == (0.02, 11, 30)
    assert config.data_options == {"resize": [180, 240]}  # from the recipe, untouched
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = capsys.readouterr().out
    assert "camvid" in shown and "paper" in shown and "[recipe.lr]" in shown


def test_clock_schedule_follows_the_training_seconds(tmp_path):
    config = build_config("demo", settings=TINY + [("recipe.minutes", 10), ("recipe.warmup_fraction", 0.0)])
    run = build_run(config, tmp_path, DistContext())
    base = [group["initial_lr"] for group in run.optimizer.param_groups]
    for spent, factor in ((0.0, 1.0), (300.0, 0.5**0.9), (599.99, (1 / CLOCK_RESOLUTION) ** 0.9)):
        run.train_seconds = spent
        _apply_lr(run)
        got = [group["lr"] for group in run.optimizer.param_groups]
        assert got == pytest.approx([b * factor for b in base], rel=1e-3), spent


def test_a_run_to_the_clock_validates_evenly_and_resumes_the_clock(tmp_path):
    out = tmp_path / "run"
    result = train(build_config("demo", settings=TINY + [("recipe.minutes", 0.05), ("recipe.evals", 3)]), out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in records if "val" in r]
    assert 3 <= len(vals) <= 4 and result.step == records[-1]["step"]  # 3 moments, and the end if it is not one
    assert records[-1]["train_seconds"] >= 3.0
    first = vals[0]["train_seconds"]
    assert 1.0 <= first < 2.0 + 1.0  # the first moment is a third of the 3 s budget (plus one step)
    assert main(["train", "--resume", str(out), "--minutes", "0.08"]) == 0
    assert load_run_config(out).recipe.minutes == 0.08
    later = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert later[-1]["train_seconds"] >= 4.8 and later[-1]["step"] > result.step


def test_steps_alone_mean_steps_even_over_a_clock_recipe():
    from fcnseg.cli import build_parser
    from fcnseg.commands.train import settings_from_args

    def length(*flags):
        config = build_config(
            "cpu", settings=settings_from_args(build_parser().parse_args(["train", "--out", "x", *flags]))
        )
        return config.recipe.steps, config.recipe.minutes

    assert length() == (20_000, 10)  # the recipe's clock
    assert length("--steps", "3") == (3, None)  # the user's 3 steps, not the recipe's 10 minutes
    assert length("--set", "recipe.steps=3") == (3, None)
    assert length("--steps", "3", "--minutes", "2") == (3, 2)  # both given: the clock, as asked


def test_a_resume_with_nothing_left_to_train_is_one_line_and_keeps_run_json(tmp_path, capsys, caplog):
    import logging

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--recipe",
                "demo",
                "--out",
                str(out),
                "--steps",
                "2",
                "--width",
                "0.0625",
                "--set",
                "threads=1",
                "--data-option",
                "size=32",
                "--data-option",
                "num_images=4",
                "--set",
                "val_data_options.num_images=2",
                "--no-progress",
                "--overlays",
                "0",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    recorded = (out / "run.json").read_text()
    capsys.readouterr()
    for extra in ([], ["--steps", "1"], ["--minutes", "1e-6"]):
        assert main(["train", "--resume", str(out), *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert (
            "nothing to train" in err and str(out) in err and "--steps N (over 2)" in err and len(err.splitlines()) == 1
        )
        assert (out / "run.json").read_text() == recorded  # the refused length is not recorded
    with caplog.at_level(logging.INFO, logger="fcnseg.train"):
        assert main(["train", "--resume", str(out), "--steps", "3"]) == 0
    assert load_run_config(out).recipe.steps == 3
    changed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("changed on resume")]
    assert changed == ["changed on resume: recipe.steps=3 (schedule recomputed for the new length)"]  # not minutes=None
    train(None, out, resume=True, changes=[("steps", 4)])  # a short key names recipe.steps here too
    assert load_run_config(out).recipe.steps == 4


def test_out_onto_a_run_refuses_without_overwrite_and_resume_cannot_change_numerics(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--recipe",
        "demo",
        "--out",
        str(out),
        "--steps",
        "1",
        "--width",
        "0.0625",
        "--set",
        "threads=1",
        "--data-option",
        "size=32",
        "--data-option",
        "num_images=4",
        "--set",
        "val_data_options.num_images=2",
        "--no-progress",
        "--overlays",
        "0",
        "--batch-size",
        "2",
    ]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert main(["train", "--resume", str(out), "--lr", "0.1"]) == 2
    assert "recipe.lr cannot change" in capsys.readouterr().err


def test_a_failed_start_leaves_no_run_folder(tmp_path, capsys):
    out = tmp_path / "new"
    assert (
        main(["train", "--out", str(out), "--data", "folder", "--root", str(tmp_path / "missing"), "--width", "0.0625"])
        == 2
    )
    assert "fcnseg train: error:" in capsys.readouterr().err
    assert not out.exists()


def test_old_run_files_are_read(tmp_path):
    from fcnseg.engine.config import TrainConfig

    old = {
        "model": "fcn16s",
        "width": 0.25,
        "channels_last": True,
        "recipe": {"name": "modern", "loss": "sum", "model_options": {"dropout": 0.0}},
    }
    config = TrainConfig.from_dict(old)
    assert config.model == {"name": "fcn16s", "width": 0.25, "dropout": 0.0} and config.recipe.reduction == "sum"


def test_loss_and_class_weighting_are_settings(tmp_path):
    from fcnseg.data import class_statistics
    from fcnseg.engine.loss import FocalLoss

    settings = TINY + [
        ("recipe.loss", "focal"),
        ("recipe.loss_options.gamma", "1.5"),
        ("class_weights", "effective-number"),
    ]
    run = build_run(build_config("demo", settings=settings), tmp_path, DistContext())
    assert isinstance(run.loss, FocalLoss) and run.loss.gamma == 1.5
    counts = class_statistics(run.train_set, 7).pixel_counts.double()
    beta = 1 - 1 / counts[counts > 0].median()  # the default: the median count of the classes present
    expected = torch.where(counts > 0, (1 - beta) / (1 - beta**counts), torch.zeros_like(counts))
    expected = expected / expected.sum() * (counts > 0).sum()
    torch.testing.assert_close(run.loss.weight.double(), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="takes no option"):
        build_run(
            build_config("demo", settings=TINY + [("recipe.loss", "ohem"), ("recipe.loss_options.gamma", 2)]),
            tmp_path,
            DistContext(),
        )


def test_without_a_recipe_a_cpu_trains_the_light_net_to_a_clock_and_says_so(caplog):
    import logging

    from fcnseg.commands import train as command

    with caplog.at_level(logging.INFO, logger="fcnseg.train"):
        name = command.default_recipe([("device", "cpu")])
    assert name == "cpu" and "no GPU" in caplog.text and "10 minutes" in caplog.text
    config = build_config(name)
    # the model benchmarks/choose_recipe.py measured best on a CPU budget, bf16 where the CPU computes it
    assert config.model["name"] == "fcn8s_mobilenet_v3_large" and config.recipe.minutes == 10 and config.cpu_bf16
    assert "MobileNetV3" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fcnseg.train"):
        command.default_recipe([("device", "cpu"), ("recipe.steps", 3), ("recipe.minutes", None)])
    assert "10 minutes" not in caplog.text and "the length you gave" in caplog.text  # not a length it will not train


def test_a_run_without_validation_saves_its_final_weights_as_best(tmp_path):
    out = tmp_path / "run"
    result = train(build_config("demo", settings=TINY + [("val_split", "none"), ("recipe.steps", 2)]), out)
    assert result.last_metrics == {} and (out / "best.safetensors").is_file() and (out / "last.safetensors").is_file()
    assert not any("val" in json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())
    assert json.loads((out / "run.json").read_text())["splits"]["val"] is None


def _binary_folder(root, rgb: bool = False):
    import numpy as np
    from PIL import Image

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(6):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / "images" / f"{index}.png")
        mask = np.zeros((24, 24), np.uint8)
        mask[4:12, 4:12] = 255
        picture = Image.fromarray(np.stack([mask, mask * 0, mask * 0], -1) if rgb else mask)
        picture.save(root / "masks" / f"{index}.png")
    (root / "classes.txt").write_text("background\nthing\n")


def test_the_data_check_at_the_start_warns_or_stops(tmp_path, caplog, capsys):
    import logging

    _binary_folder(tmp_path / "binary")
    settings = [
        ("model.width", 0.0625),
        ("threads", 1),
        ("progress", False),
        ("recipe.steps", 1),
        ("recipe.batch_size", 2),
        ("data", "folder"),
        ("root", str(tmp_path / "binary")),
        ("recipe.crop_size", None),
    ]
    with pytest.raises(DatasetError, match="no trainable foreground.*binary=true"):  # 0/255 masks: refused (issue 26)
        train(build_config("cpu", settings=settings + [("recipe.minutes", None)]), tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="fcnseg.train"):
        train(
            build_config("cpu", settings=settings + [("recipe.minutes", None), ("data_options.binary", True)]),
            tmp_path / "run",
        )
    assert "binary=true" not in caplog.text  # read as 0 -> background, 255 -> thing: nothing to warn about
    record = json.loads((tmp_path / "run" / "run.json").read_text())["splits"]["train"]
    assert record is not None and "seed" in json.dumps(record)  # the automatic split is recorded
    _binary_folder(tmp_path / "rgb", rgb=True)
    code = main(
        [
            "train",
            "--out",
            str(tmp_path / "rgbrun"),
            "--data",
            "folder",
            "--root",
            str(tmp_path / "rgb"),
            "--width",
            "0.0625",
            "--steps",
            "1",
            "--set",
            "recipe.minutes=none",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "colour" in err.lower() and not (tmp_path / "rgbrun").exists()


def test_the_paper_recipe_from_scratch_is_warned_about(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="fcnseg.train"):
        build_run(build_config("paper", settings=TINY), tmp_path, DistContext())
    assert "assume ImageNet" in caplog.text


def test_progress_in_a_log_file_is_plain_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FCNSEG_PROGRESS_SECONDS", "0")  # a line at every update
    train(build_config("demo", settings=TINY + [("recipe.steps", 2), ("progress", True)]), tmp_path / "run")
    err = capsys.readouterr().err
    assert "train: 1/2 step" in err and "\r" not in err


def test_the_camvid_recipe_is_the_thin_class_combination_and_cpu_keeps_cross_entropy():
    camvid, cpu = build_config("camvid"), build_config("cpu")
    assert (camvid.recipe.loss, camvid.recipe.loss_options, camvid.class_weights) == (
        "focal",
        {"gamma": 2},
        "effective-number",
    )
    assert (cpu.recipe.loss, cpu.class_weights) == ("ce", None)
    assert camvid.model == cpu.model and camvid.cpu_bf16 and cpu.cpu_bf16


def test_another_loss_than_the_recipes_starts_without_its_options():
    # camvid trains focal loss with gamma 2; --loss ce must not hand gamma to cross-entropy
    assert build_config("camvid").recipe.loss_options == {"gamma": 2}
    plain = build_config("camvid", settings=[("recipe.loss", "ce"), ("class_weights", None)])
    assert (plain.recipe.loss, plain.recipe.loss_options, plain.class_weights) == ("ce", {}, None)
    kept = build_config("camvid", settings=[("recipe.loss", "focal")])  # the same loss named again keeps them
    assert kept.recipe.loss_options == {"gamma": 2}
    given = build_config("camvid", settings=[("recipe.loss", "focal"), ("recipe.loss_options.gamma", 3)])
    assert given.recipe.loss_options == {"gamma": 3}
