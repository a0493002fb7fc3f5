# beacond %post ($1 = 1: install, 2: upgrade). Like %systemd_post plus a restart on upgrade
# (as %systemd_postun_with_restart would); harmless without a running systemd.
mkdir -p /var/cache/salt/minion/beacond
chmod 0700 /var/cache/salt/minion/beacond
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl enable --now beacond.service >/dev/null 2>&1 || :
    else
        systemctl try-restart beacond.service >/dev/null 2>&1 || :
    fi
elif command -v systemctl >/dev/null 2>&1 && [ "$1" -eq 1 ]; then
    # No systemd running (container, image build): enable only, offline.
    systemctl enable beacond.service >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ] && [ ! -e /etc/salt/minion.d/beacond.conf ]; then
    echo "beacond: installed but inactive. To hand this host's beacons over from salt-minion,"
    echo "  cp /etc/salt/minion.d/beacond.conf.example /etc/salt/minion.d/beacond.conf"
    echo "  (read it first), then restart salt-minion and start beacond."
fi
exit 0
