"""Reports: the self-contained HTML and the PNG overview, with and without labels or time."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pandas as pd
import pytest

from stream_ae.evaluation import EpisodeDelay
from stream_ae.report import (
    MAX_GROUP_PLOTS,
    MAX_POINTS,
    BadRow,
    DriftMark,
    ReportData,
    TopAlert,
    _thin,
    _top_groups,
    render_html,
    write_reports,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _frame(n: int = 400, groups: int = 2, with_time: bool = True, labels: bool = True
           ) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    score = rng.lognormal(size=n)
    label = np.zeros(n, np.int64) if labels else np.full(n, -1)
    if labels:
        label[200:210] = 1
        score[200:210] += 20
    return pd.DataFrame({
        "group": [f"g{i % groups}" for i in range(n)],
        "time": 1.7e9 + np.arange(n) if with_time else np.full(n, np.nan),
        "score": score, "threshold": np.full(n, 8.0), "is_anomaly": score > 8.0,
        "warmup": np.arange(n) < 50, "label": label,
    })


def _data(frame: pd.DataFrame, **kw: object) -> ReportData:
    top = [TopAlert("g0", 1.7e9 + 200, 200, 25.0, 8.0, (("a", 3.0), ("b", 1.0)))]
    drift = [DriftMark("g1", 1.7e9 + 300, 300, "drift", "adwin", "lr_boost")]
    return ReportData(title="T <1>", frame=frame, feature_names=("a", "b"), top_alerts=top,
                      drift=drift, **kw)  # type: ignore[arg-type]


def _images(html: str) -> list[str]:
    return re.findall(r'alt="(\w+)" src="data:image/png;base64,', html)


def test_full_report_has_every_section_inlined(tmp_path: pathlib.Path) -> None:
    data = _data(_frame(), metrics={"precision": 0.5, "roc_auc": float("nan")},
                 delays=[EpisodeDelay("g0", 100, 105, 1.7e9, True, 1, 2.0)],
                 bad_rows=[BadRow(7, "bad_value", "x is <b>not</b> a number")], bad_row_count=3,
                 facts={"records": 400})
    png, html_path = tmp_path / "r.png", tmp_path / "r.html"
    write_reports(data, png, html_path)
    html = html_path.read_text()
    assert png.read_bytes().startswith(PNG)
    assert _images(html) == ["scores", "timeline", "histogram", "contributions"]
    for section in ("Summary", "Detection quality", "Alert timeline", "Drift and regime-change",
                    "Score histogram", "Top alerts", "Detection delay", "Bad rows (3, first 1"):
        assert section in html
    assert "<title>T &lt;1&gt;</title>" in html
    assert "&lt;b&gt;not&lt;/b&gt;" in html and "<b>not</b>" not in html
    assert "<td>n/a</td>" in html  # NaN metric
    assert "a (3)" in html  # top feature of the top alert
    assert "http" not in html.replace("http-equiv", "")  # nothing fetched from elsewhere


def test_without_labels_or_time_the_report_still_renders() -> None:
    html = render_html(ReportData(title="t", frame=_frame(with_time=False, labels=False),
                                  feature_names=("a",)))
    assert "Detection quality" not in html and "Top alerts" not in html
    assert _images(html) == ["scores", "timeline", "histogram"]


def test_only_warmup_rows_render() -> None:
    frame = _frame(n=40)
    html = render_html(ReportData(title="t", frame=frame, feature_names=("a",)))
    assert "Score histogram" in html


def test_many_groups_are_limited_to_those_with_most_alerts() -> None:
    frame = _frame(n=2000, groups=30, labels=False)
    frame.loc[frame["group"] == "g29", "is_anomaly"] = True
    groups = _top_groups(ReportData(title="t", frame=frame, feature_names=("a",)))
    assert len(groups) == MAX_GROUP_PLOTS and groups[0] == "g29"


def test_long_series_are_thinned_for_line_plots() -> None:
    frame = _frame(n=3 * MAX_POINTS + 7, groups=1, labels=False)
    thin = _thin(frame)
    assert len(thin) <= MAX_POINTS and thin.index[0] == 0
    assert len(_thin(frame.iloc[:100])) == 100


_PEAK_RSS = """
import resource, sys, pathlib
import numpy as np
from stream_ae.backtest.collect import ResultCollector, evaluate_frame
from stream_ae.report import write_reports
n, keys, width, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = np.random.default_rng(0)
# one string object per row, as a reader makes them: their size is the input's own
groups = [("k%d-" % (i % keys)).ljust(width, "x") for i in range(n)]
score = rng.lognormal(size=n)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
c = ResultCollector(("a",))
for s in range(0, n, 4096):
    e = min(n, s + 4096)
    c.add_rows(groups[s:e], 1.7e9 + np.arange(s, e, dtype=float), score[s:e],
               np.full(e - s, 4.0), score[s:e] > 4.0, np.zeros(e - s, bool),
               (score[s:e] > 6.0).astype(np.int64), np.arange(s, e))
frame = c.frame()
metrics, delays = evaluate_frame(frame)
data = c.report_data("t", {}, frame, metrics, delays)
write_reports(data, pathlib.Path(out) / "r.png", pathlib.Path(out) / "r.html")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024, (pathlib.Path(out) / "r.html").stat().st_size // 1024)
"""


@pytest.mark.parametrize(("rows", "keys", "width"), [(50_000, 10_000, 8), (2_000, 5, 100_000)])
def test_many_or_huge_keys_keep_the_report_bounded(rows: int, keys: int, width: int,
                                                   tmp_path: pathlib.Path) -> None:
    """Rows hold group codes, not strings; panels and timeline rows only for the groups with
    most alerts, names cut short, the other groups summarised: peak memory beyond the input
    and the page stay small (2,000 rows of 100,000-character keys: 200 MB of input text,
    which one pandas text column copy would double)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(rows), str(keys), str(width),
                          str(tmp_path)], capture_output=True, text=True, check=True)
    grew_mb, html_kb = map(int, out.stdout.split())
    assert grew_mb < 150, out.stdout
    assert html_kb < 3_000, out.stdout
    html = (tmp_path / "r.html").read_text()
    assert "x" * 100 not in html
    if keys > 200:
        assert "more groups not shown" in html
