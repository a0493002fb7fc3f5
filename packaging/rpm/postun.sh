# beacond %postun ($1 = 0: erase, 1: upgrade). Config (%config(noreplace)) and beacond's state
# under /var/cache/salt/minion/beacond are left in place; rpm has no purge.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
