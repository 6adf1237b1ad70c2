"""Property: the vectorised feature stage equals a naive per-record reference, for any split."""

from __future__ import annotations

import itertools
from collections import OrderedDict

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_ae.windowing import FeatureStage

D = 2


def reference(keys, values, lags, diffs, missing, max_keys):  # type: ignore[no-untyped-def]
    """One record at a time, straight from the definition."""
    hist: OrderedDict[str, list[np.ndarray]] = OrderedDict()  # most recent first
    out, rejected = [], []
    for i, (k, v) in enumerate(zip(keys, values, strict=True)):
        finite = np.isfinite(v)
        h = hist.get(k)
        if missing == "reject" and not finite.all():
            rejected.append((i, "non_finite"))
            continue
        if missing == "ffill" and not finite.all():
            if h is None:
                rejected.append((i, "no_previous_value"))
                continue
            v = np.where(finite, v, h[0])
        if h is None:
            h = [v] * max(1, lags)
        feats = [v] + [h[j - 1] for j in range(1, lags + 1)]
        if diffs:
            feats.append(v - h[0])
        out.append(np.concatenate(feats))
        hist[k] = ([v, *h])[: max(1, lags)]
        hist.move_to_end(k)
        while len(hist) > max_keys:
            hist.popitem(last=False)
    return out, rejected


cell = st.sampled_from([0.0, 1.0, -2.5, 3.25, float("nan"), float("inf")])
rows = st.lists(st.tuples(st.sampled_from("abcd"), st.lists(cell, min_size=D, max_size=D)),
                min_size=1, max_size=40)


@settings(max_examples=400, deadline=None)
@given(
    data=rows,
    lags=st.integers(min_value=0, max_value=3),
    diffs=st.booleans(),
    missing=st.sampled_from(["reject", "ffill"]),
    max_keys=st.integers(min_value=1, max_value=5),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_matches_reference_for_any_split(data, lags, diffs, missing, max_keys, cuts):  # type: ignore[no-untyped-def]
    keys = [k for k, _ in data]
    values = np.asarray([v for _, v in data], dtype=np.float32)
    want, want_rej = reference(keys, values, lags, diffs, missing, max_keys)
    fs = FeatureStage(D, lags=lags, diffs=diffs, missing=missing, max_keys=max_keys)
    bounds = sorted({0, len(keys), *[c for c in cuts if c < len(keys)]})
    got, got_rej = [], []
    for a, b in itertools.pairwise(bounds):
        x, _rows_ok, rej = fs.transform(keys[a:b], values[a:b])
        got += list(x)
        got_rej += [(a + r, why) for r, why in rej]
    assert got_rej == want_rej
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w.astype(np.float32))
