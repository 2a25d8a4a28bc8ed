"""The frontier's phase diagram: its points, the 'not reached' markers and the bits line."""

import json

from listcopy.report.frontier import frontier_section, load_frontier


def test_phase_diagram_from_frontier_json(tmp_path):
    data = {"task": "copy", "seeds": 2, "need": 0.5, "threshold": 0.95, "d_max": 16,
            "points": [
                {"point": {"task.n_digits": 16}, "minimal_d_model": 5, "bits": 8.0,
                 "tried": {"1": 0.0, "4": 0.0, "8": 1.0, "6": 1.0, "5": 0.5}},
                {"point": {"task.n_digits": 100}, "minimal_d_model": None, "bits": 13.29,
                 "tried": {"16": 0.0}}]}
    (tmp_path / "frontier.json").write_text(json.dumps(data))
    loaded = load_frontier(tmp_path)
    section = frontier_section(loaded)
    fig = section.figures[0].figure
    found, missed, line = fig.data
    assert list(found.x) == [8.0] and list(found.y) == [5]
    assert list(missed.y) == [16]  # drawn at d_max
    assert list(line.x) == list(line.y)  # d_model = bits
    rows = section.tables[0].rows
    assert rows[0]["minimal d_model"] == 5 and rows[1]["minimal d_model"] == "> 16"
    assert rows[0]["tried (d_model: fraction of seeds)"].startswith("1: 0.00, 4: 0.00, 5: 0.50")
    assert load_frontier(tmp_path / "nowhere") is None
