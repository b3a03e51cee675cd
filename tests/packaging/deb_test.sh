#!/usr/bin/env bash
# Builds the Debian package (cpack), checks it (lintian, systemd-analyze verify), installs it
# with dpkg, runs the installed binaries, purges it and checks that nothing of it is left.
#
#   deb_test.sh BUILD_DIR
#
# Needs root and dpkg; exits 77 (skipped) without them, and when this machine already has
# tamma-worker installed or state of its own under /etc/tamma-worker or /var/lib: the test
# must never purge a real installation. Whatever happens, the trap purges what this test
# installed and removes the system user it caused to be made, so a CI machine is left as it
# was.
set -euo pipefail

build=${1:?usage: deb_test.sh BUILD_DIR}
package=tamma-worker
state_paths=(/etc/tamma-worker /var/lib/tamma-worker /var/lib/tamma-orchestrator)

skip() {
  echo "SKIPPED: $*"
  exit 77
}
fail() {
  echo "FAILED: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || skip "needs root (dpkg -i)"
for tool in dpkg dpkg-deb dpkg-query cpack; do
  command -v "$tool" >/dev/null || skip "no $tool here"
done
for tool in lintian systemd-analyze; do
  command -v "$tool" >/dev/null || fail "$tool is missing: run scripts/setup.sh"
done

# One run at a time on a machine (two would install and purge the same package).
lock_dir=/run/lock
[ -d "$lock_dir" ] || lock_dir=/tmp
exec 9>"$lock_dir/tamma-deb-test.lock"
flock -w 600 9 || fail "another deb_test.sh holds $lock_dir/tamma-deb-test.lock"

status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
if [ -n "$status" ] && [ "$status" != not-installed ]; then
  skip "$package is already on this machine ($status); not touching it"
fi
for path in "${state_paths[@]}"; do
  [ ! -e "$path" ] || skip "$path exists on this machine; not touching it"
done

user_existed=no
getent passwd tamma-orchestrator >/dev/null && user_existed=yes
work=$(mktemp -d /tmp/tamma-deb-test.XXXXXX)
installed_by_us=no

worker_pid=
orchestrator_pid=
cleanup() {
  local code=$?
  set +e
  # Only the processes this script started.
  for pid in $worker_pid $orchestrator_pid; do
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [ "$installed_by_us" = yes ]; then
    local now
    now=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null)
    if [ -n "$now" ] && [ "$now" != not-installed ]; then
      echo "cleanup: purging $package (state $now)"
      dpkg_locked --purge "$package" >/dev/null
    fi
    # Only what this run made: the paths were checked absent before the install.
    rm -rf "${state_paths[@]}"
  fi
  if [ "$user_existed" = no ] && getent passwd tamma-orchestrator >/dev/null; then
    userdel tamma-orchestrator 2>/dev/null
    getent group tamma-orchestrator >/dev/null && groupdel tamma-orchestrator 2>/dev/null
  fi
  rm -rf "$work"
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# dpkg refuses at once while apt or another dpkg holds its lock: wait for it instead.
dpkg_locked() {
  local tries=0 out
  while :; do
    if out=$(dpkg "$@" 2>&1); then
      printf '%s\n' "$out"
      return 0
    fi
    if grep -q "lock" <<<"$out" && [ $tries -lt 120 ]; then
      tries=$((tries + 1))
      sleep 1
      continue
    fi
    printf '%s\n' "$out" >&2
    return 1
  done
}

echo "== cpack"
cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/out" >"$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log"; fail "cpack"; }
debs=("$work"/out/*.deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || fail "cpack made no single .deb: ${debs[*]}"
deb=${debs[0]}
echo "built $(basename "$deb")"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"

echo "== lintian"
# Errors and warnings fail; the overrides (packaging/debian/lintian-overrides) say why each
# accepted tag is accepted.
lintian --fail-on error,warning --display-info "$deb" || fail "lintian"

echo "== contents"
contents=$(dpkg-deb --contents "$deb" | awk '{print $6}')
for path in ./usr/bin/tamma-worker ./usr/bin/tamma-orchestrator ./etc/tamma-worker/config.json \
  ./etc/tamma-worker/orchestrator.env ./lib/systemd/system/tamma-worker.service \
  ./lib/systemd/system/tamma-orchestrator.service ./usr/share/doc/tamma-worker/copyright \
  ./usr/share/doc/tamma-worker/examples/apparmor.d/tamma-worker; do
  grep -qx -- "$path" <<<"$contents" || fail "the package lacks $path"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles >"$work/conffiles"
diff -u <(printf '/etc/tamma-worker/config.json\n/etc/tamma-worker/orchestrator.env\n') \
  "$work/conffiles" || fail "conffiles"

echo "== dpkg -i"
installed_by_us=yes
dpkg_locked -i "$deb" || fail "dpkg -i"
[ "$(dpkg-query -W -f='${db:Status-Status}' "$package")" = installed ] || fail "not installed"
dpkg -L "$package" | sort >"$work/files"

echo "== systemd-analyze verify"
# With man-db, also that the units' Documentation=man:... pages are installed.
man_check=--man=no
command -v man >/dev/null && man_check=--man=yes
verify=$(systemd-analyze verify "$man_check" /lib/systemd/system/tamma-worker.service \
  /lib/systemd/system/tamma-orchestrator.service 2>&1) || {
  printf '%s\n' "$verify"
  fail "systemd-analyze verify"
}
printf '%s\n' "$verify"
echo "systemd-analyze verify $man_check: no errors"

echo "== what postinst made"
getent passwd tamma-orchestrator >/dev/null || fail "no tamma-orchestrator user"
for token in admin-token registration-token; do
  file=/etc/tamma-worker/$token
  [ -s "$file" ] || fail "$file is missing or empty"
  [ "$(stat -c %a:%U "$file")" = 600:root ] || fail "$file is $(stat -c %a:%U "$file"), not 600:root"
done

echo "== the installed binaries"
/usr/bin/tamma-worker --version
/usr/bin/tamma-orchestrator --version
out=$(cd "$work" && /usr/bin/tamma-worker run --result "$work/result.json" -- /bin/echo hi 2>&1) ||
  { printf '%s\n' "$out"; fail "tamma-worker run exited $?"; }
printf '%s\n' "$out"
grep -qx hi <<<"$out" || fail "tamma-worker run did not print hi"
grep -q '"status": "succeeded"' "$work/result.json" || fail "the result is not succeeded"
/usr/bin/tamma-worker doctor || fail "tamma-worker doctor exited $?"
# The worker reads the packaged config.json: a daemon without a token says so and exits 2.
set +e
/usr/bin/tamma-worker start >"$work/start.log" 2>&1
code=$?
set -e
[ $code -eq 2 ] && grep -q "registration-token" "$work/start.log" ||
  { cat "$work/start.log"; fail "tamma-worker start without a token exited $code"; }
# ... and with the credential as systemd hands it over, it reads it (and then fails to reach
# the orchestrator at 127.0.0.1:8080 from config.json: only the token's source matters here).
mkdir -m 700 "$work/credentials"
cp /etc/tamma-worker/registration-token "$work/credentials/registration-token"
set +e
CREDENTIALS_DIRECTORY=$work/credentials timeout -s INT -k 10 3 /usr/bin/tamma-worker start \
  --orchestrator http://127.0.0.1:1 >"$work/start.log" 2>&1
code=$?
set -e
if grep -q "no registration token" "$work/start.log"; then
  cat "$work/start.log"
  fail "the worker did not read \$CREDENTIALS_DIRECTORY/registration-token"
fi
echo "the daemon refuses to start without a token and reads \$CREDENTIALS_DIRECTORY (exit $code)"

echo "== the services as their units run them"
# No systemd here: the units' user, environment file, state directory and credentials by hand.
chmod 711 "$work"
creds=$work/orchestrator-credentials
mkdir -m 700 "$creds"
cp /etc/tamma-worker/admin-token /etc/tamma-worker/registration-token "$creds/"
chown -R tamma-orchestrator:tamma-orchestrator "$creds"  # as systemd hands them to User=
install -d -o tamma-orchestrator -g tamma-orchestrator -m 750 /var/lib/tamma-orchestrator
(
  set -a
  . /etc/tamma-worker/orchestrator.env
  set +a
  # Port 0 rather than TAMMA_LISTEN's 8080, which may be taken on this machine.
  exec setpriv --reuid tamma-orchestrator --regid tamma-orchestrator --init-groups \
    env TAMMA_ADMIN_TOKEN_FILE="$creds/admin-token" \
    TAMMA_REGISTRATION_TOKEN_FILE="$creds/registration-token" \
    /usr/bin/tamma-orchestrator serve --listen 127.0.0.1:0 $TAMMA_SERVE_ARGS
) >"$work/orchestrator.log" 2>&1 &
orchestrator_pid=$!
port=
for _ in $(seq 1 100); do
  port=$(sed -n 's|^tamma-orchestrator listening on http://127.0.0.1:\([0-9]*\)$|\1|p' \
    "$work/orchestrator.log")
  [ -n "$port" ] && break
  kill -0 "$orchestrator_pid" 2>/dev/null || break
  sleep 0.2
done
[ -n "$port" ] || { cat "$work/orchestrator.log"; fail "the orchestrator did not start"; }
[ "$(stat -c %U /var/lib/tamma-orchestrator/tamma.db)" = tamma-orchestrator ] ||
  fail "the orchestrator's database is not its user's"
CREDENTIALS_DIRECTORY=$work/credentials /usr/bin/tamma-worker start --drain-timeout 10m \
  --orchestrator "http://127.0.0.1:$port" >"$work/worker.log" 2>&1 &
worker_pid=$!
printf '{"type": "command", "steps": [{"name": "hi", "run": "echo from-the-package"}]}\n' \
  >"$work/task.json"
if ! TAMMA_ORCHESTRATOR_URL=http://127.0.0.1:$port TAMMA_TOKEN=$(cat /etc/tamma-worker/admin-token) \
  timeout 120 /usr/bin/tamma-orchestrator submit "$work/task.json" --wait >"$work/submit.log" 2>&1; then
  cat "$work/submit.log" "$work/worker.log" "$work/orchestrator.log"
  fail "the task submitted to the packaged orchestrator did not succeed"
fi
cat "$work/submit.log"
kill -TERM "$worker_pid"
wait "$worker_pid" || { cat "$work/worker.log"; fail "the worker's drain exited $?"; }
worker_pid=
kill -TERM "$orchestrator_pid"
wait "$orchestrator_pid" || { cat "$work/orchestrator.log"; fail "the orchestrator exited $?"; }
orchestrator_pid=
echo "the orchestrator (as tamma-orchestrator) ran a task on the worker, both with their credentials"

echo "== dpkg --purge"
dpkg_locked --purge "$package" || fail "dpkg --purge"
installed_by_us=no
left=()
while read -r path; do
  [ "$path" = /. ] && continue
  # Directories shared with other packages (/usr/bin, /etc, ...) stay; the package's own go.
  if [ -d "$path" ]; then  # also /lib, a symlink to usr/lib on merged-/usr systems
    case "$path" in
      /etc/tamma-worker | /usr/share/doc/tamma-worker) [ ! -e "$path" ] || left+=("$path") ;;
    esac
  elif [ -e "$path" ] || [ -L "$path" ]; then
    left+=("$path")
  fi
done <"$work/files"
for path in "${state_paths[@]}"; do
  [ ! -e "$path" ] || left+=("$path")
done
[ ${#left[@]} -eq 0 ] || fail "left after purge: ${left[*]}"
now=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
[ -z "$now" ] || [ "$now" = not-installed ] || fail "dpkg still knows $package: $now"
echo "PASSED: built, linted, installed, ran and purged $(basename "$deb")"
