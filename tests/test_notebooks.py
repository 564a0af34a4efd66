"""The quick-start notebook runs top to bottom offline, as committed (without outputs).

It loads ``outputs/default/best`` when the main job has run, else trains a tiny stand-in
first (the offline towers are needed for that, as for the main job itself).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from msa_hf.pretrained_towers import offline_preset_available

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat (extra `dev`)")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient (extra `dev`)")
pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel (extra `dev`)")

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "notebooks" / "quickstart.ipynb"


def test_quickstart_is_committed_without_outputs() -> None:
    notebook = nbformat.read(QUICKSTART, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


def test_quickstart_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (REPO / "outputs" / "default" / "best" / "config.json").is_file() and not offline_preset_available(
        "msa-effnetlite0-minilm"
    ):
        pytest.skip("no outputs/default/best and no offline towers to train a stand-in (extra `offline-weights`)")
    monkeypatch.setenv("MSA_HF_CACHE", str(tmp_path / "cache"))  # the stand-in's corpus and feature cache
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's scratch folder (the stand-in's run, the index)
    notebook = nbformat.read(QUICKSTART, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(QUICKSTART.parent)}},  # where Jupyter would start it
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    pictures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(pictures) == 3  # the archive's first scenes, the search results, the heat map
    text = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "forward pass agrees: True" in text and "mR = " in text
