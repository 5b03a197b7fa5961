"""The EM benchmark script runs end to end on tiny sizes and writes a well-formed report.

Nothing here measures speed: benchmarks are never timed tests.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_em.py"
NUMBER = re.compile(r"^-?\d+(\.\d+)?(e[-+]?\d+)?x?$")


def _table(text, heading):
    """Rows (lists of cells) of the first markdown table after ``heading``."""
    lines = text.split(heading, 1)[1].splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    rows = []
    for ln in lines[first:]:
        if not ln.startswith("|"):
            break
        # a pipe inside a cell is escaped as \|
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln.strip()[1:-1])]
        if all(set(c) <= {"-"} for c in cells):
            continue
        rows.append(cells)
    return rows


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    md, js = out / "report.md", out / "raw.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(md), "--json", str(js)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return md.read_text(), json.loads(js.read_text()), proc.stdout


def test_report_is_written_and_printed(quick_run):
    text, _, stdout = quick_run
    assert text.startswith("# daskem EM benchmark")
    assert text.strip() == stdout.strip()
    for heading in ("## Matrix-multiply peak", "## Targets", "## Headline case",
                    "## Chunk count", "## Grid"):
        assert heading in text


def test_grid_table_has_a_numeric_row_per_cell(quick_run):
    text, raw, _ = quick_run
    rows = _table(text, "## Grid")
    header, body = rows[0], rows[1:]
    assert header[:9] == ["cov", "d", "K", "dtype", "N", "chunks", "sklearn s", "daskem s", "sklearn/daskem"]
    # --quick: 4 covariance types x 2 dtypes, one (d, K)
    assert len(body) == 8 == len(raw["grid"])
    assert {r[0] for r in body} == {"full", "tied", "diag", "spherical"}
    assert {r[3] for r in body} == {"float64", "float32"}
    for r in body:
        assert len(r) == len(header)
        for cell in (r[6], r[7], r[8]):
            assert NUMBER.match(cell), (cell, r)
        assert float(r[6]) > 0 and float(r[7]) > 0
    for g in raw["grid"]:
        assert g["sklearn_s"] > 0 and g["daskem_s"] > 0
        # same data and starting parameters: the fits agree
        assert g["ll_rel_diff"] < 1e-4


def test_targets_table_lists_every_target_with_a_verdict(quick_run):
    text, raw, _ = quick_run
    rows = _table(text, "## Targets")
    assert rows[0] == ["target", "wanted", "measured", "verdict"]
    body = rows[1:]
    names = " ".join(r[0] for r in body)
    for word in ("scikit-learn / daskem", "Spark", "float32 speed-up", "log-likelihood",
                 "default initialisation (the coreset)", "chunks", "10x rows"):
        assert word in names, word
    for r in body:
        assert r[3] in ("**met**", "**not met**", "n/a"), r
    head = raw["headline"]
    assert head["daskem_s"] > 0 and head["sklearn_s"] > 0 and head["daskem32_s"] > 0
    assert head["ll_rel"] < 1e-4
    assert raw["chunks"] and all(c["few_s"] > 0 and c["many_s"] > 0 for c in raw["chunks"])
    assert raw["peaks"]["float64"] > 0 and raw["peaks"]["float32"] > 0
