"""The issue-7 benchmark script runs on tiny sizes and writes its tables (no timing asserted)."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_beyond.py"


def test_bench_beyond_quick_run_writes_both_tables(tmp_path):
    out = tmp_path / "beyond.md"
    r = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    grid = re.search(r"\| select_model \(shared passes\) \| 4 \| [\d.]+ \| [\d.]+ \| (\d+) \|", text)
    separate = re.search(r"\| separate fits \| 4 \| [\d.]+ \| [\d.]+ \| (\d+) \|", text)
    assert grid and separate
    assert int(grid.group(1)) < int(separate.group(1))
    assert len(re.findall(r"\| online EM \| 1 \(validation\) \+ [12] \| -?[\d.]+ \| [\d.e+-]+ \|", text)) == 2
