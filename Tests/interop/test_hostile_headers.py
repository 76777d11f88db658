"""Headers from strangers: bounded time and memory on pathological but valid-looking headers, and
names with control characters never reach the terminal raw."""
import json, os, resource, struct, subprocess, time
import pytest
from conftest import WTOOL


def write_header(path, header_bytes, data=b""):
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        f.write(data)


def timed(*args, limit_s=60):
    """Runs wtool under a hang guard (the test fails if it is still running after limit_s); returns
    (status, stderr, seconds, peak RSS of children in MiB). Speed itself is never asserted."""
    t = time.time()
    r = subprocess.run([WTOOL, *map(str, args)], capture_output=True, text=True, timeout=limit_s)
    return r.returncode, r.stderr, time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def test_huge_metadata_value_is_bounded(tmp_path):
    big = "x" * 99_000_000
    h = json.dumps({"__metadata__": {"format": "pt", "blob": big}, "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    write_header(tmp_path / "m.safetensors", h, b"\0" * 8)
    # bounded: it must finish within the hang guard (no speed is asserted; that is make bench's job)
    code, err, secs, rss = timed("inspect", tmp_path / "m.safetensors", limit_s=180)
    assert code == 0, err
    assert rss < 2048, rss


def test_header_over_the_limit_is_refused_without_reading_it(tmp_path):
    with open(tmp_path / "h.safetensors", "wb") as f:
        f.write(struct.pack("<Q", 100_000_001))
        f.write(b"{" + b" " * 100)
    code, err, secs, _ = timed("inspect", tmp_path / "h.safetensors")
    assert code == 1 and "header" in err, err


def test_deep_nesting_is_refused(tmp_path):
    h = ('{"__metadata__": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()
    write_header(tmp_path / "d.safetensors", h + b" " * (-len(h) % 8))
    code, err, secs, _ = timed("inspect", tmp_path / "d.safetensors")
    assert code == 1 and "nesting too deep" in err, err
    assert len(err.strip().splitlines()) == 1


def test_a_million_tensors_in_one_header(tmp_path):
    n = 1_000_000
    parts = ['"t%d": {"dtype": "U8", "shape": [1], "data_offsets": [%d, %d]}' % (i, i, i + 1) for i in range(n)]
    h = ("{" + ", ".join(parts) + "}").encode()
    write_header(tmp_path / "many.safetensors", h, b"\1" * n)
    code, err, secs, rss = timed("inspect", tmp_path / "many.safetensors", limit_s=300)
    assert code == 0, err
    assert rss < 4096, rss


def test_control_characters_in_names_are_escaped(tmp_path):
    """A tensor name carrying an escape sequence and a newline: the one-line error shows it
    escaped, so it can neither rewrite the terminal nor split the line."""
    name = "evil\x1b[2J\nname"
    bad = json.dumps({name: {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
    write_header(tmp_path / "c.safetensors", bad, b"\0" * 8)     # 3 floats in 8 bytes: an error naming the tensor
    h = json.dumps({name: {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    code, err, _, _ = timed("inspect", tmp_path / "c.safetensors")
    assert code == 1
    assert "\x1b" not in err and err.count("\n") == 1, repr(err)
    assert "\\u{1B}" in err and "\\u{A}" in err, repr(err)
    # and the listing of a valid file escapes it too
    write_header(tmp_path / "ok.safetensors", h + b" " * (-len(h) % 8), b"\0" * 8)
    r = subprocess.run([WTOOL, "inspect", tmp_path / "ok.safetensors"], capture_output=True, text=True)
    assert r.returncode == 0 and "\x1b" not in r.stdout and "\\u{1B}" in r.stdout, repr(r.stdout)


# Found by `make fuzz` (recipe harness): Yams' constructor traps on a mapping key that is a list.
FUZZ_RECIPE_NONSCALAR_KEY = (b"merge_method: slerp\nbase_model: models/ft3\nslices:mre_tghoClosedRand: ties\n"
                             b"base_erge_methmodel: models/base\nmodels:\n   - {model:0.    param,  [0, 2]}\n")
YAML_BOMB = b"".join([b"a: &a [x, x, x, x, x, x, x, x, x]\n"] +
                     [b"%c: &%c [%s]\n" % (c, c, b", ".join([b"*%c" % (c - 1)] * 9)) for c in range(ord("b"), ord("i"))] +
                     [b"merge_method: linear\n"])


@pytest.mark.parametrize("text,needle", [(FUZZ_RECIPE_NONSCALAR_KEY, "mapping key must be a plain name"),
                                         (YAML_BOMB, "more than a million YAML nodes"),
                                         (b"merge_method: linear\nmodels: " + b"[" * 5000 + b"]" * 5000 + b"\n", "")])
def test_hostile_recipes_are_usage_errors(tmp_path, text, needle):
    (tmp_path / "r.yml").write_bytes(text)
    code, err, secs, _ = timed("merge", "--config", tmp_path / "r.yml", "-o", tmp_path / "out", limit_s=60)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
