"""The tutorial notebooks run top to bottom (nbclient, small settings) and are stored without outputs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_population_fit_report.ipynb", "02_forecast_dose_recommendation.ipynb", "03_neutrophil_what_if.ipynb"]


def test_notebooks_are_stored_without_outputs():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        book = json.loads((NOTEBOOKS / name).read_text())
        code = [c for c in book["cells"] if c["cell_type"] == "code"]
        assert code and all(not c["outputs"] and c["execution_count"] is None for c in code), name
        assert book["cells"][0]["cell_type"] == "markdown"  # a tutorial opens with its purpose


def _execute(name: str, tmp_path: Path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat (pip install -e '.[test]')")
    nbclient = pytest.importorskip("nbclient", reason="the notebook tests need nbclient (pip install -e '.[test]')")
    pytest.importorskip("ipykernel", reason="the notebook tests need ipykernel (pip install -e '.[test]')")
    monkeypatch.setenv("PKPD_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"))
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    start = time.perf_counter()
    client = nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    elapsed = time.perf_counter() - start
    print(f"{name}: {elapsed:.0f} s")
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    return book, elapsed


def _text(book) -> str:
    parts = []
    for c in book.cells:
        for o in c.get("outputs", []):
            parts.append(o.get("text", ""))
            parts.extend(str(v) for k, v in o.get("data", {}).items() if k == "text/plain")
    return "\n".join(parts)


# reason: a population fit (SVI, 400 steps) and its report: 1-2 min on a 2-core CPU, longer under load
@pytest.mark.slow
def test_notebook_population_fit_report(tmp_path, monkeypatch):
    book, _ = _execute(NAMES[0], tmp_path, monkeypatch)
    report = tmp_path / "out" / "population-report"
    assert (report / "index.html").is_file() and (report / "vpc-anc.png").is_file()
    assert 'id="parameters"' in (report / "index.html").read_text()
    text = _text(book)
    assert "NPDE mean" in text and "eta-shrinkage" in text


@pytest.mark.slow  # reason: Bayesian forecasts of four candidate doses: about 1 min on a CPU
def test_notebook_forecast_dose_recommendation(tmp_path, monkeypatch):
    book, _ = _execute(NAMES[1], tmp_path, monkeypatch)
    report = tmp_path / "out" / "forecast-report"
    assert (report / "index.html").is_file() and list(report.glob("fan-anc-*.png"))
    assert "observed cycle-2 nadir" in _text(book)


@pytest.mark.slow  # reason: 3 x 100 virtual patients over 8 weeks: under a minute on a CPU
def test_notebook_neutrophil_what_if(tmp_path, monkeypatch):
    book, _ = _execute(NAMES[2], tmp_path, monkeypatch)
    outputs = [o for c in book.cells for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the ANC figure was drawn
    assert "P(grade 4)" in _text(book)
