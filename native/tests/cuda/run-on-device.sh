#!/usr/bin/env bash
# Builds the addon with CUDA and runs every GPU check and benchmark on a machine with a Hopper GPU and no
# vitest: the CUDA tests (kernels, and the GPU decoder step against the CPU step, with and without CUDA
# graphs), compute-sanitizer on a small model, the kernel bench, the 7B-shaped decode bench (C++, GPU beside
# CPU) and the Node end-to-end script. Results go to $OUT (default ./device-out). Usage, from the repository
# root (node on PATH, node_modules present):  bash native/tests/cuda/run-on-device.sh [steps...]
# steps: build tests sanitizer bench model e2e profile (default: all but profile)
set -uo pipefail
OUT=${OUT:-device-out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
steps=${*:-build tests sanitizer bench model e2e}
has() { [[ " $steps " == *" $1 "* ]]; }
CUB=$(python3 -c "import nvidia.cublas as m; print(m.__path__[0])" 2>/dev/null || true)
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.memory,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
if has build; then
  start=$(date +%s)
  node node_modules/cmake-js/bin/cmake-js compile --runtime node --config Release --CDW4A8_CUDA=on --CDW4A8_CUBLAS_ROOT="$CUB" > "$OUT/build.log" 2>&1
  echo "build rc=$? in $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
  tail -5 "$OUT/build.log"
fi
T=./build/w4a8_cuda_tests
if has tests; then
  timeout 240 $T > "$OUT/tests.txt" 2>&1; echo "tests rc=$?" | tee -a "$OUT/summary.txt"
  W4A8_CUDA_GRAPHS=0 timeout 120 $T gpu_ > "$OUT/tests-no-graphs.txt" 2>&1; echo "tests without graphs rc=$?" | tee -a "$OUT/summary.txt"
  grep -E "FAIL|cuda:|rows within" "$OUT/tests.txt" "$OUT/tests-no-graphs.txt" | head -30
fi
if has sanitizer; then
  timeout 150 compute-sanitizer --print-limit 20 $T gpu_decoder_step_matches_cpu_e4m3fn > "$OUT/sanitizer.txt" 2>&1
  echo "sanitizer rc=$?" | tee -a "$OUT/summary.txt"; tail -3 "$OUT/sanitizer.txt"
  timeout 150 compute-sanitizer --print-limit 20 $T --small gemv_ > "$OUT/sanitizer-gemv.txt" 2>&1
  echo "sanitizer (gemv) rc=$?" | tee -a "$OUT/summary.txt"; tail -3 "$OUT/sanitizer-gemv.txt"
fi
if has bench; then
  timeout 120 $T --bench --json "$OUT/cuda-bench.json" > "$OUT/bench.txt" 2>&1; echo "bench rc=$?" | tee -a "$OUT/summary.txt"
fi
if has model; then
  timeout 240 $T --model-bench --json "$OUT/model-bench.json" > "$OUT/model-bench.txt" 2>&1
  echo "model bench rc=$?" | tee -a "$OUT/summary.txt"; cat "$OUT/model-bench.txt"
fi
if has profile && command -v nsys > /dev/null; then
  timeout 120 nsys profile --cuda-graph-trace=node -o "$OUT/decode" --force-overwrite true $T --model-bench --layers 8 --batches 1 --no-cpu > "$OUT/profile-run.txt" 2>&1
  nsys stats --report cuda_gpu_kern_sum --format csv "$OUT/decode.nsys-rep" > "$OUT/kernels.csv" 2>&1
  echo "profile rc=$?" | tee -a "$OUT/summary.txt"; head -30 "$OUT/kernels.csv" | cut -c1-200
  rm -f "$OUT/decode.nsys-rep" "$OUT/decode.sqlite"
fi
if has e2e; then
  timeout 200 node bench/cuda-e2e.mjs --shape 7b --tokens 64 --json "$OUT/e2e.json" > "$OUT/e2e.txt" 2>&1
  echo "e2e rc=$?" | tee -a "$OUT/summary.txt"; tail -12 "$OUT/e2e.txt"
fi
