#!/usr/bin/env bash
# Coexistence of beacond with a real salt-minion and salt-master (Salt from tests/salt/setup.sh).
#
#   packaging/coexist-test.sh BEACOND_BINARY [SERIES...]     SERIES: 3006 3007 3008 (default: all)
#
# For each Salt series, with a throw-away master on 127.0.0.1 (tests/salt/master.py) and a
# salt-minion whose config dir holds the same beacons beacond would run (memusage, which Salt
# knows, and listening_ports, which only beacond knows):
#   A (control, no hand-over): salt-minion fires salt/beacon/<id>/memusage/ to the master and logs
#     "Unable to process beacon listening_ports" every loop_interval: the setup can fail;
#   B (with packaging/beacond.conf.example as minion.d/beacond.conf): salt-minion connects
#     (salt/minion/<id>/start reaches the master) and then, over 10 loop intervals, fires no beacon
#     event and logs no beacon warning; beacond --once on the same config dir runs memusage.
# The 10 s window in B is an observation period for an absence (nothing can be awaited there).
# Fails clearly when Salt is not installed, unless BEACOND_SKIP_SALT=1.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${1:?usage: coexist-test.sh BEACOND_BINARY [SERIES...]}
shift
SERIES=("$@")
[ ${#SERIES[@]} = 0 ] && SERIES=(3006 3007 3008)
CACHE=${BEACOND_SALT_CACHE:-$HOME/.cache/beacond/salt}
WINDOW=10
fails=0
pass() { printf 'PASS: coexist %s\n' "$*"; }
fail() { printf 'FAIL: coexist %s\n' "$*"; fails=$((fails + 1)); }

if [ "${BEACOND_SKIP_SALT:-0}" = 1 ]; then
    echo "SKIP: coexist (BEACOND_SKIP_SALT=1)"
    exit 0
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for SECONDS FILE PATTERN: until grep -E finds PATTERN in FILE, or the deadline.
wait_for() {
    local end=$((SECONDS + $1))
    while [ $SECONDS -lt $end ]; do
        grep -Eq "$3" "$2" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}

run_series() {
    local series=$1 venv=$CACHE/$1
    local py=$venv/bin/python
    if [ ! -x "$venv/bin/salt-minion" ]; then
        fail "$series: Salt $series is not installed in $venv: run tests/salt/setup.sh $series (or BEACOND_SKIP_SALT=1)"
        return
    fi
    local w
    w=$(mktemp -d "/tmp/salt-coexist-$series.XXXXXX")
    local id="coexist-$series-$$" ret pub
    ret=$(free_port)
    pub=$(free_port)
    local mpids=()
    cleanup_series() {
        for p in "${mpids[@]}"; do kill -- -"$p" 2>/dev/null; done
        for p in "${mpids[@]}"; do
            for _ in $(seq 50); do kill -0 -- -"$p" 2>/dev/null || break; sleep 0.1; done
            kill -9 -- -"$p" 2>/dev/null
        done
        "$py" tests/salt/master.py stop --root "$w/master" >/dev/null 2>&1
        rm -rf "$w"
    }
    if ! "$py" tests/salt/master.py start --root "$w/master" --ret-port "$ret" --publish-port "$pub" --log-level info >"$w/master.start" 2>&1; then
        cat "$w/master.start" >&2
        fail "$series: salt-master did not start"
        cleanup_series
        return
    fi
    setsid "$py" tests/salt/master.py events --root "$w/master" --tag-prefix salt/ --timeout 600 >"$w/events" 2>"$w/events.err" &
    mpids+=($!)
    if ! wait_for 60 "$w/events.err" '^listening'; then
        fail "$series: cannot subscribe to the master's events"
        cleanup_series
        return
    fi

    local etc=$w/etc
    mkdir -p "$etc/minion.d" "$w/m"
    cat >"$etc/minion" <<YAML
id: $id
master: 127.0.0.1
master_port: $ret
publish_port: $pub
root_dir: $w/m
pki_dir: $w/m/pki
cachedir: $w/m/cache
sock_dir: $w/m/sock
log_file: $w/m/minion.log
pidfile: $w/m/minion.pid
log_level_logfile: info
loop_interval: 1
acceptance_wait_time: 1
random_reauth_delay: 0
enable_fqdns_grains: False
grains_cache: True
user: root
YAML
    cat >"$etc/minion.d/beacons.conf" <<'YAML'
beacons:
  memusage:
    - percent: 1%
    - interval: 1
  listening_ports:
    - interval: 1
YAML
    start_minion() {
        mkdir -p "$w/m"
        : >"$w/m/minion.log"
        setsid "$venv/bin/salt-minion" -c "$etc" -l quiet >"$w/minion.out" 2>&1 &
        MINION=$!
        mpids+=("$MINION")
    }
    stop_minion() {
        kill -- -"$MINION" 2>/dev/null
        for _ in $(seq 100); do kill -0 -- -"$MINION" 2>/dev/null || break; sleep 0.1; done
        kill -9 -- -"$MINION" 2>/dev/null
        wait "$MINION" 2>/dev/null
        # Every process of that minion is dead now. A killed child that nobody has reaped yet
        # still exists for Salt's pidfile check, and the next minion would exit with "An instance
        # is already running" (seen in CI under load), so the pidfile goes with them.
        rm -f "$w/m/minion.pid"
    }

    # A: control, salt-minion owns the beacons.
    start_minion
    if wait_for 90 "$w/events" "\"tag\": \"salt/beacon/$id/memusage/\""; then
        pass "$series: control: salt-minion fires salt/beacon/$id/memusage/"
    else
        fail "$series: control: salt-minion fired no memusage beacon event (minion log below)"
        tail -20 "$w/m/minion.log" >&2
    fi
    # A warning loop: at least 3 of them, one per loop_interval.
    local end=$((SECONDS + 30)) n=0
    while [ $SECONDS -lt $end ]; do
        n=$(grep -c 'Unable to process beacon listening_ports' "$w/m/minion.log")
        [ "$n" -ge 3 ] && break
        sleep 0.2
    done
    if [ "$n" -ge 3 ]; then
        pass "$series: control: salt-minion warns 'Unable to process beacon listening_ports' every loop"
    else
        fail "$series: control: $n 'Unable to process beacon' warning(s) in the minion log, expected a loop"
    fi
    stop_minion

    # B: beacond owns the beacons.
    cp packaging/beacond.conf.example "$etc/minion.d/beacond.conf"
    : >"$w/events"
    start_minion
    if wait_for 90 "$w/events" "\"tag\": \"salt/minion/$id/start\""; then
        local t_start=$SECONDS
        sleep "$WINDOW"
        local beacon_events warnings
        beacon_events=$(grep -c "\"tag\": \"salt/beacon/$id/" "$w/events")
        # Any line about beacons ("beacon"/"beacons" as a word: not "beacond" in a path).
        warnings=$(grep -Eic '\bbeacons?\b' "$w/m/minion.log" | tr -d ' ')
        if [ "$beacon_events" = 0 ]; then
            pass "$series: hand-over: salt-minion fired no beacon event in $((SECONDS - t_start)) s"
        else
            fail "$series: hand-over: salt-minion fired $beacon_events beacon event(s)"
        fi
        if [ ! -s "$w/m/minion.log" ]; then
            fail "$series: hand-over: the minion log is empty: the log check below would prove nothing"
        elif [ "$warnings" = 0 ]; then
            pass "$series: hand-over: salt-minion logged nothing about beacons"
        else
            fail "$series: hand-over: salt-minion logged $warnings beacon line(s):"
            grep -Ei '\bbeacons?\b' "$w/m/minion.log" | head -5 >&2
        fi
    else
        fail "$series: hand-over: salt-minion did not connect (no salt/minion/$id/start)"
        tail -20 "$w/m/minion.log" >&2
    fi
    stop_minion
    local once
    once=$("$BIN" --once -c "$etc" 2>"$w/beacond.err")
    if grep -q "\"tag\":\"salt/beacon/$id/memusage/\"" <<<"$once"; then
        pass "$series: hand-over: beacond --once on the same config runs memusage"
    else
        fail "$series: hand-over: beacond --once printed no memusage event"
        cat "$w/beacond.err" >&2
    fi
    cleanup_series
}

for s in "${SERIES[@]}"; do
    run_series "$s"
done
[ "$fails" = 0 ]
