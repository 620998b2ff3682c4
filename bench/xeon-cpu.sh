#!/usr/bin/env bash
# The CPU targets of issue 3 on an AVX-512 + AMX Xeon (the device machine's 16 cores): builds the addon, the
# native tests and the kernel timing, runs the native tests under every forced backend, then bench:kernels
# for avx512-fma, avx512 and amx with 16 threads. Needs node, cmake and the production node_modules only
# (no vitest, no npx: cmake-js is run through node).
#
#   bash bench/xeon-cpu.sh OUTDIR [target]   (from the repository root; ~2 minutes, target only ~1.5)
#
# OUTDIR gets: lscpu.txt, native-tests.txt (one block per W4A8_ISA), bench.txt (the bench tables and target
# lines), and target/ (4096x11008, all four kernels) and shapes/ (the other shapes, W4A8) with the bench's
# JSON and SVG each.
set -u
out=${1:?usage: bash bench/xeon-cpu.sh OUTDIR [target]}
mkdir -p "$out"
threads=${W4A8_BENCH_THREADS:-16}
lscpu > "$out/lscpu.txt" 2>&1

if ! node node_modules/cmake-js/bin/cmake-js compile --runtime node --config Release -p "$threads" --CDW4A8_CUDA=off > "$out/build.log" 2>&1 ||
   ! cmake --build build --target w4a8_kernel_timing -j "$threads" >> "$out/build.log" 2>&1; then
  tail -60 "$out/build.log"
  exit 1
fi
rm -f "$out/build.log"

for isa in reference avx2 avx512-bf16 avx512 amx; do
  echo "== W4A8_ISA=$isa"
  W4A8_ISA=$isa ./build/w4a8_native_tests 2>&1 | grep -v '^  ok '
done > "$out/native-tests.txt"
cat "$out/native-tests.txt"

# W4A8_BENCH_BACKENDS / _M / _KERNELS narrow the 4096x11008 run (e.g. avx512-bf16,avx512,amx / 1,4,8,16 / w4a8,w8a8,f32).
backends=${W4A8_BENCH_BACKENDS:-avx512-fma,avx512,amx}
bench() { timeout "$1" node bench/kernels.mjs --threads "$threads" --backends "$backends" --budget 0.3 "${@:2}"; }
{
  bench 150 --shapes 4096x11008 --m "${W4A8_BENCH_M:-1,4,16,64,256}" --kernels "${W4A8_BENCH_KERNELS:-w4a8,w8a8,w4a16,f32}" \
    --out "$out/target"
  [[ ${2:-} == target ]] ||
    bench 150 --shapes 4096x4096,11008x4096,8192x8192,8192x28672 --m 1,4,16,64,256 --kernels w4a8 --out "$out/shapes"
} > "$out/bench.txt" 2>&1
cat "$out/bench.txt"
