#!/usr/bin/env bash
# Repeats spack/README.md's offline walk-through as a new user would, and checks it: in a fresh
# clone of this checkout's committed HEAD, with a throwaway HOME, Spack user configuration,
# cache and install tree, it runs the README's block line by line (read from the README, so the
# two cannot drift apart), then checks that
#   - no step but setup-deps.sh (apt) and pip went to the network: the other steps run with
#     their HTTP(S) proxy set to a local listener that records every request;
#   - Spack built nothing but zerotrain, compiler-wrapper and gcc-runtime;
#   - `zerotrain --version` names the spec and the clone's commit (not a deleted stage), and the
#     environment's develop build names its tree;
#   - the top-level README's Spack commands are among those that ran;
#   - with a CUDA toolkit, zerotrain+cuda concretizes to externals too.
# Usage:
#   SPACK_ROOT=<spack-1.1.0 tree> SPACK_PACKAGES=<spack-packages-v2025.11.0 tree> spack/test-offline.sh
#   ZT_SPACK_TEST_KEEP=1 ...   # keep the temporary directory (it is kept anyway on failure)
# Skips (exit 0) when SPACK_ROOT or SPACK_PACKAGES is not set or not such a tree.
# About 11 minutes on 2 cores (Kokkos is built in the clone; zerotrain is built twice).
set -euo pipefail
checkout=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
started=$SECONDS

say() { echo "test-offline: $*"; }
fail() {
  echo "test-offline: FAIL: $*" >&2
  exit 1
}

if [[ -z ${SPACK_ROOT:-} || ! -x ${SPACK_ROOT:-}/bin/spack ]]; then
  say "SKIP: set SPACK_ROOT to a Spack 1.1.0 source tree"
  exit 0
fi
if [[ -z ${SPACK_PACKAGES:-} || ! -f ${SPACK_PACKAGES:-}/repos/spack_repo/builtin/repo.yaml ]]; then
  say "SKIP: set SPACK_PACKAGES to a spack-packages v2025.11.0 tree"
  exit 0
