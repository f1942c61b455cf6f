#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (a Clang build tree of its own, build-fuzz/, with
# ASan+UBSan; incremental) and runs each one for a bounded time on a scratch copy of its seed
# corpus, after replaying every regression input. Exits non-zero when a target finds a crash,
# a hang, an out-of-memory or a leak, and prints where the reproducer is and how to rerun it.
# Never writes into the checkout: new corpus entries and artifacts stay in a scratch directory.
#   jobscripts/local/fuzz.sh            # CI: replay, then 30 s per target
#   jobscripts/local/fuzz.sh 600        # 10 minutes per target
#   jobscripts/local/fuzz.sh --replay   # only replay regressions/ and corpus/ (seconds)
#   ZT_FUZZ_TARGETS="fuzz_model_config" ...   # some targets only
#   ZT_FUZZ_BUILD_DIR=/tmp/bf ...             # another build tree (default build-fuzz/)
#   ZT_FUZZ_WORK=/tmp/fw ...                  # keep the scratch directory (corpus grown there)
# Targets run side by side, as many at a time as there are cores.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=${ZT_FUZZ_BUILD_DIR:-$repo/build-fuzz}
fuzz_src=$repo/tests/fuzz
read -r -a targets <<<"${ZT_FUZZ_TARGETS:-fuzz_deepspeed_config fuzz_model_config fuzz_hdf5_tokens fuzz_safetensors}"

replay_only=0
seconds=30
case "${1:-}" in
  --replay) replay_only=1 ;;
  '') ;;
  *[!0-9]* | 0)
    echo "usage: $0 [SECONDS_PER_TARGET | --replay]" >&2
    exit 2
    ;;
  *) seconds=$1 ;;
esac

# The limits of issue 9: no input may hang past 60 s or need gigabytes; a 10 s unit is a
# hang for inputs this small.
limits=(-timeout=10 -rss_limit_mb=2048)
# UBSan must print where; LSan ignores what libhdf5 leaks on its own error paths and ASan the
# errors libhdf5 makes in its own memory (not ours; asan.supp says why).
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export ASAN_OPTIONS=detect_leaks=1:suppressions=$fuzz_src/asan.supp
export LSAN_OPTIONS=suppressions=$fuzz_src/lsan.supp:print_suppressions=0

if ! command -v "${ZT_FUZZ_CXX:-clang++}" >/dev/null; then
  echo "fuzz: ${ZT_FUZZ_CXX:-clang++} not found; jobscripts/local/setup-deps.sh (as root) installs it" >&2
  exit 1
fi
echo "== fuzz: building ${targets[*]} in $build_dir"
if [[ ! -f $build_dir/CMakeCache.txt ]]; then
  mkdir -p "$build_dir"
  CC=${ZT_FUZZ_CC:-clang} CXX=${ZT_FUZZ_CXX:-clang++} cmake -S "$repo" -B "$build_dir" \
    -DZT_BUILD_FUZZERS=ON -DZT_BUILD_TESTS=OFF -DZT_BUILD_BENCH=OFF -DZT_ENABLE_CUDA=OFF \
    -DZT_NATIVE_ARCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build_dir/configure.log" 2>&1 || {
    cat "$build_dir/configure.log" >&2
    exit 1
  }
fi
cmake --build "$build_dir" -j "$(nproc)" --target "${targets[@]}"

if [[ -n ${ZT_FUZZ_WORK:-} ]]; then
  work=$ZT_FUZZ_WORK
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/zt-fuzz.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
findings=$build_dir/fuzz-findings

# Per-target settings, in target_options and the environment of the target's subshell.
# libhdf5 sizes its metadata buffers from the file and asks malloc for up to exabytes; glibc
# says no and HDF5 reports an error, so the HDF5 target lets ASan's malloc say no too instead
# of calling it a finding (operator new in zerotrain's own code still reports). The RSS limit
# still catches memory that is really used.
set_target_options() {
  target_options=()
  case $1 in
    fuzz_hdf5_tokens)
      target_options=(-malloc_limit_mb=1048576)
      # A smaller quarantine: files that make libhdf5 allocate a lot would otherwise keep
      # the process near the RSS limit with memory it has freed.
      export ASAN_OPTIONS=$ASAN_OPTIONS:allocator_may_return_null=1:quarantine_size_mb=64
      ;;
  esac
}

