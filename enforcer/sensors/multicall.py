"""Is a binary a multi-call binary (busybox, toybox...: one file whose behaviour is chosen
by argv[0])? Decided by content, once per binary, while the hasher reads it anyway.

Why content: the name of the file says nothing (Alpine's /bin/sh is busybox, and
`exec -a nc /bin/sh` runs busybox's nc under an allowed path), and a link may point
anywhere. Such a binary carries the table of the applet names it dispatches on; we look
for either a known maker's banner or such a table: a run of NUL-separated short names
in which at least MIN_KNOWN_NAMES are common command names. A false positive only keys
that binary's execs by applet as well (stricter: an unusual argv[0] is then a new
program), a false negative lets applets hide behind an allowed path, so the bar is low.
"""

from __future__ import annotations

import re

# Banners of the multi-call binaries in use.
MARKERS: tuple[bytes, ...] = (b"BusyBox v", b"busybox --install", b"Toybox ", b"toybox --long",
                              b"dropbearmulti", b"Usage: toybox")

# Common command names an applet table would hold (a table matches on a few dozen of them).
COMMON_NAMES = frozenset(
    b"""sh ash bash ls cat cp mv rm mkdir rmdir ln chmod chown chgrp touch echo printf test
    true false grep egrep fgrep sed awk cut sort uniq head tail wc tr tee find xargs env
    id whoami hostname uname date sleep kill ps top mount umount df du dd tar gzip gunzip
    zcat bzip2 xz nc netstat ifconfig ip route ping wget ftpget ftpput telnet httpd
    vi less more diff patch md5sum sha1sum sha256sum base64 basename dirname readlink
    realpath stat sync su login passwd adduser addgroup deluser delgroup chroot nohup
    nice renice seq yes which tty stty clear reset free uptime dmesg hexdump od strings
    install mktemp mknod mkfifo pwd arp traceroute nslookup udhcpc crond crontab syslogd
    klogd logger init halt reboot poweroff insmod rmmod modprobe lsmod sysctl watch time
    timeout unzip cpio ar tac rev fold expand nl paste split comm cmp truncate shuf
    printenv expr factor""".split()
)
MIN_KNOWN_NAMES = 24
# A run: at least that many names, each 1-32 bytes of what command names are made of.
_RUN = re.compile(rb"(?:[a-z0-9_.\[\]+-]{1,32}\x00){%d,}" % MIN_KNOWN_NAMES)
OVERLAP = 64 << 10  # bytes kept across chunks so that a table split by a read is still seen


# A table holds some of these; only the bytes around them are parsed (a regex over every
# byte of a 50 MB binary would cost seconds of the hasher's time).
_ANCHORS: tuple[bytes, ...] = (b"\x00cat\x00", b"\x00ls\x00", b"\x00mkdir\x00")
_WINDOW = 4096
_MAX_ANCHORS = 256  # per buffer: a binary full of "ls" strings costs bounded time


def has_applet_table(data: bytes) -> bool:
    seen = 0
    for anchor in _ANCHORS:
        at = data.find(anchor)
        while at >= 0 and seen < _MAX_ANCHORS:
            seen += 1
            window = data[max(0, at - _WINDOW):at + _WINDOW]
            for m in _RUN.finditer(window):
                names = m.group(0).split(b"\x00")
                if sum(1 for n in names if n in COMMON_NAMES) >= MIN_KNOWN_NAMES:
                    return True
            at = data.find(anchor, at + _WINDOW)
    return False


def is_multicall(data: bytes) -> bool:
    """One buffer (a whole file or one chunk of it)."""
    return any(m in data for m in MARKERS) or has_applet_table(data)


class MultiCallScan:
    """Fed the chunks of one file in order (the hasher's reads); `found` once decided."""

    def __init__(self) -> None:
        self.found = False
        self._tail = b""

    def update(self, chunk: bytes) -> None:
        if self.found:
            return
        data = self._tail + chunk
        if is_multicall(data):
            self.found = True
            return
        self._tail = data[-OVERLAP:]
