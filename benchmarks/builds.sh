#!/usr/bin/env bash
# llama.cpp builds compared: raw prompt/generation tokens/s of the bundled model (benchmarks/speed.py raw) for
# several llama-cpp-python builds, each in a virtualenv of its own made by scripts/setup.sh (wheels cached in
# ~/.cache/qa/wheels, keyed by the cmake args, so a second run compiles nothing).
#
#   bash benchmarks/builds.sh                    # build (nice 10) and measure the variants below, 2 rounds
#   ROUNDS=3 REPEAT=5 BUILDS="native avx512" bash benchmarks/builds.sh
#   bash benchmarks/builds.sh --summary          # only the table of the runs in benchmarks/out/builds/
#
# The rounds alternate the builds (native, avx512, native, avx512, ...) so a change in the machine's load touches
# every build alike. Measurements run at `nice -n -5` when allowed (root), builds at `nice -n 10`.
# Each run's JSON (with the reply qa gave and llama.cpp's weight-buffer lines, "CPU_REPACK" when the repacked Q4
# kernels are used) is kept in benchmarks/out/builds/<build>-<round>.json.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/out/builds}
ROUNDS="${ROUNDS:-2}"
REPEAT="${REPEAT:-5}"
BUILDS="${BUILDS:-native avx512 avx2}"
VENVS="${VENVS:-.venv-builds}"  # prefix: .venv-builds-native, .venv-builds-avx512, ...

common="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
noamx="-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
cmake_args() {
  case "$1" in
    native) echo "-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'" \
                 "-DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'" ;;  # setup.sh before issue 12
    setup) echo "" ;;  # whatever scripts/setup.sh derives for this machine today
    avx512) echo "$common -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON $noamx" ;;
    avx2) echo "$common -DGGML_AVX512=OFF $noamx" ;;
    *) echo "unknown build $1 (native, setup, avx512, avx2)" >&2; exit 2 ;;
  esac
}

summary() {
  python3 - "$OUT" <<'EOF'
import json, statistics, sys
from pathlib import Path

runs: dict[str, list[dict]] = {}
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # a run still being written, or cut off: left out, and said so
        print(f"left out {path}: {exc}", file=sys.stderr)
        continue
    runs.setdefault(path.stem.rsplit("-", 1)[0], []).append(result)

def spread(values):
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"

print("| build | runs | raw prompt tok/s | raw generation tok/s | qa prompt % of raw | qa generation % of raw | repacked | reply |")
print("|---|---|---|---|---|---|---|---|")
for name, results in runs.items():
    raw = [r for res in results for r in res["raw_runs"]]
    ours = [o for res in results for o in res["qa_runs"]]
    prompt_pct = statistics.median(o[0] / r[0] for r, o in zip(raw, ours)) * 100
    gen_pct = statistics.median(o[1] / r[1] for r, o in zip(raw, ours)) * 100
    repacked = "yes" if all(res["repacked"] for res in results) else "NO"
    replies = sorted({res["qa_reply"] for res in results})
    print(f"| {name} | {len(raw)} | {spread([r[0] for r in raw])} | {spread([r[1] for r in raw])} | {prompt_pct:.0f}% | "
          f"{gen_pct:.0f}% | {repacked} | {' / '.join(replies)} |")
print("\nmedian (min–max) of each build's runs; load average at the end of its last round:",
      ", ".join(f"{n} {res[-1]['load_average'][0]:.1f}" for n, res in runs.items()))
EOF
}

if [ "${1-}" = --summary ]; then summary; exit 0; fi

for build in $BUILDS; do
  QA_VENV="$VENVS-$build" QA_LLAMA_CMAKE_ARGS="$(cmake_args "$build")" nice -n 10 bash scripts/setup.sh
done

mkdir -p "$OUT"
rm -f "$OUT"/*.json
fast=(nice -n -5)
"${fast[@]}" true 2>/dev/null || fast=()
for round in $(seq 1 "$ROUNDS"); do
  for build in $BUILDS; do
    echo "==> round $round: $build"
    "${fast[@]}" "$VENVS-$build/bin/python" benchmarks/speed.py raw --repeat "$REPEAT" > "$OUT/$build-$round.json"
  done
done
summary