# Prints a finding: the reproducer (copied out of the scratch directory) and the commands.
report_finding() {
  local target=$1 log=$2 artifacts=$3
  local binary=$build_dir/tests/fuzz/$target
  local target_options ASAN_OPTIONS=$ASAN_OPTIONS
  set_target_options "$target"
  local rerun="env ASAN_OPTIONS=$ASAN_OPTIONS UBSAN_OPTIONS=$UBSAN_OPTIONS LSAN_OPTIONS=$LSAN_OPTIONS"
  rerun+=" $binary ${limits[*]} ${target_options[*]}"
  mkdir -p "$findings/$target"
  cp "$log" "$findings/$target/"
  echo "!! $target: finding; its report (whole log: $findings/$target/${log##*/}):" >&2
  # The report from its first line, without libFuzzer's own frames and ASan's shadow map.
  awk '/fuzz invariant broken|runtime error|ERROR: |terminate called/ { on = 1 }
       /Shadow bytes around|^MS: / { on = 0 }
       on && !/in fuzzer::|libc_start|in _start|^\s*$/ && shown++ < 30' "$log" >&2
  # A replayed input that fails is its own reproducer (UBSan stops before libFuzzer saves one).
  local running
  running=$(sed -n 's/^Running: //p' "$log" | tail -n 1)
  if [[ -n $running ]]; then
    echo "!! failing input: $running" >&2
    echo "!!   rerun:    $rerun $running" >&2
  fi
  local artifact
  for artifact in "$artifacts"/*; do
    [[ -f $artifact ]] || continue
    cp "$artifact" "$findings/$target/"
    local saved=$findings/$target/${artifact##*/}
    echo "!! reproducer: $saved" >&2
    echo "!!   rerun:    $rerun $saved" >&2
    echo "!!   minimize: $rerun -minimize_crash=1 -max_total_time=120 $saved" >&2
    echo "!!   then save it as tests/fuzz/regressions/$target/<what-it-does> (tests/fuzz/README.md)" >&2
  done
}

# Regression inputs and the seed corpus, once each, by file name (a directory argument would
# make libFuzzer fuzz it).
replay() {
  local target=$1
  local target_options ASAN_OPTIONS=$ASAN_OPTIONS
  set_target_options "$target"
  local binary=$build_dir/tests/fuzz/$target
  local inputs=()
  local dir file
  for dir in "$fuzz_src/regressions/$target" "$fuzz_src/corpus/$target"; do
    [[ -d $dir ]] || continue
    for file in "$dir"/*; do [[ -f $file ]] && inputs+=("$file"); done
  done
  if ((${#inputs[@]} == 0)); then
    echo "   $target: nothing to replay"
    return 0
  fi
  local log=$work/$target.replay.log artifacts=$work/$target.replay-artifacts
  mkdir -p "$artifacts"
  if (cd "$work" && timeout --kill-after=10 600 "$binary" "${limits[@]}" "${target_options[@]}" \
    -artifact_prefix="$artifacts/" "${inputs[@]}" >"$log" 2>&1); then
    echo "   $target: ${#inputs[@]} regression and corpus inputs replayed"
    return 0
  fi
  report_finding "$target" "$log" "$artifacts"
  return 1
}

# One target for `seconds`, on a scratch copy of its corpus. Runs in the background next to
# the others, so it only leaves its exit status behind; summarize prints.
fuzz() {
  local target=$1
  local target_options ASAN_OPTIONS=$ASAN_OPTIONS
  set_target_options "$target"
  local binary=$build_dir/tests/fuzz/$target
  local corpus=$work/$target.corpus artifacts=$work/$target.artifacts
  mkdir -p "$corpus" "$artifacts"
  cp -n "$fuzz_src/corpus/$target"/* "$corpus/"
  local options=("${limits[@]}" -max_total_time="$seconds" -print_final_stats=1 -print_funcs=0
    -artifact_prefix="$artifacts/")
  if [[ -f $fuzz_src/dictionaries/$target.dict ]]; then
    options+=(-dict="$fuzz_src/dictionaries/$target.dict")
  fi
  options+=("${target_options[@]}")
  local status=0
  # The outer timeout only guards against libFuzzer itself not stopping (a stuck leak check).
  (cd "$work" && timeout --kill-after=30 $((seconds + 300)) "$binary" "${options[@]}" \
    "$corpus" >"$work/$target.log" 2>&1) || status=$?
  echo "$status" >"$work/$target.status"
}

# Executions and speed from libFuzzer's final stats (-print_final_stats=1), then the verdict.
summarize() {
  local target=$1
  local log=$work/$target.log status
  status=$(cat "$work/$target.status" 2>/dev/null || echo "missing")
  local runs speed
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  if [[ $status == 0 ]]; then
    echo "   $target: ${seconds} s, ${runs:-?} executions (${speed:-?}/s), no finding;" \
      "corpus grew to $(find "$work/$target.corpus" -type f | wc -l) inputs"
    return 0
  fi
  echo "   $target: stopped with status $status after ${runs:-?} executions (${speed:-?}/s)"
  report_finding "$target" "$log" "$work/$target.artifacts"
  return 1
}

failed=()
echo "== fuzz: replaying tests/fuzz/regressions and tests/fuzz/corpus"
for target in "${targets[@]}"; do replay "$target" || failed+=("$target (replay)"); done

if ((!replay_only)); then
  echo "== fuzz: ${seconds} s per target, up to $(nproc) at a time (logs in $work)"
  for target in "${targets[@]}"; do
    while (($(jobs -rp | wc -l) >= $(nproc))); do wait -n || true; done
    fuzz "$target" &
  done
  wait
  for target in "${targets[@]}"; do summarize "$target" || failed+=("$target"); done
fi

if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (reproducers in $findings)" >&2
  exit 1
fi
echo "fuzz: no finding"
