#!/usr/bin/env bash
# Build the libFuzzer harnesses (clang) and fuzz each target for SECONDS:
#   csrc/fuzz/run.sh [SECONDS] [TARGET...]    targets: modelfile frame (default: both), SECONDS default 60
# First every input in csrc/fuzz/regressions/TARGET (past crashes) is replayed; then the
# fuzzer runs from the seeds (tests/corpus/*.himae, csrc/fuzz/seeds/TARGET) and the corpus
# it kept before (csrc/fuzz/build/corpus/TARGET, not committed). A crash leaves its input as
# csrc/fuzz/build/crash-TARGET-* and makes the script exit non-zero. FUZZ_JOBS=N runs N
# fuzzer processes per target (for long runs, docs/fuzzing.md); FUZZ_ARGS adds libFuzzer flags.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(modelfile frame)
command -v clang >/dev/null || { echo "run.sh: clang is needed (apt-get install clang)" >&2; exit 2; }
make -s OUT=build

seed_dirs() {
  case "$1" in
    modelfile) mkdir -p build/seeds/modelfile && cp ../../tests/corpus/*.himae build/seeds/modelfile/
               echo build/seeds/modelfile ;;
    frame) echo seeds/frame ;;
    *) echo "run.sh: unknown target $1 (modelfile, frame)" >&2; exit 2 ;;
  esac
}

status=0
for t in "${targets[@]}"; do
  seeds="$(seed_dirs "$t")"
  mkdir -p "build/corpus/$t" "regressions/$t"
  shopt -s nullglob
  regressions=("regressions/$t"/*)
  shopt -u nullglob
  if [ ${#regressions[@]} -gt 0 ]; then
    echo "== $t: replaying ${#regressions[@]} regression input(s)"
    ./build/fuzz_"$t" -runs=1 "${regressions[@]}" >"build/$t-regressions.log" 2>&1 || {
      tail -40 "build/$t-regressions.log"; echo "== $t: a regression input crashes again" >&2; status=1; continue; }
  fi
  echo "== $t: fuzzing for ${seconds}s"
  jobs=()
  [ "${FUZZ_JOBS:-1}" -gt 1 ] && jobs=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
  # shellcheck disable=SC2086
  if ./build/fuzz_"$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len=65536 \
       -print_final_stats=1 -artifact_prefix="build/crash-$t-" "${jobs[@]}" ${FUZZ_ARGS:-} \
       "build/corpus/$t" "$seeds" >"build/$t.log" 2>&1; then
    grep -E "Seed: |INITED|DONE|stat::number_of_executed_units|stat::peak_rss_mb" "build/$t.log" | tail -5
    echo "== $t: no crash ($(ls "build/corpus/$t" | wc -l) corpus inputs)"
  else
    if grep -q "ERROR: " "build/$t.log"; then sed -n '/ERROR: /,$p' "build/$t.log" | grep -v "^  0x\|^Shadow\|^  [A-Z].*: *[0-9a-f ]*$" | head -60
    else tail -60 "build/$t.log"; fi
    grep -m1 "Seed: " "build/$t.log" >&2 || true
    echo "== $t: CRASH; input: $(ls build/crash-"$t"-* 2>/dev/null | head -1)" >&2
    echo "   add it to csrc/fuzz/regressions/$t/ with a test (docs/fuzzing.md)" >&2
    status=1
  fi
done
exit $status
