"""The sweep summary's columns: summary.csv's header the same for every sweep (the mAPs added when a job has them),
the tables people read without the error columns of a sweep of detectors only."""
import json

from deepres.runs.summary import write_summary


def sweep(tmp_path, *results: dict):
    for k, result in enumerate(results):
        (tmp_path / f"job{k}").mkdir()
        (tmp_path / f"job{k}" / "status.json").write_text(json.dumps({"status": "completed", "steps": 4, **result}))
    write_summary(tmp_path)
    csv_header = (tmp_path / "summary.csv").read_text().splitlines()[0].split(",")
    md_header = [c.strip() for c in (tmp_path / "summary.md").read_text().splitlines()[0].strip("|").split("|")]
    return csv_header, md_header


def test_a_sweep_of_detectors_shows_its_maps_and_no_empty_error_columns(tmp_path):
    csv_header, md_header = sweep(tmp_path, {"test/mAP50": 70.1}, {"test/mAP50": 73.2, "test/mAP": 40.0})
    assert csv_header[csv_header.index("test/error") + 1:][:2] == ["test/mAP50", "test/mAP"]
    assert "test/mAP50" in md_header and "test/mAP" in md_header
    assert not {"train/error", "test/error", "val/error"} & set(md_header)


def test_a_sweep_of_classifiers_keeps_its_error_columns_and_has_no_map(tmp_path):
    csv_header, md_header = sweep(tmp_path, {"train/error": 1.5, "test/error": 8.8})
    assert csv_header == md_header and "test/error" in md_header and "test/mAP50" not in md_header


def test_a_mixed_sweep_shows_both(tmp_path):
    _, md_header = sweep(tmp_path, {"test/error": 8.8}, {"test/mAP50": 73.2})
    assert md_header.index("test/error") + 1 == md_header.index("test/mAP50")
