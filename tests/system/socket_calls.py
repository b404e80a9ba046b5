"""Every way a process on x86-64 Linux can ask the kernel for a socket, for the lock's tests and nothing else: Python's
socket module, libc's socket() and raw syscall(2) through ctypes (the numbers native code would use, full 64-bit
arguments included), the x32 ABI (a syscall number with bit 30 set) and the i386 ABI from a 64-bit process (machine
code in an executable mmap below 4 GiB running `int 0x80`, both the direct socket call and socketcall(2)).

Each call answers with the descriptor's fate: "created" (and the descriptor closed at once) or the errno's name.
Run in a child process: a filter under test may kill the caller.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct

SYS_SOCKET, SYS_SOCKETPAIR = 41, 53  # x86-64
X32_BIT = 0x40000000  # __X32_SYSCALL_BIT: the x32 ABI's numbers are the 64-bit ones with this bit set
I386_SOCKET, I386_SOCKETCALL, SOCKETCALL_SOCKET = 359, 102, 1  # i386: socket(2) since Linux 4.3; socketcall(2)
TYPES = {"stream": socket.SOCK_STREAM, "dgram": socket.SOCK_DGRAM, "raw": socket.SOCK_RAW,
         "seqpacket": socket.SOCK_SEQPACKET}
FAMILIES = range(0, 64)  # AF_MAX is 46 in Linux 6.x; the rest must fail too (EAFNOSUPPORT without the lock)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_void_p]
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]


def _name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def _fate(result: int, code: int) -> str:
    if result >= 0:
        os.close(result)
        return "created"
    return _name(code)


def python(family: int, kind: int) -> str:
    try:
        sock = socket.socket(family, kind)
    except OSError as exc:
        return _name(exc.errno) if exc.errno else type(exc).__name__
    sock.close()
    return "created"


def raw(family: int, kind: int, number: int = SYS_SOCKET) -> str:
    """syscall(number, family, kind, 0): the 64-bit entry point (or x32 with X32_BIT in `number`)."""
    ctypes.set_errno(0)
    result = _libc.syscall(number, family, kind, 0, None)
    return _fate(result, ctypes.get_errno())


def raw_pair(family: int, kind: int) -> str:
    pair = (ctypes.c_int * 2)(-1, -1)
    ctypes.set_errno(0)
    result = _libc.syscall(SYS_SOCKETPAIR, family, kind, 0, ctypes.cast(pair, ctypes.c_void_p))
    if result == 0:
        os.close(pair[0])
        os.close(pair[1])
        return "created"
    return _name(ctypes.get_errno())


_page = None


def _low_page() -> int:
    """One read-write-execute page below 4 GiB (MAP_32BIT): int 0x80 takes 32-bit registers, socketcall a 32-bit
    pointer."""
    global _page
    if _page is None:
        prot, flags = 0x1 | 0x2 | 0x4, 0x02 | 0x20 | 0x40  # RWX; MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT
        address = _libc.mmap(None, 4096, prot, flags, -1, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap(MAP_32BIT) failed")
        _page = address
    return _page


def i386(family: int, kind: int, via: str = "socket") -> str:
    """The i386 ABI's socket(2) (eax=359) or socketcall(SYS_SOCKET, args) (eax=102) through `int 0x80`."""
    page = _low_page()
    args = page + 64  # socketcall's argument block: three 32-bit words
    ctypes.memmove(args, struct.pack("<III", family, kind, 0), 12)
    if via == "socket":
        number, ebx, ecx, edx = I386_SOCKET, family, kind, 0
    else:
        number, ebx, ecx, edx = I386_SOCKETCALL, SOCKETCALL_SOCKET, args, 0
    code = (b"\x53"  # push rbx (callee-saved)
            + b"\xb8" + struct.pack("<I", number)  # mov eax, number
            + b"\xbb" + struct.pack("<I", ebx)  # mov ebx, ...
            + b"\xb9" + struct.pack("<I", ecx)  # mov ecx, ...
            + b"\xba" + struct.pack("<I", edx)  # mov edx, ...
            + b"\xcd\x80"  # int 0x80
            + b"\x5b\xc3")  # pop rbx; ret
    ctypes.memmove(page, code, len(code))
    result = ctypes.CFUNCTYPE(ctypes.c_int)(page)()
    return _fate(result, -result if result < 0 else 0)
