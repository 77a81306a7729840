#!/bin/bash
# The Debian package on a fresh Debian 12 with systemd (issue 20, must show 3): install,
# `systemctl enable --now`, `openclaw-guard status` says it runs and enforces, then
# purge removes it, its unit, its state and its pins. Prints the integration runner's
# `test NAME ... ok|FAILED` lines for cargo xtask's table.
set -u
DEB=$(ls /ocg/*.deb | head -1)
U=openclaw-guard
passed=0 failed=0
check() {
    local name=$1; shift
    if "$@" > /tmp/check.out 2>&1; then
        echo "test package::$name ... ok"; passed=$((passed + 1))
    else
        echo "test package::$name ... FAILED"; sed 's/^/    | /' /tmp/check.out
        failed=$((failed + 1))
    fi
}
# The agent's secret, there before the guard starts (protected by inode).
mkdir -p /root/.openclaw && echo 'ANTHROPIC_API_KEY=sk-ant-package-test' > /root/.openclaw/.env
check dpkg_install dpkg -i "$DEB"
check enable_now systemctl enable --now $U
check is_enabled systemctl is-enabled -q $U
# Running means: status written by the daemon and its pid alive (status exits 0).
for _ in $(seq 120); do /usr/bin/openclaw-guard status > /tmp/status.out 2>&1 && break; sleep 1; done
sed 's/^/    status: /' /tmp/status.out | head -30
check status_reports_running /usr/bin/openclaw-guard status
check lsm_file_open_attached grep -qE '^  file_open +[^ ]+ +attached' /tmp/status.out
check pins_present bash -c "ls /sys/fs/bpf/$U | grep -q ."
check journal_says_ready bash -c "journalctl -u $U --no-pager -o cat | grep -q 'openclaw-guard: ready'"
check runs_as_the_unit bash -c "systemctl show -p MainPID --value $U | grep -qv '^0$'"
pid=$(systemctl show -p MainPID --value $U)
journalctl -u $U --no-pager -o cat | head -20 | sed 's/^/    journal: /'

# The operator's arguments (/etc/default, a conffile): alerts to journald too. Then a
# gateway's child reads the secret: the journal holds the alert under the unit.
sed -i 's|^OPENCLAW_GUARD_ARGS=.*|OPENCLAW_GUARD_ARGS="--output journald --output file:/var/log/openclaw-guard/events.jsonl"|' /etc/default/$U
check restart_with_journald systemctl restart $U
for _ in $(seq 120); do journalctl -u $U --no-pager -o cat | grep -c 'openclaw-guard: ready' | grep -q 2 && break; sleep 1; done
mkdir -p /tmp/gw/openclaw && cp /ocg/standin /tmp/gw/node && touch /tmp/gw/openclaw/openclaw.mjs
cat > /tmp/gw/script.sh <<'GW'
cat /root/.openclaw/.env > /tmp/gw/out 2>&1; echo $? > /tmp/gw/rc
# The guard's arguments: the next start in monitor mode, if the agent could write them.
echo 'OPENCLAW_GUARD_ARGS="--mode monitor"' >> /etc/default/openclaw-guard 2> /tmp/gw/out2; echo $? > /tmp/gw/rc2
GW
OCG_STANDIN_SCRIPT=/tmp/gw/script.sh /tmp/gw/node /tmp/gw/openclaw/openclaw.mjs gateway
echo "    the gateway's child: rc $(cat /tmp/gw/rc 2>/dev/null), $(cat /tmp/gw/out 2>/dev/null)"
check secret_read_refused bash -c "! grep -q sk-ant /tmp/gw/out"
echo "    the gateway's child writing /etc/default/$U: rc $(cat /tmp/gw/rc2 2>/dev/null), $(cat /tmp/gw/out2 2>/dev/null)"
check guard_arguments_kept bash -c "! grep -q 'mode monitor' /etc/default/$U"
for _ in $(seq 30); do journalctl -u $U RULE=secrets -o json --no-pager | grep -q . && break; sleep 1; done
journalctl -u $U RULE=secrets -o json --no-pager | head -1 > /tmp/alert.json
sed 's/^/    journal entry: /' /tmp/alert.json | cut -c1-600
check journal_alert_by_unit_and_rule grep -q '"OCG_PATH":"/root/.openclaw/.env"' /tmp/alert.json
check journal_alert_priority grep -qE '"PRIORITY":"[0-7]"' /tmp/alert.json
check journal_alert_carries_pid grep -qE '"OCG_TGID":"[0-9]+"' /tmp/alert.json
check journal_alert_from_the_unit grep -q '"_SYSTEMD_UNIT":"openclaw-guard.service"' /tmp/alert.json
check dpkg_purge dpkg --purge $U
check package_gone bash -c "! dpkg -s $U > /dev/null 2>&1"
check no_daemon_left bash -c "! kill -0 $pid 2> /dev/null"
check unit_gone bash -c "! systemctl cat $U > /dev/null 2>&1"
check enable_link_gone test ! -e /etc/systemd/system/multi-user.target.wants/$U.service
check pins_gone test ! -e /sys/fs/bpf/$U
check state_gone test ! -e /var/lib/$U
check config_gone test ! -e /etc/default/$U
echo "test result: $passed passed; $failed failed; 0 skipped"
exit $((failed > 0))
