"""The notebooks run top to bottom against a sweep directory (the smoke sweep) through the report code."""
import nbclient
import nbformat
import pytest
from helpers.train import ROOT


def execute(name: str, sweep, monkeypatch) -> list[dict]:
    """Run notebooks/NAME.ipynb as Jupyter would (from notebooks/) on `sweep`; the outputs of its code cells."""
    monkeypatch.setenv("DEEPRES_SWEEP_DIR", str(sweep))
    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def kinds(outputs: list[dict]) -> list[str]:
    return [kind for output in outputs for kind in output.get("data", {})]


@pytest.mark.parametrize("name", ["fig6_table6", "fig7"])
def test_notebook_runs_on_a_sweep_and_shows_its_figures(name, smoke_sweep, monkeypatch):
    outputs = execute(name, smoke_sweep, monkeypatch)
    assert not [o for o in outputs if o.output_type == "error"]
    assert f"9 runs in {smoke_sweep}" in "".join(o.get("text", "") for o in outputs)
    assert kinds(outputs).count("image/png") == {"fig6_table6": 2, "fig7": 1}[name]
    text = "".join(o["data"].get("text/markdown", "") + o["data"].get("text/plain", "") for o in outputs if "data" in o)
    if name == "fig6_table6":
        assert "### Table 6" in text and "| ResNet-110 | 1,727,962 (1.73M) |" in text
    else:
        assert all(net in text for net in ("plain-20", "plain-56", "ResNet-20", "ResNet-56", "ResNet-110"))
        assert "stages.0.0.bn1" in text
