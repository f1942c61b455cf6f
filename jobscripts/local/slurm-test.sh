#!/usr/bin/env bash
# End-to-end test of jobscripts/slurm/train-cpu.sbatch and of the job array of
# jobscripts/slurm/aio-sweep.sbatch on a real one-node Slurm started here: munged, slurmctld and
# slurmd run as root from a temporary directory (their own config, key, socket, spool, state and
# logs; no cgroups, so it works in containers), the training script is submitted with 2 tasks and
# a short run, and its output and summary are checked; then the same job again, stopped after its
# first step by `scancel --signal=USR1` (Slurm's warning before the time limit, by hand): it must
# checkpoint, requeue itself, resume from the checkpoint under the same job id and finish with
# the losses of the uninterrupted job, bit for bit; then a 3-task aio sweep of a small grid, its
# CSVs and its merge. Every daemon it started is stopped and the directory removed on exit.
# Skips (exit 0) when not root, or when Slurm is missing and cannot be installed.
#   jobscripts/local/slurm-test.sh                 # uses build/app/zerotrain
#   ZT_BUILD_DIR=build-x jobscripts/local/slurm-test.sh
#   ZT_SLURM_TEST_KEEP=1 ...         # keep the temporary directory (logs, job output)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=${ZT_BUILD_DIR:-$repo/build}
zerotrain=${ZT_BIN:-$build_dir/app/zerotrain}
# 80 steps of the default model: about 10 s on 2 ranks of 1 core, long enough to stop the
# second job in the middle.
steps=${ZT_SLURM_TEST_STEPS:-80}
started=$SECONDS

say() { echo "slurm-test: $*"; }
fail() {
  echo "slurm-test: FAIL: $*" >&2
  exit 1
}

if [[ $(id -u) -ne 0 ]]; then
  say "SKIP: starting slurmctld, slurmd and munged needs root"
  exit 0
fi
# libpmix-dev: Slurm's mpi_pmix plugin dlopens pmix2/lib/libpmix.so, the unversioned name
# only the -dev package ships.
packages=(slurmctld slurmd slurm-client munge libpmix-dev)
need_install=0
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_install=1
done
if ((need_install)); then
  say "installing ${packages[*]}"
  if ! DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q --no-install-recommends \
    "${packages[@]}" >/dev/null 2>&1; then
    say "SKIP: Slurm is not installed and apt-get could not install ${packages[*]}"
    exit 0
  fi
