#!/usr/bin/env bash
# Repeats a new user's first hour on a machine with nothing installed: builds a minimal
# Debian 12 (debootstrap --variant=minbase) in a temporary directory, puts this checkout in it
# (a git clone, or with --tarball the committed files without .git, as a release tarball has
# them), and runs the README's two Quick start commands there as root in a chroot.
# Prints each command's time and the tail of its log; exits non-zero if either fails.
# Needs root (chroot, mounts) and Debian's archive; takes about 15 minutes on 2 cores.
#
#   jobscripts/local/fresh-debian.sh [--tarball] [--keep]
#     --tarball  copy `git archive HEAD` instead of cloning (no .git, no git revision)
#     --keep     leave the chroot in place for a look afterwards (path printed at the end)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mode=clone
keep=0
for argument in "$@"; do
  case $argument in
    --tarball) mode=tarball ;;
    --keep) keep=1 ;;
    *) echo "usage: $0 [--tarball] [--keep]" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "fresh-debian: needs root (debootstrap, chroot, mounts)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/zt-fresh.XXXXXX")
root=$work/root
# shellcheck disable=SC2317  # both run from the EXIT trap
unmount_all() {
  for mount_point in dev/pts dev sys proc; do umount -l "$root/$mount_point" 2>/dev/null || true; done
}
# shellcheck disable=SC2317
cleanup() {
  unmount_all
  if [[ $keep -eq 1 ]]; then echo "fresh-debian: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

if ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
fi
# The mirror this machine's apt uses (the only network there may be).
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
echo "fresh-debian: debootstrap bookworm from $mirror into $root"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -n 20 "$work/debootstrap.log"; echo "fresh-debian: debootstrap failed" >&2; exit 1; }
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# A real machine knows its own name; without it every mpirun waits on DNS for the host name.
cp /etc/hosts "$root/etc/hosts"

project=/home/user/project
mkdir -p "$root$project"
if [[ $mode == clone ]]; then
  git clone -q "$repo" "$root$project"
else
  git -C "$repo" archive --format=tar HEAD | tar -x -C "$root$project"
fi
echo "fresh-debian: project copied as a $mode ($(git -C "$repo" rev-parse --short=12 HEAD))"

# The README's Quick start block holds exactly the two commands, in order.
mapfile -t commands < <(awk '/^## Quick start/ {section=1; next}
  section && /^```/ {if (inside) exit; inside=1; next}
  section && inside && NF && $1 !~ /^#/ {print}' "$repo/README.md")
if [[ ${#commands[@]} -ne 2 ]]; then
  echo "fresh-debian: README's Quick start holds ${#commands[@]} commands, not 2" >&2
  exit 1
fi

status=0
for index in 0 1; do
  command=${commands[$index]}
  log=$work/command-$index.log
  start=$(date +%s)
  set +e
  chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -c "cd $project && $command" >"$log" 2>&1
  rc=$?
  set -e
  echo "== $command: rc=$rc in $(($(date +%s) - start)) s (log $log)"
  tail -n 8 "$log"
  [[ $rc -eq 0 ]] || status=1
done
if [[ $status -ne 0 ]]; then keep=1; fi  # keep the logs of a failure
exit $status
