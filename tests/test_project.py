"""Project-level promises: README examples run, docs match the YAMLs, layering, packaging."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import pyvisa

from qnetlab import selfcheck
from qnetlab.sim_instruments import lab_spec, reference

ROOT = Path(__file__).resolve().parents[1]


def _readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


SCRIPTS = [b for b in _readme_blocks() if "def test_" not in b]
TESTS = [b for b in _readme_blocks() if "def test_" in b]


def test_readme_scripts_run_as_written_in_order(capsys, qnetlab_data_dir):
    """A newcomer runs the README's scripts one after the other, in one data directory."""
    lib = pyvisa.ResourceManager(lab_spec("link")).visalib
    lib.reset_state()
    try:
        outs = []
        for index, script in enumerate(SCRIPTS):
            exec(compile(script, f"README.md[script {index}]", "exec"), {})
            outs.append(capsys.readouterr().out)
            assert outs[-1].strip(), f"script {index} printed nothing"
    finally:
        lib.reset_state()
    assert any("F = " in out and "|S| = " in out for out in outs)


@pytest.mark.parametrize("index", range(len(TESTS)))
def test_readme_test_examples_pass_under_the_plugin(index, pytester):
    pytester.makepyfile(test_readme_example=TESTS[index])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=TESTS[index].count("def test_"))


def test_reference_pages_match_the_yamls():
    for name in reference.INSTRUMENTS:
        committed = (ROOT / "docs" / "instruments" / f"{name}.md").read_text()
        assert committed == reference.render(name), (
            f"docs/instruments/{name}.md is stale: run "
            "python -m qnetlab.sim_instruments.reference docs/instruments")


def test_selfcheck_passes_on_the_simulated_link(capsys):
    pyvisa.ResourceManager(lab_spec("link")).visalib.reset_state()
    assert selfcheck.main(["--lab", "link"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "alice physics" in out and "link ab" in out
    pyvisa.ResourceManager(lab_spec("link")).visalib.reset_state()


@pytest.mark.parametrize("layer", ["drivers", "sequences", "stations"])
def test_hardware_layers_never_import_the_simulation(layer):
    forbidden = ("qnetlab.sim_instruments", "pyvisa_qnetlab", "pyvisa_sim")
    for path in (ROOT / layer).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"


def test_import_contracts_hold():
    """ARCHITECTURE.md's layers, the simulator's isolation and no import cycles (lazy imports
    included), as import-linter contracts (pyproject.toml)."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "lint_imports.py")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_library_modules_leave_the_matplotlib_backend_alone():
    """Importing the modules that draw figures neither forces a backend nor loads pyplot."""
    code = ("import sys, matplotlib\n"
            "import qnetlab.sequences.calibration.testbed, qnetlab.sequences.entanglement.plots\n"
            "import qnetlab.report, qnetlab.cli\n"
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"} | {"MPLBACKEND": "svg"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["svg", "False"]


def test_no_time_sleep_outside_the_clock():
    for folder in ("qnetlab", "sequences", "drivers", "sim_instruments", "pyvisa_qnetlab"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "clock.py":
                continue
            text = path.read_text()
            assert not re.search(r"\btime\.sleep\(|from time import sleep", text), path


def test_wheel_installs_the_mapped_packages_with_their_yaml(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
         str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("qnetlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"qnetlab", "pyvisa_qnetlab"}
    for expected in ("qnetlab/drivers/__init__.py", "qnetlab/sequences/__init__.py",
                     "qnetlab/stations/__init__.py", "qnetlab/sim_instruments/qnu.yaml",
                     "qnetlab/sim_instruments/pump_laser.yaml",
                     "qnetlab/sim_instruments/lakeshore372.yaml",
                     "qnetlab/sim_instruments/triton.yaml",
                     "qnetlab/sim_instruments/labs/link.yaml",
                     "qnetlab/sim_instruments/labs/chain.yaml",
                     "qnetlab/sim_instruments/physics/world.py", "pyvisa_qnetlab/__init__.py"):
        assert expected in names, expected
