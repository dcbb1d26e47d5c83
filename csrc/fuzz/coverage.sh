#!/usr/bin/env bash
# Line and branch coverage of what a fuzzer's corpus reaches:
#   csrc/fuzz/coverage.sh TARGET        (after csrc/fuzz/run.sh has grown csrc/fuzz/build/corpus/TARGET)
# Builds the harness with clang's source-based coverage (no sanitizers), replays the
# corpus and the seeds once, and prints llvm-cov's report for the files the target is about.
set -euo pipefail
cd "$(cd "$(dirname "$0")" && pwd)"
t="${1:?usage: coverage.sh modelfile|frame}"
case "$t" in
  modelfile) files=(../modelfile.c ../json_check.c ../model.c ../stream.c); seeds=build/seeds/modelfile ;;
  frame) files=(../framing.c); seeds=seeds/frame ;;
  *) echo "coverage.sh: unknown target $t" >&2; exit 2 ;;
esac
core=(../json_check.c ../modelfile.c ../conv.c ../winograd.c ../dispatch.c ../model.c ../decoder.c ../stream.c ../framing.c ../gemm_scalar.c)
isa=()
if clang -dumpmachine | grep -q x86_64; then
  clang -std=c11 -O1 -mavx2 -mfma -c ../gemm_avx2.c -o build/cov_avx2.o
  clang -std=c11 -O1 -mavx512f -c ../gemm_avx512.c -o build/cov_avx512.o
  isa=(build/cov_avx2.o build/cov_avx512.o)
fi
clang -std=c11 -g -O1 -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping "fuzz_$t.c" "${core[@]}" "${isa[@]}" -lm \
  -o "build/cov_$t"
mkdir -p "build/corpus/$t"
LLVM_PROFILE_FILE="build/cov_$t.profraw" "./build/cov_$t" -runs=0 "build/corpus/$t" "$seeds" >/dev/null 2>&1
llvm-profdata merge -sparse "build/cov_$t.profraw" -o "build/cov_$t.profdata"
report="$(llvm-cov report "build/cov_$t" -instr-profile="build/cov_$t.profdata")"
head -2 <<<"$report"
for f in "${files[@]}"; do grep "^$f " <<<"$report"; done
