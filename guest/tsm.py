"""configfs-tsm inside a simulated TD: Linux's ``/sys/kernel/config/tsm`` served through FUSE.

Software in a real TD gets its quotes from the kernel's configfs-tsm report interface (go-tdx-guest through
go-configfs-tsm, trustee's attestation agent, Canonical's tools): ``mkdir report/NAME``, write 64 bytes of
REPORTDATA to ``inblob``, read the DCAP quote from ``outblob``, compare ``generation`` before and after, then
``rmdir``. This module serves the same tree from a guest process, backed by its TD: reading ``outblob`` runs
TDREPORT + GetQuote through the host (:meth:`guest.td.Td.quote`, the path the ``tdx-guest`` driver takes), so
an unmodified client works when the mount is bind-mounted at ``/sys/kernel/config/tsm``. The facts it follows,
with their sources, are in docs/attestation.md §16.

Three layers:

* :class:`ReportSubsystem`: the ``report`` group with the ``tdx_guest`` provider, as
  ``drivers/virt/coco/guest/report.c`` (formerly ``drivers/virt/coco/tsm.c``) and
  ``drivers/virt/coco/tdx-guest/tdx-guest.c`` behave: entries, the write generation, the outblob cached until
  the next write. No I/O and no locking of its own (the kernel's ``tsm_rwsem`` is the FUSE layer's lock).
* :class:`TsmFilesystem`: pyfuse3 operations giving the tree configfs' file semantics
  (``fs/configfs/file.c``, ``fs/configfs/dir.c``): a binary attribute is buffered per open file and
  committed when the writer closes it, a read fills a per-open-file buffer once, modes are enforced for root
  too, and mkdir, rmdir, unlink and create answer as configfs does.
* :func:`serve`: mount, serve until SIGINT/SIGTERM (or the TD's lifeline ends), always unmount.

The FUSE tree is the ``tsm`` directory: ``DIR/report/NAME/{generation,provider,inblob,outblob}``.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import pyfuse3
import trio

from guest.errors import GuestError, QuoteFailed

#: ``provider`` of the TDX guest driver (its KBUILD_MODNAME).
PROVIDER = "tdx_guest"
#: TSM_REPORT_INBLOB_MAX: the configfs size limit of ``inblob``; a write past it fails with EFBIG.
INBLOB_MAX = 64
#: TSM_REPORT_OUTBLOB_MAX (SZ_32K): a larger outblob fails the read with EFBIG.
OUTBLOB_MAX = 32 * 1024
#: TDX_REPORTDATA_LEN: the tdx-guest driver refuses any other inblob length with EINVAL when quoting.
REPORTDATA_SIZE = 64
#: ``write_generation`` and ``read_generation`` are ``unsigned long`` (64-bit on x86-64).
GENERATION_MODULUS = 1 << 64
#: How often the server looks at the TD's lifeline.
LIFELINE_POLL_SECONDS = 0.1


class TsmError(Exception):
    """A configfs-tsm operation failed with the errno the kernel returns."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or os.strerror(code))
        self.errno = code


@dataclass(frozen=True)
class Attribute:
    """One report attribute: name, configfs mode (``CONFIGFS_ATTR_RO`` 0444, ``_WO`` 0200), binary or text,
    and a binary attribute's ``cb_max_size``."""

    name: str
    mode: int
    binary: bool
    max_size: int = 0

    @property
    def readable(self) -> bool:
        return bool(self.mode & 0o444)

    @property
    def writable(self) -> bool:
        return bool(self.mode & 0o222)


GENERATION = Attribute("generation", 0o444, binary=False)
PROVIDER_ATTRIBUTE = Attribute("provider", 0o444, binary=False)
INBLOB = Attribute("inblob", 0o200, binary=True, max_size=INBLOB_MAX)
OUTBLOB = Attribute("outblob", 0o444, binary=True, max_size=OUTBLOB_MAX)
#: What ``tdx_report_attr_visible`` / ``tdx_report_bin_attr_visible`` show: generation and provider, inblob
#: and outblob.
TDX_ATTRIBUTES: tuple[Attribute, ...] = (GENERATION, PROVIDER_ATTRIBUTE, INBLOB, OUTBLOB)
#: Attributes of report.c that the TDX provider hides: on a TDX guest they do not exist (ENOENT).
TDX_HIDDEN = (
    "privlevel",
    "privlevel_floor",
    "service_provider",
    "service_guid",
    "service_manifest_version",
    "auxblob",
    "manifestblob",
)


