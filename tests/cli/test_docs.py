"""The documentation site's sources agree with the code: every page is in the navigation, the API reference
names modules that exist (and every public module), includes and README links point at files, and the
models-table plot draws the benchmark figures. ``make docs`` builds the site itself (strictly) in CI."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _nav_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _api_modules() -> list[str]:
    return re.findall(r"^::: (\S+)\s*$", (DOCS / "api.md").read_text(encoding="utf-8"), flags=re.M)


def test_every_page_is_in_the_navigation_and_every_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = _nav_pages(config["nav"])
    pages = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
    assert sorted(nav) == pages
    assert len(nav) == len(set(nav))


def test_the_api_reference_names_modules_that_exist():
    modules = _api_modules()
    assert len(modules) == len(set(modules)) and "fcnseg" in modules
    for name in modules:
        importlib.import_module(name)  # optional extras are imported lazily: every module imports without them


def test_every_public_module_is_in_the_api_reference():
    """A new module or package fails here until docs/api.md names it (a package by name or module by module)."""
    package = ROOT / "fcnseg"
    internal = {"__init__", "__main__", "cli", "commands"}
    public = {f"fcnseg.{path.stem}" for path in package.glob("*.py")}
    public |= {f"fcnseg.{path.parent.name}" for path in package.glob("*/__init__.py")}
    public = {name for name in public if name.split(".")[1] not in internal}
    named = set(_api_modules())
    modules_of = {
        name: {f"{name}.{path.stem}" for path in (ROOT / name.replace(".", "/")).glob("[!_]*.py")}
        for name in public
        if (ROOT / name.replace(".", "/")).is_dir()
    }
    missing = sorted(name for name in public if name not in named and not modules_of.get(name, set()) <= named)
    assert not missing, f"docs/api.md has no '::: NAME' line for {missing} (or for each of their modules)"


def test_includes_and_readme_links_point_at_files():
    for page in DOCS.rglob("*.md"):
        for include in re.findall(r'^--8<-- "([^"]+)"', page.read_text(encoding="utf-8"), flags=re.M):
            assert (ROOT / include).is_file(), f"{page}: includes {include}, which does not exist"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = [link for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme) if "://" not in link]
    assert len(links) >= 10
    for link in links:
        assert (ROOT / link).is_file(), f"README.md links to {link}, which does not exist"


def _plotter():
    spec = importlib.util.spec_from_file_location("plot_models_table", ROOT / "benchmarks" / "plot_models_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_models_plot_draws_the_benchmark_figures(tmp_path):
    plotter = _plotter()
    rows = {row.label: row for row in plotter.read_rows()}
    # The figures the Benchmarks page quotes (time vs the seed FCN-8s; CamVid mean IU after 30 minutes, steps).
    expected = {
        "fcn8s (width 1)": (0.689, 0.195, 113),
        "fcn8s width 0.25": (0.048, 0.521, 1413),
        "fcn_alexnet": (0.098, 0.405, 844),
        "fcn8s_resnet18": (0.051, 0.564, 1522),
        "fcn8s_resnet50": (0.132, 0.516, 639),
        "fcn8s_mobilenet_v3_large": (0.017, 0.562, 2998),
    }
    assert {
        label: (row.time_vs_seed, round(row.camvid_mean_iu, 3), row.camvid_steps) for label, row in rows.items()
    } == expected
    assert rows["fcn8s_mobilenet_v3_large"].parameters == 3_102_530
    out = plotter.plot(list(rows.values()), tmp_path / "models.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_a_model_without_a_camvid_run_is_drawn_without_a_point(tmp_path):
    plotter = _plotter()
    camvid = tmp_path / "camvid"
    camvid.mkdir()
    (camvid / "fcn8s_resnet18.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 7, "val": {"mean_iu": 0.25}}\n')
    rows = {row.label: row for row in plotter.read_rows(camvid_dir=camvid)}
    assert (rows["fcn8s_resnet18"].camvid_mean_iu, rows["fcn8s_resnet18"].camvid_steps) == (0.25, 7)
    assert rows["fcn_alexnet"].camvid_mean_iu is None
    assert plotter.plot(list(rows.values()), tmp_path / "models.png").is_file()


def test_the_docs_hook_adds_the_pictures():
    pytest.importorskip("mkdocs")
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    assert all(path.is_file() for path in hooks.BENCHMARK_PICTURES.values())
    assert hooks.models_table_png()[:4] == b"\x89PNG"
    assert hooks.on_page_content("see :class:<code>Predictor</code>") == "see <code>Predictor</code>"
