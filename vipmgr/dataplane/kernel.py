"""Where kernel calls run: a thread inside a network namespace, and libnftables in-process.

A network namespace is a per-thread attribute on Linux, so a worker thread that
``setns``-es once runs every netlink socket, nft context, packet socket and
child process it creates inside that namespace, while the rest of the process
(the agent's event loop, pytest) stays where it is. With ``netns=None`` the
thread simply stays in the process's own namespace (the agent's normal case:
it is started inside its node's namespace).

nftables goes through libnftables (``libnftables.so.1``, the library the
``nft`` binary is built on) via ctypes: one batch is one in-process call and
one netlink transaction (~50 µs for the dead-man refresh) instead of a
fork+exec per change. Separate contexts on separate threads are independent
(the kernel serialises their transactions), which is how the dead-man refresh
runs next to a long reconcile.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import json
import os
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class KernelError(RuntimeError):
    """A kernel operation failed; the message says which and why."""


class NftMissing(KernelError):
    """An nft batch referred to a table, set or element the kernel does not hold (ENOENT).

    ``gateway``: whose element it was, when the batch served several."""

    def __init__(self, message: str, gateway: str | None = None):
        super().__init__(message)
        self.gateway = gateway


def _enter_netns(name: str) -> None:
    fd = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise KernelError(f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsThread:
    """One thread bound to a network namespace; ``call`` runs a function there and waits."""

    def __init__(self, netns: str | None, name: str = "vipmgr-kernel", nice: int = 0) -> None:
        """``nice`` > 0 lowers this thread's CPU priority (Linux: per thread), for work
        that must not compete with the agent's own threads."""
        if netns is not None and not os.path.exists(os.path.join(NETNS_RUN_DIR, netns)):
            raise KernelError(f"network namespace {netns!r} does not exist")
        self.netns = netns

        def init() -> None:
            if netns is not None:
                _enter_netns(netns)
            if nice:
                os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + nice)

        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name,
                                                           initializer=init)
        self._ident: int = self._pool.submit(threading.get_ident).result()

    def submit(self, fn: Callable[..., T], *args: Any) -> "concurrent.futures.Future[T]":
        return self._pool.submit(fn, *args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in the namespace thread (directly when already on it)."""
        if threading.get_ident() == self._ident:
            return fn(*args)
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class _Lib:
    """The few libnftables entry points we need, typed once."""

    def __init__(self) -> None:
        path = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise KernelError(f"libnftables not found ({exc}); install the nftables package") \
                from exc
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
            getattr(lib, fn).restype = ctypes.c_char_p
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.lib = lib


_LIB: _Lib | None = None
NFT_CTX_OUTPUT_JSON = 1 << 4


class Nft:
    """A libnftables context. Create and use it on the namespace thread only."""

    def __init__(self) -> None:
        global _LIB
        if _LIB is None:
            _LIB = _Lib()
        self._lib = _LIB.lib
        self._ctx = self._lib.nft_ctx_new(0)
        self._lib.nft_ctx_buffer_output(self._ctx)
        self._lib.nft_ctx_buffer_error(self._ctx)

    def run(self, commands: str, json_output: bool = False) -> str:
        """Run a batch (nft syntax, one command per line) as ONE transaction; output text."""
        self._lib.nft_ctx_output_set_flags(self._ctx, NFT_CTX_OUTPUT_JSON if json_output else 0)
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
        out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
        err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if rc != 0:
            kind = NftMissing if "No such file or directory" in err else KernelError
            raise kind(f"nft batch failed: {err.strip()}")
        return out

    def list_json(self, what: str) -> list[dict[str, Any]]:
        """``list <what>`` as the JSON objects (metainfo dropped)."""
        data = json.loads(self.run(f"list {what}", json_output=True) or '{"nftables": []}')
        return [obj for obj in data["nftables"] if "metainfo" not in obj]

    def close(self) -> None:
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None
