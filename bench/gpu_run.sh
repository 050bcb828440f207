#!/usr/bin/env bash
# The GPU run: build and install layerforge, run the CUDA tests, compute-sanitizer over them, and the GPU
# benchmark families, writing every log under $OUT. Meant for a GPU machine without network access where
# pybind11, scikit-build-core, cupy and torch are preinstalled (the device machines: python3 holds torch).
#
#   bash bench/gpu_run.sh                       # every step
#   STEPS="build test" bash bench/gpu_run.sh    # some steps: info build test sanitize bench
#   FAMILIES="cuda_attention" TESTS="tests/test_cuda_attention.py" bash bench/gpu_run.sh
#   ARCHS=90-real bash bench/gpu_run.sh         # build for the H100 only (faster); default: the release list
#
# Defaults: FAMILIES = every cuda_* family registered in layerforge.bench.harness.FAMILIES; TESTS = tests
# (the `cuda` marker selects the GPU tests); SANITIZE_TESTS = the sequence-model GPU tests without the slow
# large-memory ones. Each step logs to $LOGS/<step>.log and the script goes on after a failing step; the exit
# status is that of the first failing step. $OUT receives few files (the device tool brings back at most
# 8): summary.txt (every step's status and time, the machine), pytest.log, bench.log (the tables) and
# logs.tgz (every log and the benchmarks' JSON).
set -u -o pipefail

OUT=${OUT:-$PWD/gpu_out}
# every log goes to LOGS (default: a fresh directory; XXXXXX is mktemp's template for its random suffix)
LOGS=${LOGS:-$(mktemp -d /tmp/gpu_logs.XXXXXX)}
PY=${PYTHON:-python3}
STEPS=${STEPS:-"info build test sanitize bench"}
TESTS=${TESTS:-tests}
SANITIZE_TESTS=${SANITIZE_TESTS:-"tests/test_cuda_attention.py tests/test_cuda_lstm.py"}
mkdir -p "$OUT" "$LOGS"
SUMMARY=$LOGS/summary.txt
: >"$SUMMARY"
status=0

# step NAME COMMAND...: run COMMAND with its output in $LOGS/NAME.log, time it, record the outcome.
step() {
    local name=$1
    shift
    local t0=$SECONDS
    echo "== $name: $*" | tee -a "$SUMMARY"
    "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    echo "   $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$SUMMARY"
    if [ $rc -ne 0 ] && [ $status -eq 0 ]; then status=$rc; fi
    return $rc
}

has_step() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if has_step info; then
    step info bash -c "nvidia-smi; nvcc --version; $PY -c 'import sys, numpy, torch, cupy; \
print(sys.version); print(\"numpy\", numpy.__version__, \"torch\", torch.__version__, \"cupy\", cupy.__version__)'"
fi

if has_step build; then
    build_args=(--no-build-isolation --no-deps -v .)
    if [ -n "${ARCHS:-}" ]; then build_args=(-Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$ARCHS" "${build_args[@]}"); fi
    export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
    step build "$PY" -m pip install "${build_args[@]}"
    # An undefined symbol or a missing architecture shows here, not as skipped tests.
    step import "$PY" -c "import layerforge, layerforge._cuda as c; print(c.compiled_architectures()); \
print(c.devices()); c.self_test(0); print('self test passed')"
fi

if has_step test; then
    step pytest "$PY" -m pytest -q -rs -m cuda -p no:cacheprovider --junitxml="$LOGS/pytest.xml" $TESTS
fi

if has_step sanitize; then
    # memcheck (out-of-bounds and misaligned accesses, leaks of device memory) and racecheck (shared-memory
    # hazards) over the sequence-model GPU tests; slow tests (gigabytes of data) left out.
    for tool in memcheck racecheck; do
        step "sanitize_$tool" compute-sanitizer --tool "$tool" --error-exitcode 99 \
            "$PY" -m pytest -q -x -m "cuda and not slow" -p no:cacheprovider $SANITIZE_TESTS
    done
fi

if has_step bench; then
    families=${FAMILIES:-$("$PY" -c "from layerforge.bench.harness import FAMILIES; \
print(' '.join(f for f in FAMILIES if f.startswith('cuda_')))")}
    for fam in $families; do
        step "bench_$fam" "$PY" -m layerforge bench "$fam" --json "$LOGS/bench_$fam.json"
    done
fi

echo "first failing status: $status" | tee -a "$SUMMARY"
{ cat "$SUMMARY"; echo; cat "$LOGS/info.log" "$LOGS/import.log" 2>/dev/null; } >"$OUT/summary.txt"
[ -f "$LOGS/pytest.log" ] && cp "$LOGS/pytest.log" "$OUT/pytest.log"
ls "$LOGS"/bench_*.log >/dev/null 2>&1 && cat "$LOGS"/bench_*.log >"$OUT/bench.log"
tar -czf "$OUT/logs.tgz" -C "$LOGS" .
exit $status