@dataclass
class ReportEntry:
    """One ``report/NAME`` item (``struct tsm_report_state``)."""

    name: str
    inblob: bytes = b""
    write_generation: int = 0
    read_generation: int = 0
    outblob: bytes | None = None
    #: rmdir'd: open files of the entry then fail with ENOENT, as configfs marks the fragment dead.
    removed: bool = False


class ReportSubsystem:
    """The tsm ``report`` group with the tdx_guest provider. ``quote`` turns 64 bytes of REPORTDATA into a
    DCAP quote (TDREPORT, then GetQuote). Callers serialize every call, as the kernel's ``tsm_rwsem`` does."""

    provider = PROVIDER

    def __init__(self, quote: Callable[[bytes], bytes], *, log: TextIO | None = None) -> None:
        self._quote = quote
        self._log = log if log is not None else sys.stderr
        self.entries: dict[str, ReportEntry] = {}

    def make_item(self, name: str) -> ReportEntry:
        """``mkdir report/NAME`` (``tsm_report_make_item``); EEXIST for a name in use."""
        if name in self.entries:
            raise TsmError(errno.EEXIST)
        entry = ReportEntry(name)
        self.entries[name] = entry
        return entry

    def drop_item(self, name: str) -> ReportEntry:
        """``rmdir report/NAME``: the item goes with its attributes and any cached outblob."""
        entry = self.entries.pop(name, None)
        if entry is None:
            raise TsmError(errno.ENOENT)
        entry.removed = True
        entry.outblob = None
        return entry

    def show(self, entry: ReportEntry, attribute: Attribute) -> bytes:
        """A text attribute's contents: ``generation`` (``%lu\\n`` of the write generation), ``provider``."""
        if attribute is GENERATION:
            return f"{entry.write_generation}\n".encode()
        if attribute is PROVIDER_ATTRIBUTE:
            return f"{self.provider}\n".encode()
        raise TsmError(errno.EINVAL)

    def write_inblob(self, entry: ReportEntry, data: bytes) -> None:
        """Commit a writer's inblob (``tsm_report_inblob_write``): advance the write generation, then store.
        EBUSY when the generation would wrap onto the read generation (``try_advance_write_generation``)."""
        if len(data) > INBLOB_MAX:
            raise TsmError(errno.EFBIG)
        if entry.write_generation == (entry.read_generation - 1) % GENERATION_MODULUS:
            raise TsmError(errno.EBUSY)
        entry.write_generation = (entry.write_generation + 1) % GENERATION_MODULUS
        entry.inblob = bytes(data)

    def read_outblob(self, entry: ReportEntry) -> bytes:
        """``tsm_report_read``: EINVAL before any inblob; the cached outblob while no write happened since it
        was made; otherwise a new report (``tdx_report_new``), remembered with the generation it answers."""
        if not entry.inblob:
            raise TsmError(errno.EINVAL, "no inblob written to this report entry")
        if entry.outblob is not None and entry.read_generation == entry.write_generation:
            return entry.outblob
        entry.outblob = None
        entry.outblob = self._report_new(entry.inblob)
        entry.read_generation = entry.write_generation
        return entry.outblob

    def _report_new(self, inblob: bytes) -> bytes:
        """``tdx_report_new``: exactly 64 bytes of REPORTDATA, TDREPORT, GetQuote, then ``out_len`` bytes of
        the buffer. The driver does not look at the buffer's status, so a quote the host could not make
        (QGS_UNAVAILABLE, an error status, out_len 0) reads as an empty outblob; a GetQuote TDVMCALL that
        fails is EIO, a request still in flight after 30 s ETIMEDOUT."""
        if len(inblob) != REPORTDATA_SIZE:
            raise TsmError(
                errno.EINVAL, f"TDX takes {REPORTDATA_SIZE} bytes of REPORTDATA, not {len(inblob)}"
            )
        try:
            return self._quote(inblob)
        except QuoteFailed as err:
            if err.reason == "GET_QUOTE_TIMEOUT":
                raise TsmError(errno.ETIMEDOUT, str(err)) from None
            if err.reason == "GET_QUOTE_BAD_LENGTH":
                raise TsmError(errno.EIO, str(err)) from None
            print(f"tsm: GetQuote gave no quote ({err}); outblob is empty, as on Linux", file=self._log)
            return b""
        except GuestError as err:
            print(f"tsm: report generation failed: {err}", file=self._log)
            raise TsmError(errno.EIO, str(err)) from None


class _Kind(enum.Enum):
    ROOT = "tsm"
    GROUP = "report"
    ENTRY = "entry"
    ATTRIBUTE = "attribute"


