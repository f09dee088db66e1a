"""The benchmark harness runs end to end (quick suite, tiny preset) and reports what it claims."""

import json

from benchmarks.run import main
from benchmarks.timing import measure


def test_quick_suite_writes_tables(tmp_path):
    main(["--suite", "quick", "--out", str(tmp_path), "--only", "scaling", "efficiency"])
    data = json.loads((tmp_path / "quick.json").read_text())
    assert [r["side"] for r in data["scaling"]["image_side"]] == [64, 128]
    assert data["scaling"]["packed"]["speedup"] > 0
    assert 0 < data["efficiency"][0]["utilisation"] < 1
    md = (tmp_path / "quick.md").read_text()
    assert "| video frames |" in md and "Packed batch of 4 images" in md


def test_measure_reports_median_and_spread():
    import torch

    calls = []
    m = measure(lambda: calls.append(1), torch.device("cpu"), repeats=4)
    assert len(calls) == 5 and m.runs == 4 and m.min_s <= m.median_s <= m.max_s