fi
SPACK_ROOT=$(cd "$SPACK_ROOT" && pwd)
SPACK_PACKAGES=$(cd "$SPACK_PACKAGES" && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/zt-spack-offline.XXXXXX")
listener_pid=
cleanup() {
  local status=$?
  [[ -n $listener_pid ]] && kill "$listener_pid" 2>/dev/null
  if ((status == 0)) && [[ -z ${ZT_SPACK_TEST_KEEP:-} ]]; then
    rm -rf "$tmp"
  else
    say "kept $tmp (logs in $tmp/logs)"
  fi
}
trap cleanup EXIT
mkdir -p "$tmp/logs" "$tmp/home" "$tmp/spack-user"
logs=$tmp/logs

# The walk-through: the fenced block after the marker comment in spack/README.md.
mapfile -t walkthrough < <(awk '/^<!-- spack\/test-offline.sh runs the next block/ {marked = 1; next}
  marked && /^```/ {if (inside) exit; inside = 1; next}
  inside && !/^[[:space:]]*(#|$)/ {print}' "$checkout/spack/README.md")
((${#walkthrough[@]} > 5)) || fail "no walk-through block found in spack/README.md"

# A new user: a fresh clone, and nothing of the caller's Spack, Kokkos or home directory.
clone=$tmp/zerotrain
git clone -q "$checkout" "$clone"
git -C "$clone" rev-parse -q --verify refs/heads/main >/dev/null ||
  fail "the clone has no main branch (the recipe builds zerotrain@main)"
commit=$(git -C "$clone" rev-parse HEAD)
unset Kokkos_ROOT ZT_DEPS_PREFIX SPACK_PYTHON SPACK_DISABLE_LOCAL_CONFIG
export HOME=$tmp/home
export SPACK_USER_CONFIG_PATH=$tmp/spack-user SPACK_USER_CACHE_PATH=$tmp/spack-cache
export SPACK_SYSTEM_CONFIG_PATH=$tmp/spack-system # empty: ignore the machine's /etc/spack
# Keep the caller's Spack tree clean: installs, source cache and stages go under $tmp too. The
# user configuration directory must exist, or `spack repo add` writes into $SPACK_ROOT/etc/spack.
install_root=$tmp/spack-opt
cat >"$SPACK_USER_CONFIG_PATH/config.yaml" <<EOF
config:
  install_tree:
    root: $install_root
  source_cache: $tmp/spack-source-cache
  build_stage: [$tmp/spack-stage]
  test_stage: $tmp/spack-test-stage
EOF

# The network guard: an HTTP proxy on localhost that answers nothing and logs each request line
# (a CONNECT names the host), so a fetch that fails over quietly to another source still shows.
network_log=$tmp/network.log
: >"$network_log"
python3 - "$network_log" "$tmp/proxy-port" <<'PY' &
import socket, sys
log = open(sys.argv[1], "a", buffering=1)
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(16)
with open(sys.argv[2], "w") as port_file:
    port_file.write(str(server.getsockname()[1]))
while True:
    connection, _ = server.accept()
    connection.settimeout(5)
    try:
        request = connection.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
    except OSError:
        request = "(connection without a request)"
    log.write((request or "(empty request)") + "\n")
    connection.close()
PY
listener_pid=$!
for _ in $(seq 50); do [[ -s $tmp/proxy-port ]] && break; sleep 0.1; done
[[ -s $tmp/proxy-port ]] || fail "the proxy listener did not start"
proxy=http://127.0.0.1:$(cat "$tmp/proxy-port")
proxy_vars=(http_proxy https_proxy ftp_proxy all_proxy HTTP_PROXY HTTPS_PROXY FTP_PROXY ALL_PROXY)
# The caller's proxy settings stay for apt and pip (they may need them).
saved_proxies=()
for name in "${proxy_vars[@]}" no_proxy NO_PROXY; do
  [[ -n ${!name+set} ]] && saved_proxies+=("$name=${!name}")
done
guard_network() {
  local name
  for name in "${proxy_vars[@]}"; do export "$name=$proxy"; done
  unset no_proxy NO_PROXY
}
unguard_network() {
  local setting
  unset "${proxy_vars[@]}" no_proxy NO_PROXY
  for setting in "${saved_proxies[@]}"; do export "${setting?}"; done
}

allowed_builds=" zerotrain compiler-wrapper gcc-runtime "
# Every package with a prefix in the throwaway install tree was built by Spack.
check_builds() {
  local name prefix
  while read -r name prefix; do
    [[ $prefix == "$install_root"/* ]] || continue
    [[ $allowed_builds == *" $name "* ]] || fail "$1: Spack built $name ($prefix): an external is missing"
  done < <("$SPACK_ROOT/bin/spack" find --format '{name} {prefix}' 2>/dev/null || true)
}

# Runs one README line in this shell (exports, `source` and `spack load` must persist), from the
# top of the clone, with its output in a log; fails loudly on an error or a network request.
step=0
run_line() {
  local line=$1 log status start
  step=$((step + 1))
  log=$logs/$(printf '%02d' "$step").log
  start=$SECONDS
  say "[$step] $line"
  # apt (setup-deps.sh) and pip are the only steps allowed to reach a registry.
  if [[ $line == *setup-deps.sh* || $line == *"pip install"* ]]; then
    unguard_network
  else
    guard_network
  fi
  cd "$clone"
  set +eu # the README's lines run as typed in an interactive shell (setup-env.sh needs +u)
  eval "$line" >"$log" 2>&1
  status=$?
  set -eu
  unguard_network
  if ((status != 0)); then
    tail -n 40 "$log" >&2
    fail "[$step] exited with $status: $line (log: $log)"
  fi
  if [[ -s $network_log ]]; then
    sed 's/^/    /' "$network_log" >&2
    fail "[$step] went to the network: $line"
  fi
  check_builds "[$step]"
  say "    ok, $((SECONDS - start)) s"
}

for line in "${walkthrough[@]}"; do
  run_line "$line"
  # The check of `spack load zerotrain && zerotrain --version`: the source line names the spec
  # and the commit of the clone, not the stage directory Spack has deleted.
  if [[ $line == *"zerotrain --version"* ]]; then
    version_log=$logs/$(printf '%02d' "$step").log
    grep -q "^zerotrain .* (git ${commit:0:12}" "$version_log" ||
      fail "--version does not name commit ${commit:0:12}: $(head -n 1 "$version_log")"
    source_line=$(grep '^  source:    ' "$version_log") || fail "--version has no source line"
    [[ $source_line =~ ^"  source:    spack zerotrain@main/"[a-z0-9]{7}", commit $commit of file://$clone"$ ]] ||
      fail "--version's source line is not the spec and commit: '$source_line'"
    say "    $source_line"
  fi
done

# The environment built the clone's working tree in place (spack develop), into its view.
view_zerotrain=$clone/spack/environments/cpu/.spack-env/view/bin/zerotrain
if [[ -x $view_zerotrain ]]; then
  source_line=$("$view_zerotrain" --version | grep '^  source:    ') || fail "no source line"
  [[ $source_line =~ ^"  source:    spack zerotrain@main/"[a-z0-9]{7}", develop build (sources in $clone)"$ ]] ||
    fail "the environment's --version source line: '$source_line'"
  say "environment build: $source_line"
fi

# Build-time test results of each zerotrain that was installed.
while read -r prefix; do
  summary=$(grep -h 'tests passed' "$prefix/.spack/install-time-test-log.txt" 2>/dev/null || true)
  say "$prefix: ${summary:-no ctest summary}"
  [[ $summary == "100% tests passed"* ]] || fail "build-time tests of $prefix did not all pass"
done < <("$SPACK_ROOT/bin/spack" find --format '{prefix}' zerotrain)

# The top-level README's Spack section must not document a command that was not run here
# (comments and the CUDA line aside: that one is only concretized below).
ran=$(printf '%s\n' "${walkthrough[@]}" | sed 's/[[:space:]]*#.*//')
while read -r command; do
  grep -qxF -- "$command" <<<"$ran" || fail "README.md's '$command' is not in spack/README.md's walk-through"
done < <(awk '/^## Installing with Spack/ {section = 1; next} section && /^## / {exit}
  section && /^```/ {inside = !inside; next}
  section && inside {sub(/[[:space:]]*#.*/, ""); if ($0 != "" && $0 !~ /\+cuda/) print}' "$checkout/README.md")

# With a CUDA toolkit in the generated scope, the CUDA build concretizes to externals too.
if grep -q '^  cuda:' "$clone/spack/config/site/packages.yaml"; then
  run_line "spack -C spack/config/site spec zerotrain+cuda cuda_arch=90"
  cuda_log=$logs/$(printf '%02d' "$step").log
  # Nodes Spack would build are the ones not marked [e] (external).
  built=$(grep -E '^ - ' "$cuda_log" | sed -E 's/^ -[[:space:]]+\^?([^@[:space:]]+).*/\1/' | sort -u | tr '\n' ' ')
  for name in $built; do
    [[ $allowed_builds == *" $name "* ]] || fail "zerotrain+cuda would build $name"
  done
  say "    zerotrain+cuda builds only: $built"
fi

say "PASS in $((SECONDS - started)) s"
