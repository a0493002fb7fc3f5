# beacond %preun ($1 = 0: erase, 1: upgrade). Like %systemd_preun: stop and disable on erase.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        systemctl disable --now beacond.service >/dev/null 2>&1 || :
    else
        systemctl disable beacond.service >/dev/null 2>&1 || :
    fi
fi
exit 0
