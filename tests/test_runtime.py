"""Threads, code paths, the CLI and the CUDA-less fallback."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import layerforge
from layerforge import _C, cuda


def test_threads_roundtrip():
    before = layerforge.get_num_threads()
    try:
        layerforge.set_num_threads(1)
        assert layerforge.get_num_threads() == 1
        layerforge.set_num_threads(3)
        assert layerforge.get_num_threads() == 3
    finally:
        layerforge.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -1])
def test_threads_bad_value(bad):
    with pytest.raises(ValueError):
        layerforge.set_num_threads(bad)


def test_threads_bad_type():
    with pytest.raises(TypeError):
        layerforge.set_num_threads(2.5)


def test_set_cpu_path_errors():
    with pytest.raises(ValueError, match="unknown path"):
        _C.set_cpu_path("sse9")


def _run(args, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "layerforge", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_info_cli():
    r = _run(["info"])
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"layerforge {layerforge.__version__}" in out
    assert "cpu path" in out and "threads" in out and "cuda module" in out and "gpus" in out


def test_env_forces_generic_path_and_threads():
    r = _run(["info"], {"LAYERFORGE_CPU_PATH": "generic", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "cpu path       generic" in r.stdout
    assert "threads        1" in r.stdout


def test_generic_path_subprocess_matmul():
    code = (
        "import numpy as np, layerforge as lf\n"
        "assert lf.cpu_path() == 'generic'\n"
        "r = np.random.default_rng(1)\n"
        "a = r.standard_normal((150, 260)).astype(np.float32); b = r.standard_normal((260, 40)).astype(np.float32)\n"
        "ref = a.astype(np.float64) @ b\n"
        "e = np.linalg.norm(lf.ops.matmul(a, b) - ref) / np.linalg.norm(ref)\n"
        "assert e < 1e-5, e\n"
    )
    env = dict(os.environ, LAYERFORGE_CPU_PATH="generic")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr


def test_cuda_queries_without_device():
    # Works whether or not the module was built or a GPU is present.
    n = cuda.device_count()
    assert n >= 0
    assert cuda.is_available() == (n > 0)
    if n == 0:
        assert cuda.unavailable_reason()
        assert cuda.devices() == []


def test_cuda_module_built_when_nvcc_present():
    import shutil

    if not shutil.which("nvcc") and not os.environ.get("CUDACXX"):
        pytest.skip("no nvcc on this machine")
    assert cuda.is_built(), cuda.unavailable_reason()
    assert "90-real" in cuda.compiled_architectures() or cuda.compiled_architectures()


@pytest.mark.cuda
def test_cuda_self_test():
    from layerforge import _cuda

    _cuda.self_test(0)
    assert cuda.devices()[0]["compute_capability"][0] >= 7


def test_bench_quick_json(tmp_path):
    out = tmp_path / "r.json"
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\nintro\n\n## other\n\nkept\n")
    from layerforge.bench import harness

    rows = harness.run(["matmul"], json_path=str(out), results_path=str(md), quick=True, rounds=1)
    assert rows and all(r["ratio"] > 0 for r in rows)
    data = json.loads(out.read_text())
    assert data["machine"]["peak_gflops"] > 0
    text = md.read_text()
    assert "## other" in text and "kept" in text and "## matmul" in text


def test_bench_unknown_family():
    from layerforge.bench import harness

    with pytest.raises(SystemExit):
        harness.run(["nope"])