fi
[[ -x $zerotrain ]] || fail "no executable $zerotrain (build first, or set ZT_BUILD_DIR / ZT_BIN)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/zt-slurm.XXXXXX")
chmod 711 "$tmp" # munged wants its socket directory searchable by all
pids=()
# The processes whose working directory is under $1.
processes_in() {
  local proc cwd
  for proc in /proc/[0-9]*; do
    cwd=$(readlink "$proc/cwd" 2>/dev/null) || continue
    [[ $cwd == "$1" || $cwd == "$1"/* ]] && echo "${proc#/proc/}"
  done
  return 0
}
cleanup() {
  local rc=$?
  set +e
  # Jobs first (their slurmstepd processes belong to slurmd), then the daemons, newest first.
  if [[ -S $tmp/munge.socket ]] && ((${#pids[@]} > 1)); then
    timeout 10 scancel --quiet --full --partition=zt >/dev/null 2>&1
    for _ in $(seq 20); do
      [[ -z $(timeout 5 squeue -h -p zt 2>/dev/null) ]] && break
      sleep 0.5
    done
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "daemon $pid ignored SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  # What the jobs left (slurmstepd, tasks) works in the temporary directory: wait, then kill.
  for _ in $(seq 25); do
    mapfile -t leftover < <(processes_in "$tmp")
    ((${#leftover[@]})) || break
    sleep 0.2
  done
  if ((${#leftover[@]})); then
    say "killing processes left in $tmp: ${leftover[*]}"
    kill -KILL "${leftover[@]}" 2>/dev/null
  fi
  if ((rc != 0)); then
    # The daemons' stderr repeats their log; it matters when they stop before opening the log.
    for log in "$tmp"/*.stderr "$tmp"/*.log "$tmp"/job/*.out; do
      [[ -f $log ]] || continue
      echo "---- ${log##*/} (last 20 lines)" >&2
      tail -n 20 "$log" >&2
    done
  fi
  if [[ -n ${ZT_SLURM_TEST_KEEP:-} ]]; then say "kept $tmp"; else rm -rf "$tmp"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two free TCP ports for slurmctld and slurmd, so that a Slurm already on the machine is left alone.
free_ports=$(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)
read -r ctld_port slurmd_port <<<"$free_ports"

host=$(hostname -s)
# The CPUs this process may use (nproc would also obey OMP_NUM_THREADS). On a 1-CPU machine the
# node claims 2 (config_overrides below) so that the 2-task job fits; no binding then.
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
task_plugin=task/affinity
if ((cpus < 2)); then
  cpus=2
  task_plugin=task/none
fi
# 90% of the memory: slurmd drains a node that has less than slurm.conf claims.
memory_mib=$(awk '/^MemTotal:/ {print int($2 * 0.9 / 1024)}' /proc/meminfo)
mkdir -p "$tmp/state" "$tmp/spool" "$tmp/run" "$tmp/tmpfs"

# munged with its own key, socket, seed, pid and log: the machine's munge (if any) is untouched.
dd if=/dev/urandom of="$tmp/munge.key" bs=1024 count=1 status=none
chmod 400 "$tmp/munge.key"
munged --foreground --force --key-file="$tmp/munge.key" --socket="$tmp/munge.socket" \
  --pid-file="$tmp/munged.pid" --seed-file="$tmp/munge.seed" --log-file="$tmp/munged.log" \
  >>"$tmp/munged.log" 2>&1 &
pids+=($!)

# slurm.conf: one node with this machine's CPUs and memory, one partition. proctrack/linuxproc
# and task/affinity track and bind tasks without cgroups (so it works in containers; see
# cgroup.conf below); config_overrides: slurmd trusts this file over the hardware it detects (a
# container's CPU limit); no accounting database. A requeued job may start again only
# cred_expire + 1 s after its requeue (121 s by default) and then waits for the scheduler's next
# pass (sched_interval, 60 s by default): 10 s and 1 s here keep the requeue test short.
cat >"$tmp/slurm.conf" <<CONF
ClusterName=zt-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge.socket,cred_expire=10
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/run/slurmctld.pid
SlurmdPidFile=$tmp/run/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=$task_plugin
SlurmdParameters=config_overrides
TmpFS=$tmp/tmpfs
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$memory_mib State=UNKNOWN
PartitionName=zt Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# slurmd 22.05 initialises a cgroup plugin even when nothing uses it, and fails where no cgroup
# file system is mounted (a chroot such as fresh-debian.sh's, some containers); the v1 plugin
# pointed at an empty directory of our own starts anywhere and is never used.
mkdir -p "$tmp/cgroup"
cat >"$tmp/cgroup.conf" <<CGROUP
CgroupPlugin=cgroup/v1
CgroupMountpoint=$tmp/cgroup
CgroupAutomount=no
CGROUP
export SLURM_CONF=$tmp/slurm.conf

for _ in $(seq 50); do
  [[ -S $tmp/munge.socket ]] && break
  sleep 0.1
done
[[ -S $tmp/munge.socket ]] || fail "munged did not start"

slurmctld -D -i -f "$SLURM_CONF" >"$tmp/slurmctld.stderr" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" -N "$host" >"$tmp/slurmd.stderr" 2>&1 &
pids+=($!)

# Wait (at most 60 s) for the node to report idle.
state=
for _ in $(seq 120); do
  state=$(timeout 5 sinfo -h -n "$host" -o %T 2>/dev/null || true)
  [[ $state == idle ]] && break
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || fail "daemon $pid exited during start-up"; done
  sleep 0.5
done
[[ $state == idle ]] || fail "node $host is '${state:-unknown}' after 60 s, not idle"
say "Slurm $(sinfo -V | awk '{print $2}') up in $((SECONDS - started)) s: node $host, $cpus CPUs, ${memory_mib} MiB"

# srun --mpi=pmix must list the plugin and wire up tasks (SLURM_LOCALID 0 and 1 on one node).
timeout 10 srun --mpi=list 2>&1 | grep -q pmix || fail "srun --mpi=list has no pmix"
localids=$(timeout 60 srun --mpi=pmix -N 1 -n 2 -l printenv SLURM_LOCALID 2>&1 | sort | tr '\n' ' ')
[[ $localids == "0: 0 1: 1 " ]] || fail "srun --mpi=pmix -n 2: local ids '$localids', expected '0: 0 1: 1'"

# The job: 2 tasks of 1 CPU each, a short run, output and summary in the temporary directory.
# --time: the script asks for SIGUSR1 600 s before the time limit; a limit under 10 minutes
# would send it (and requeue the job) right after the start.
out=$tmp/job
mkdir -p "$out"
job_rc=0
job_id=$(ZT_BIN=$zerotrain ZT_STEPS=$steps ZT_OUTPUT_DIR=$out/run \
  timeout 240 sbatch --wait --parsable --partition=zt --nodes=1 --ntasks-per-node=2 \
  --cpus-per-task=1 --time=00:20:00 --chdir="$out" --output="$out/job-%j.out" \
  "$repo/jobscripts/slurm/train-cpu.sbatch") || job_rc=$?
job_id=${job_id%%;*}
log=$out/job-$job_id.out
if [[ -f $log ]]; then
  echo "---- job $job_id output (banner and steps)"
  grep -E '^(job |zerotrain |  (ranks|kokkos|run) |step |  final loss|srun|slurmstepd)' "$log" || true
  echo "----"
fi
((job_rc != 124)) || fail "job $job_id did not finish within 240 s"
((job_rc == 0)) || fail "sbatch --wait of job $job_id exited $job_rc"
job_record=$(timeout 10 scontrol show job --oneliner "$job_id" || true)
job_state=$(grep -oE 'JobState=[A-Z_]+' <<<"$job_record" || true)
job_exit=$(grep -oE ' ExitCode=[0-9:]+' <<<"$job_record" || true)
[[ $job_state == JobState=COMPLETED && $job_exit == " ExitCode=0:0" ]] ||
  fail "job $job_id: ${job_state:-no state} ${job_exit:-no exit code}"

grep -qE "^  ranks        2 \(2 on this node\), launched by srun \(Slurm job $job_id\)$" "$log" ||
  fail "the banner does not say 2 ranks, 2 on this node, launched by srun in job $job_id"
grep -qE '^  placement    [^:]+: ranks 0,1 \(local 0,1\)$' "$log" ||
  fail "the banner does not place ranks 0,1 as local ranks 0,1 on one host"
grep -qE '^  kokkos .* 1 thread per rank' "$log" || fail "OMP_NUM_THREADS did not follow --cpus-per-task=1"
grep -qE "^step +$steps/$steps \| loss [0-9]" "$log" || fail "no loss reported for step $steps"
python3 - "$out/run/summary.json" "$steps" <<'PY' || fail "summary $out/run/summary.json is wrong"
import json, math, sys
summary = json.load(open(sys.argv[1]))
steps = int(sys.argv[2])
assert summary["world_size"] == 2, summary["world_size"]
assert len(summary["losses"]) == steps, len(summary["losses"])
assert math.isfinite(summary["final_loss"]) and summary["final_loss"] > 0, summary["final_loss"]
assert len(summary["peak_bytes"]) == 2 if isinstance(summary["peak_bytes"], list) else True
# Ranks and local ranks as the application took them from MPI (one node: local = global).
placement = [(p["rank"], p["local_rank"], p["local_size"]) for p in summary["placement"]]
assert placement == [(0, 0, 2), (1, 1, 2)], placement
assert summary["launcher"].startswith("srun"), summary["launcher"]
print(f"slurm-test: summary: world size 2, {steps} losses, final loss {summary['final_loss']:.4f}")
PY
say "job $job_id passed: 2 ranks by srun --mpi=pmix, exit 0"

# Preemption: the same job again, its output and checkpoint directories left to the script
# (runs/ and checkpoints/<job name>-<job id> in $out). After its first step scancel
# --signal=USR1 signals the ranks as --signal=USR1@600 would: they checkpoint at the next step
# boundary and exit 0, the script requeues the job, Slurm holds it cred_expire + 1 s and starts
# it again under the same id, the script finds the checkpoint and resumes (--load-dir), and the
# run ends at $steps with the uninterrupted job's losses. The output file is appended to by
# both runs (#SBATCH --open-mode=append in the script; Slurm would truncate it).
requeue_started=$SECONDS
requeue_id=$(ZT_BIN=$zerotrain ZT_STEPS=$steps timeout 30 sbatch --parsable --partition=zt \
  --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --time=00:20:00 --chdir="$out" \
  --output="$out/job-%j.out" "$repo/jobscripts/slurm/train-cpu.sbatch") ||
  fail "sbatch of the requeue job failed"
requeue_id=${requeue_id%%;*}
requeue_log=$out/job-$requeue_id.out
# Wait (at most 90 s) for the first step's progress line.
for _ in $(seq 180); do
  grep -qE '^step +1/' "$requeue_log" 2>/dev/null && break
  sleep 0.5
done
grep -qE '^step +1/' "$requeue_log" 2>/dev/null || fail "job $requeue_id printed no step within 90 s"
timeout 10 scancel --signal=USR1 "$requeue_id" || fail "scancel --signal=USR1 $requeue_id failed"
# Follow the job to its end (at most 150 s), noting each state it passes through.
states=()
state=
record=
for _ in $(seq 300); do
  record=$(timeout 5 scontrol show job --oneliner "$requeue_id" 2>/dev/null || true)
  previous=$state
  state=$(grep -oE 'JobState=[A-Z_]+' <<<"$record" || true)
  state=${state#JobState=}
  if [[ -n $state && $state != "$previous" ]]; then states+=("$state"); fi
  [[ $state == COMPLETED || $state == FAILED || $state == CANCELLED || $state == TIMEOUT ]] && break
  sleep 0.5
done
echo "---- job $requeue_id output (the script's lines, stop, resume, checkpoints, first and last steps)"
grep -E "^(job |  (resume|stopping|checkpoint) |step +(1|$steps)/)" "$requeue_log" || true
echo "---- job $requeue_id states: ${states[*]}"
[[ $state == COMPLETED ]] || fail "job $requeue_id is ${state:-unseen} after 150 s, not COMPLETED"
grep -q ' ExitCode=0:0' <<<"$record" || fail "job $requeue_id: $(grep -oE ' ExitCode=[0-9:]+' <<<"$record")"
grep -q ' Restarts=1 ' <<<"$record" || fail "job $requeue_id: $(grep -oE 'Restarts=[0-9]+' <<<"$record"), not Restarts=1"
[[ " ${states[*]} " == *" PENDING "* ]] || fail "job $requeue_id was never seen pending again after the requeue"
stop_step=$(grep -oE 'SIGUSR1 received: checkpointing at step [0-9]+' "$requeue_log" | grep -oE '[0-9]+$' || true)
[[ -n $stop_step ]] || fail "job $requeue_id: no 'SIGUSR1 received: checkpointing at step N' line"
requeue_save=$out/checkpoints/zero-train-cpu-$requeue_id
grep -q "^job $requeue_id: stopped by SIGUSR1 after $stop_step steps, checkpoint in checkpoints/zero-train-cpu-$requeue_id: requeueing" "$requeue_log" ||
  fail "job $requeue_id: the script did not say it requeued after $stop_step steps"
grep -q "^job $requeue_id: resuming from checkpoints/zero-train-cpu-$requeue_id/global_step$stop_step (restart 1)$" "$requeue_log" ||
  fail "job $requeue_id: the requeued run did not say it resumes from global_step$stop_step"
(($(grep -c "^job $requeue_id on " "$requeue_log") == 2)) || fail "job $requeue_id: its output does not show two runs"
[[ $(cat "$requeue_save/latest" 2>/dev/null) == "global_step$steps" ]] ||
  fail "$requeue_save/latest is '$(cat "$requeue_save/latest" 2>/dev/null)', not global_step$steps"
[[ -d $requeue_save/global_step$stop_step ]] || fail "no $requeue_save/global_step$stop_step"
python3 - "$out/run/summary.json" "$out/runs/zero-train-cpu-$requeue_id/summary.json" "$steps" \
  "$stop_step" "$requeue_id" <<'PY' || fail "the requeued job's summary does not continue the uninterrupted job's"
import json, sys
whole, resumed = (json.load(open(path)) for path in sys.argv[1:3])
steps, stop, job = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
assert 1 <= stop < steps, stop
assert resumed["completed"] is True and resumed["stopped_by_signal"] is None, resumed["completed"]
assert resumed["first_step"] == stop + 1, resumed["first_step"]
origin = resumed["resumed_from"]
assert origin["tag"] == f"global_step{stop}" and origin["step"] == stop, origin
assert origin["directory"] == f"checkpoints/zero-train-cpu-{job}/global_step{stop}", origin
assert origin["world_size"] == 2, origin
assert resumed["checkpoints"][-1].endswith(f"global_step{steps}"), resumed["checkpoints"]
# Bit-identical: the same floats, not close ones (same config, same 2 ranks).
assert resumed["losses"] == whole["losses"][stop:], "the losses after the resume differ"
print(f"slurm-test: requeue: stopped at step {stop}, resumed at {stop + 1}, "
      f"{len(resumed['losses'])} losses equal to the uninterrupted job's")
PY
say "job $requeue_id passed: SIGUSR1, checkpoint at step $stop_step, requeued (Restarts=1), resumed, completed in $((SECONDS - requeue_started)) s"

# The aio sweep (jobscripts/slurm/aio-sweep.sbatch): a 3-task job array splits a grid of 8
# settings of a 16 MiB file; the tasks are --exclusive, so on the one node they take turns; the
# last merges. Submitted from $out, so the results go to its results/aio-sweep-<array job id>.
aio_path=$tmp/aio-nvme
mkdir -p "$aio_path"
aio_rc=0
aio_job=$(cd "$out" && ZT_BIN=$zerotrain timeout 240 sbatch --wait --parsable --partition=zt \
  --array=0-2 --time=00:05:00 --output="$out/aio-%A_%a.out" "$repo/jobscripts/slurm/aio-sweep.sbatch" \
  --path "$aio_path" --size 16MiB --block-sizes 128K,1M --queue-depths 8,32 --threads 1,2) || aio_rc=$?
aio_job=${aio_job%%;*}
for log in "$out"/aio-"$aio_job"_*.out; do
  [[ -f $log ]] || continue
  echo "---- ${log##*/} (the script's lines and the aio blocks)"
  grep -E '^(aio-sweep|\{"aio"|node |overall)' "$log" || true
done
echo "----"
((aio_rc != 124)) || fail "aio sweep $aio_job did not finish within 240 s"
((aio_rc == 0)) || fail "sbatch --wait of the aio sweep $aio_job exited $aio_rc"
aio_record=$(timeout 10 scontrol show job --oneliner "$aio_job" || true)
completed=$(grep -c 'JobState=COMPLETED .* ExitCode=0:0' <<<"$aio_record" || true)
((completed == 3)) || fail "aio sweep $aio_job: $completed of 3 array tasks completed with exit 0"
results=$out/results/aio-sweep-$aio_job
[[ -f $results/merged.txt && -f $results/best.json ]] || fail "no merge in $results"
[[ -z $(ls -A "$aio_path") ]] || fail "the sweep left files in $aio_path: $(ls -A "$aio_path")"
python3 - "$results" "$host" "$repo/jobscripts/slurm/aio-sweep-merge.py" <<'PY' ||
import csv, glob, json, os, subprocess, sys
results, host, merge = sys.argv[1:]
parts = sorted(glob.glob(os.path.join(results, "part-*-of-3.csv")))
assert len(parts) == 3, parts
rows = [row for part in parts for row in csv.DictReader(open(part))]
assert len(rows) == 8, len(rows)
assert {row["node"] for row in rows} == {host}, {row["node"] for row in rows}
assert all(float(row["read_gbps"]) > 0 and float(row["write_gbps"]) > 0 for row in rows)
settings = {(r["block_size"], r["queue_depth"], r["threads"]) for r in rows}
assert len(settings) == 8, settings  # the parts split the grid: each setting once
merged = open(os.path.join(results, "merged.txt")).read()
assert f"aio-sweep-merge: 8 rows from 3 files, 1 node: {host}" in merged, merged
blocks = [json.loads(line) for line in merged.splitlines() if line.startswith('{"aio"')]
assert len(blocks) == 2, merged  # the node's and the overall best
for block in blocks:
    aio = block["aio"]
    assert type(aio["block_size"]) is int and type(aio["intra_op_parallelism"]) is int, aio
    assert type(aio["single_submit"]) is bool and type(aio["overlap_events"]) is bool, aio
best = json.load(open(os.path.join(results, "best.json")))
assert best["overall"]["aio"] == blocks[-1]["aio"], best
again = subprocess.run([sys.executable, merge, results], capture_output=True, text=True, check=True)
assert again.stdout == merged, "merging again by hand gave another result"
print(f"slurm-test: aio sweep: 3 array tasks, 8 settings on {host}, best {blocks[-1]['aio']}")
PY
  fail "the aio sweep's results in $results are wrong"
say "PASS in $((SECONDS - started)) s (job $job_id: 2 ranks by srun --mpi=pmix; job $requeue_id: requeued on SIGUSR1 and resumed; aio sweep $aio_job: 3 array tasks merged)"