@dataclass(eq=False)
class _Node:
    inode: int
    kind: _Kind
    entry: ReportEntry | None = None
    attribute: Attribute | None = None
    created_ns: int = field(default_factory=time.time_ns)
    #: The kernel's lookup count; a detached node is dropped when it reaches zero.
    lookups: int = 0
    detached: bool = False
    parent: _Node | None = None
    children: dict[str, _Node] = field(default_factory=dict)


@dataclass(eq=False)
class _OpenFile:
    """configfs' per-open-file ``struct configfs_buffer``."""

    node: _Node
    read_buffer: bytes | None = None
    write_buffer: bytearray = field(default_factory=bytearray)
    read_in_progress: bool = False
    write_in_progress: bool = False
    #: Written since the last commit.
    dirty: bool = False


def _error(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


class TsmFilesystem(pyfuse3.Operations):
    """The ``tsm`` directory through FUSE, with configfs' semantics (docs/attestation.md §16).

    One difference from configfs, forced by FUSE: the kernel sends RELEASE after ``close()`` has returned,
    so a binary attribute is committed when its writer closes a descriptor (FLUSH, which ``close()`` waits
    for) if it wrote since the last commit. A writer that closes one descriptor of a file between two writes
    therefore commits twice, where configfs commits once at the last close."""

    def __init__(self, reports: ReportSubsystem) -> None:
        super().__init__()
        self.reports = reports
        self._lock = trio.Lock()
        self._nodes: dict[int, _Node] = {}
        self._next_inode = pyfuse3.ROOT_INODE
        self.root = self._new_node(_Kind.ROOT)
        self.group = self._new_node(_Kind.GROUP, self.root)
        self.root.children[_Kind.GROUP.value] = self.group
        self._open: dict[int, _OpenFile] = {}
        self._next_fh = 1
        self._uid, self._gid = os.getuid(), os.getgid()

    # ---- nodes ----------------------------------------------------------------------------------------
    def _new_node(
        self,
        kind: _Kind,
        parent: _Node | None = None,
        entry: ReportEntry | None = None,
        attr: Attribute | None = None,
    ) -> _Node:
        node = _Node(self._next_inode, kind, entry, attr, parent=parent)
        self._nodes[node.inode] = node
        self._next_inode += 1
        return node

    def _node(self, inode: int) -> _Node:
        node = self._nodes.get(inode)
        if node is None:
            raise _error(errno.ENOENT)
        return node

    def _attributes(self, node: _Node) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = node.inode
        if node.kind is _Kind.ATTRIBUTE:
            assert node.attribute is not None
            attrs.st_mode = stat.S_IFREG | node.attribute.mode
            attrs.st_nlink = 1
            attrs.st_size = 0
        else:
            attrs.st_mode = stat.S_IFDIR | 0o755
            subdirs = len(self.group.children) if node is self.group else int(node is self.root)
            attrs.st_nlink = 2 + subdirs
            attrs.st_size = 0
        attrs.st_uid, attrs.st_gid = self._uid, self._gid
        attrs.st_blksize = 4096
        attrs.st_blocks = 0
        attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = node.created_ns
        # Every change goes through this file system, but entries come and go quickly: never cache.
        attrs.entry_timeout = 0
        attrs.attr_timeout = 0
        return attrs

    def _entry_node(self, name: str, entry: ReportEntry) -> _Node:
        node = self._new_node(_Kind.ENTRY, self.group, entry)
        for attr in TDX_ATTRIBUTES:
            node.children[attr.name] = self._new_node(_Kind.ATTRIBUTE, node, entry, attr)
        self.group.children[name] = node
        return node

    def _detach(self, node: _Node) -> None:
        for child in node.children.values():
            child.detached = True
            if child.lookups <= 0:
                self._nodes.pop(child.inode, None)
        node.detached = True
        if node.lookups <= 0:
            self._nodes.pop(node.inode, None)

    # ---- lookups and listing --------------------------------------------------------------------------
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        if name == b".":
            node = parent
        elif name == b"..":
            node = parent.parent or parent
        else:
            found = parent.children.get(os.fsdecode(name))
            if found is None:
                raise _error(errno.ENOENT)
            node = found
        node.lookups += 1
        return self._attributes(node)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            node = self._nodes.get(inode)
            if node is None:
                continue
            node.lookups -= count
            if node.lookups <= 0 and node.detached:
                del self._nodes[inode]

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attributes(self._node(inode))

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        """Truncation (``> inblob`` opens with O_TRUNC) and times are accepted and change nothing, as
        configfs' ``simple_setattr`` leaves the attribute itself alone; ownership and modes stay put."""
        if fields.update_mode or fields.update_uid or fields.update_gid:
            raise _error(errno.EPERM)
        return self._attributes(self._node(inode))

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        if node.kind is _Kind.ATTRIBUTE:
            raise _error(errno.ENOTDIR)
        if node.detached:
            raise _error(errno.ENOENT)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """``.`` and ``..`` first, as configfs emits them, then the children in creation order."""
        node = self._node(fh)
        listing = [(".", node, False), ("..", node.parent or node, False)]
        listing += [(name, child, True) for name, child in node.children.items()]
        for offset in range(start_id, len(listing)):
            name, child, counted = listing[offset]
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._attributes(child), offset + 1):
                return
            if counted:
                child.lookups += 1

    async def releasedir(self, fh: int) -> None:
        return None

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_namemax = 255
        return data

    # ---- directories: mkdir report/NAME, rmdir report/NAME ----------------------------------------------
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        """Only ``report`` makes items; anywhere else configfs answers EPERM ("lack-of-mkdir")."""
        parent = self._node(parent_inode)
        if parent is not self.group:
            raise _error(errno.ENOENT if parent.detached else errno.EPERM)
        text = os.fsdecode(name)
        async with self._lock:
            try:
                entry = self.reports.make_item(text)
            except TsmError as err:
                raise _error(err.errno) from None
            node = self._entry_node(text, entry)
        node.lookups += 1
        return self._attributes(node)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        """``rmdir report/NAME`` removes the item with its attributes; ``report`` itself is a default group
        (EPERM); an attribute is not a directory."""
        parent = self._node(parent_inode)
        text = os.fsdecode(name)
        child = parent.children.get(text)
        if child is None:
            raise _error(errno.ENOENT)
        if child.kind is _Kind.ATTRIBUTE:
            raise _error(errno.ENOTDIR)
        if child is self.group:
            raise _error(errno.EPERM)
        async with self._lock:
            self.reports.drop_item(text)
            del self.group.children[text]
            self._detach(child)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        """configfs unlinks only symlinks: an attribute is EPERM."""
        parent = self._node(parent_inode)
        if os.fsdecode(name) not in parent.children:
            raise _error(errno.ENOENT)
        raise _error(errno.EPERM)

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        """configfs directories have no ``create``: the VFS answers EACCES."""
        raise _error(errno.EACCES)

    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise _error(errno.EPERM)

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise _error(errno.EPERM)

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        raise _error(errno.EPERM)

    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise _error(errno.EPERM)

    # ---- attribute files ------------------------------------------------------------------------------
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        """configfs checks the attribute's mode itself, for root too: EACCES to read ``inblob`` or write
        ``outblob``, ``generation`` and ``provider``."""
        node = self._node(inode)
        if node.kind is not _Kind.ATTRIBUTE:
            raise _error(errno.EISDIR)
        assert node.attribute is not None
        if node.detached:
            raise _error(errno.ENOENT)
        access = flags & os.O_ACCMODE
        if access in (os.O_WRONLY, os.O_RDWR) and not node.attribute.writable:
            raise _error(errno.EACCES)
        if access in (os.O_RDONLY, os.O_RDWR) and not node.attribute.readable:
            raise _error(errno.EACCES)
        fh = self._next_fh
        self._next_fh += 1
        self._open[fh] = _OpenFile(node)
        # direct_io: every read and write reaches this process, whatever size stat reports.
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    def _handle(self, fh: int) -> tuple[_OpenFile, Attribute, ReportEntry]:
        handle = self._open.get(fh)
        if handle is None:
            raise _error(errno.EBADF)
        attribute, entry = handle.node.attribute, handle.node.entry
        assert attribute is not None and entry is not None
        return handle, attribute, entry

    async def read(self, fh: int, off: int, size: int) -> bytes:
        """The first read of an open file fills its buffer (configfs ``fill_read_buffer`` /
        ``configfs_bin_read_iter``); later reads, at any offset, come from it. ``outblob`` may take a quote:
        it runs in a worker thread while the lock keeps every other report operation waiting, as the
        kernel's rwsem does."""
        handle, attribute, entry = self._handle(fh)
        if attribute.binary:
            if handle.write_in_progress:
                raise _error(errno.ETXTBSY)
            handle.read_in_progress = True
        if handle.read_buffer is None:
            async with self._lock:
                if entry.removed:
                    raise _error(errno.ENOENT)
                try:
                    if attribute.binary:
                        data = await trio.to_thread.run_sync(self.reports.read_outblob, entry)
                    else:
                        data = self.reports.show(entry, attribute)
                except TsmError as err:
                    raise _error(err.errno) from None
            if not data:
                return b""
            if attribute.binary and len(data) > attribute.max_size:
                raise _error(errno.EFBIG)
            handle.read_buffer = data
        return handle.read_buffer[off : off + size]

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        """Binary attributes gather writes in the open file's buffer up to ``cb_max_size``; past it EFBIG.
        As in ``configfs_bin_write_iter``, the file counts as written before the size check, so closing it
        after a refused write still commits (an empty inblob, and the generation advances)."""
        handle, attribute, _ = self._handle(fh)
        if handle.read_in_progress:
            raise _error(errno.ETXTBSY)
        handle.write_in_progress = True
        handle.dirty = True
        end = off + len(buf)
        if end > len(handle.write_buffer):
            if attribute.max_size and end > attribute.max_size:
                raise _error(errno.EFBIG)
            handle.write_buffer.extend(bytes(end - len(handle.write_buffer)))
        handle.write_buffer[off:end] = buf
        return len(buf)

    async def _commit(self, handle: _OpenFile) -> None:
        """configfs ``configfs_release_bin_file``: hand the buffer to the attribute; its result is ignored."""
        if not handle.dirty:
            return
        handle.dirty = False
        entry = handle.node.entry
        assert entry is not None
        async with self._lock:
            if entry.removed:
                return
            with contextlib.suppress(TsmError):
                self.reports.write_inblob(entry, bytes(handle.write_buffer))

    async def flush(self, fh: int) -> None:
        handle, _, _ = self._handle(fh)
        await self._commit(handle)

    async def release(self, fh: int) -> None:
        handle = self._open.pop(fh, None)
        if handle is not None:
            await self._commit(handle)


