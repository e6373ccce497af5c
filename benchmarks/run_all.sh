#!/usr/bin/env bash
# Run every benchmark whose figures docs/perf.md (and docs/torchrec.md, docs/export.md) quote, in sequence,
# one log per command under OUT (default bench-out/), with the load average before each.
#   bash benchmarks/run_all.sh [OUT]
# Takes about 30-40 minutes on the project's 2-core machine; run it on a quiet machine.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-out}"
mkdir -p "$out"
py="${PYTHON:-python}"
run() {  # name, command...
    local name="$1"; shift
    echo "== $name: $* (load: $(cut -d' ' -f1-3 /proc/loadavg))" | tee "$out/$name.txt"
    local t0=$SECONDS
    "$@" >> "$out/$name.txt" 2>&1
    local rc=$?
    echo "   rc=$rc, $((SECONDS - t0)) s" | tee -a "$out/$name.txt"
}
run lookup        "$py" benchmarks/bench_lookup.py
run lookup_packed "$py" benchmarks/bench_lookup.py --packed --tables 4 --rows 50000 --bags 1 16 --threads 1
run quant         "$py" benchmarks/bench_quant.py
run search_floor  "$py" benchmarks/bench_search_floor.py --rows 300000
run scale_dtype   "$py" benchmarks/bench_scale_dtype.py
run collapse      "$py" benchmarks/bench_collapse.py --repeats 3
run svd           "$py" benchmarks/bench_svd.py
run train_step_1  "$py" benchmarks/bench_train_step.py --steps 60 --threads 1
run train_step_2  "$py" benchmarks/bench_train_step.py --steps 60 --threads 2
run parse         "$py" benchmarks/bench_parse.py --repeats 5
run load_cache    "$py" benchmarks/bench_load_cache.py
run main_job      "$py" benchmarks/bench_main_job.py
run sweep         "$py" benchmarks/bench_sweep.py
run torchrec      "$py" benchmarks/bench_torchrec.py --steps 80 --threads 2
run export        "$py" benchmarks/bench_export.py
