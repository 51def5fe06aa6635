"""keepalived + conntrackd, the known recipe for keeping connections across a VRRP failover,
as the failover benchmark's comparison (``--impl keepalived --conntrackd``).

Debian's ``conntrackd`` in FTFW mode on every gateway node: the active node's
conntrack events are sent reliably (FTFW: sequence numbers, NACKs, resends)
to the others, which hold them in their "external cache"; keepalived's
notify script commits that cache into the kernel when a node becomes master
(the recipe of conntrackd's ``primary-backup.sh``). Everything a node needs
lives in its lab work directory (config, UNIX socket, lock, log), so nothing
is shared with the host's own conntrackd, if any.

Sync goes over the internal segment by multicast in 224.0.0.0/24 (link-local,
the lab's only multicast range); FTFW's unicast mode would take one peer only.

    conf = conntrackd_conf(workdir, "eth0", "198.51.100.11")
    (workdir / "conntrackd.conf").write_text(conf)
    (workdir / "ct-notify.sh").write_text(notify_script(workdir / "conntrackd.conf"))
    # keepalived's vrrp_instance gets: notify_master/backup/fault "<sh> <script> <state>"
    start conntrackd_command(workdir / "conntrackd.conf")
"""

from __future__ import annotations

from pathlib import Path

SYNC_GROUP = "224.0.0.90"  # link-local multicast, unassigned
SYNC_PORT = 3780           # conntrackd's default group/port


def conntrackd_conf(workdir: Path, interface: str, local_ip: str,
                    ignore: tuple[str, ...] = ()) -> str:
    """conntrackd.conf for one gateway node: FTFW over ``interface`` (whose address is
    ``local_ip``), state of forwarded flows only (the node's own addresses and
    ``ignore`` are left out, as the Debian example does)."""
    wd = Path(workdir)
    own = "".join(f"            IPv4_address {ip}\n" for ip in ("127.0.0.1", local_ip, *ignore))
    return f"""\
Sync {{
    Mode FTFW {{
        DisableExternalCache Off
        ResendQueueSize 131072
    }}
    Multicast {{
        IPv4_address {SYNC_GROUP}
        Group {SYNC_PORT}
        IPv4_interface {local_ip}
        Interface {interface}
        SndSocketBuffer 1249280
        RcvSocketBuffer 1249280
        Checksum on
    }}
}}
General {{
    Systemd off
    HashSize 32768
    HashLimit 131072
    LogFile {wd / "conntrackd.log"}
    Syslog off
    LockFile {wd / "conntrackd.lock"}
    UNIX {{
        Path {wd / "conntrackd.ctl"}
    }}
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 8388608
    Filter From Userspace {{
        Protocol Accept {{
            TCP
            UDP
        }}
        Address Ignore {{
{own.rstrip()}
        }}
    }}
}}
"""


def conntrackd_command(conf: Path) -> list[str]:
    """conntrackd in the foreground (the lab supervises it like keepalived)."""
    return ["conntrackd", "-C", str(conf)]


def notify_script(conf: Path) -> str:
    """keepalived's notify hook (``sh SCRIPT primary|backup|fault``), after conntrackd's
    ``primary-backup.sh``: a new master commits the external cache into its kernel, then
    starts over from the kernel and pushes it to the others; a backup asks the master
    for a full resync; a faulty node shortens its kernel timers (zombies go soon)."""
    c = f"conntrackd -C {conf}"
    return f"""\
#!/bin/sh
case "$1" in
  primary)
    {c} -c    # commit the external cache into the kernel
    {c} -f    # flush the internal and external caches
    {c} -R    # resync the internal cache with the kernel table
    {c} -B    # send a bulk update to the backups
    ;;
  backup)
    {c} -n    # request a resync from the master
    ;;
  fault)
    {c} -t    # shorten kernel timers: the entries this node held age out
    ;;
esac
exit 0
"""


def keepalived_notify_lines(script: Path) -> str:
    """The lines a ``vrrp_instance`` block needs to run ``notify_script``."""
    return (f'    notify_master "/bin/sh {script} primary"\n'
            f'    notify_backup "/bin/sh {script} backup"\n'
            f'    notify_fault "/bin/sh {script} fault"\n')
