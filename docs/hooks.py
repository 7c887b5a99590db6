"""MkDocs hooks of the documentation site (``mkdocs.yml``: ``hooks``).

* The benchmark pictures stay where the benchmarks write them (``benchmarks/results/*.png``) and are added to
  the site at ``benchmarks/results/``, next to the pages that show them, instead of being copied into ``docs/``.
* The models-table plot is drawn at every build from the figures in ``benchmarks/results/``
  (``benchmarks/plot_models_table.py``), so it cannot drift from them.
* Docstrings are written with Sphinx roles (``:class:`Predictor```); mkdocstrings renders Markdown, so the role
  names are dropped from the HTML and the name stays as code.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
#: The benchmark pictures the pages show, by their path in the site.
BENCHMARK_PICTURES = {
    f"benchmarks/results/{name}": ROOT / "benchmarks" / "results" / name
    for name in ("learn_camvid_cpu.png", "learn_camvid_cpu_bf16.png", "learn_camvid_cpu_mfw.png")
}
MODELS_TABLE_PICTURE = "benchmarks/models_table.png"
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):(?=<code>)")


def _plot_module() -> ModuleType:
    path = ROOT / "benchmarks" / "plot_models_table.py"
    spec = importlib.util.spec_from_file_location("plot_models_table", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def models_table_png() -> bytes:
    """The models-table plot as PNG bytes, drawn from ``benchmarks/results/``."""
    plotter = _plot_module()
    with tempfile.TemporaryDirectory() as folder:
        out: Path = plotter.plot(plotter.read_rows(), Path(folder) / "models_table.png")
        return out.read_bytes()


def on_files(files: Files, config: Any) -> Files:
    """Add the benchmark pictures and the models-table plot to the site's files."""
    for uri, path in BENCHMARK_PICTURES.items():
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    files.append(File.generated(config, MODELS_TABLE_PICTURE, content=models_table_png()))
    return files


def on_page_content(html: str, **_: Any) -> str:
    """Drop Sphinx role names before inline code (``:class:`X``` renders as ``X``)."""
    return _ROLE.sub("", html)