class StopReason(enum.Enum):
    """Why :func:`serve` returned."""

    SIGNAL = "signal"
    LIFELINE_LOST = "lifeline lost"
    UNMOUNTED = "unmounted from outside"


class MountError(Exception):
    """The tree could not be mounted (no /dev/fuse, a bad mount point, no permission)."""


#: ``default_permissions``: the kernel checks modes against the caller as for any file; ``auto_unmount``:
#: fusermount3 unmounts even if this process is killed, so no stale mount outlives it.
MOUNT_OPTIONS = frozenset({"fsname=tdxsim-tsm", "subtype=tdxsim-tsm", "default_permissions", "auto_unmount"})


def serve(
    quote: Callable[[bytes], bytes],
    mountpoint: str,
    *,
    lifeline_lost: threading.Event | None = None,
    on_ready: Callable[[], None] | None = None,
    stop_signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM),
    log: TextIO | None = None,
) -> StopReason:
    """Mount the tsm tree at ``mountpoint`` (an existing directory), backed by ``quote`` (``Td.quote``), and
    serve it until one of ``stop_signals`` arrives, ``lifeline_lost`` is set or someone unmounts it; always
    unmount before returning, errors included. ``on_ready`` runs once the tree is mounted. Call from the
    main thread (signals)."""
    filesystem = TsmFilesystem(ReportSubsystem(quote, log=log))
    try:
        pyfuse3.init(filesystem, mountpoint, set(MOUNT_OPTIONS))
    except RuntimeError as err:
        raise MountError(f"cannot mount a FUSE file system at {mountpoint}: {err}") from None
    try:
        return trio.run(_serve, on_ready, lifeline_lost, tuple(stop_signals))
    finally:
        _unmount()


