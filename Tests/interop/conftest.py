import os, subprocess, sys
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "Fixtures")
sys.path.insert(0, FIX)
WTOOL = os.environ.get("WTOOL", os.path.join(ROOT, ".build", "debug", "wtool"))


def run(*args, check=True):
    """Runs wtool; returns (status, stdout, stderr)."""
    r = subprocess.run([WTOOL, *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"wtool {' '.join(map(str, args))} -> {r.returncode}: {r.stderr}")
    return r.returncode, r.stdout, r.stderr


@pytest.fixture(scope="session", autouse=True)
def wtool_binary():
    assert os.access(WTOOL, os.X_OK), f"no wtool binary at {WTOOL}: run 'make build' first"
