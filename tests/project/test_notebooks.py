"""Every notebook in notebooks/ runs top to bottom.

Notebooks run with the notebooks folder as working directory (as Jupyter opens them), so
repository paths are relative to it (``../data``). They write outputs under
``$CAUSALREC_OUT_DIR`` (default ``../out``), which this test points at a temporary folder.
"""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("CAUSALREC_OUT_DIR", str(tmp_path))  # inherited by the kernel
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    errors = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.outputs if output.get("output_type") == "error"]
    assert not errors
    assert any(cell.cell_type == "code" and cell.outputs for cell in notebook.cells)