def _unmount() -> None:
    """Unmount with SIGINT and SIGTERM held back, so a second Ctrl-C cannot interrupt it halfway."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        pyfuse3.close(unmount=True)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


async def _serve(
    on_ready: Callable[[], None] | None, lifeline_lost: threading.Event | None, stop_signals: tuple[int, ...]
) -> StopReason:
    reason = StopReason.UNMOUNTED
    with trio.open_signal_receiver(*stop_signals) as signals:
        async with trio.open_nursery() as nursery:

            def stop(why: StopReason) -> None:
                nonlocal reason
                reason = why
                nursery.cancel_scope.cancel()

            async def fuse_loop() -> None:
                await pyfuse3.main()
                stop(StopReason.UNMOUNTED)

            async def wait_for_signal() -> None:
                async for _ in signals:
                    stop(StopReason.SIGNAL)
                    return

            async def watch_lifeline(event: threading.Event) -> None:
                while not event.is_set():
                    await trio.sleep(LIFELINE_POLL_SECONDS)
                stop(StopReason.LIFELINE_LOST)

            nursery.start_soon(fuse_loop)
            nursery.start_soon(wait_for_signal)
            if lifeline_lost is not None:
                nursery.start_soon(watch_lifeline, lifeline_lost)
            if on_ready is not None:
                on_ready()
    return reason
