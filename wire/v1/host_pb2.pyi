from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PhysicalPath(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHYSICAL_PATH_UNSPECIFIED: _ClassVar[PhysicalPath]
    PHYSICAL_PATH_DRAM: _ClassVar[PhysicalPath]
    PHYSICAL_PATH_HOST_KEYID: _ClassVar[PhysicalPath]

class GpaState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GPA_STATE_UNSPECIFIED: _ClassVar[GpaState]
    GPA_STATE_PRIVATE_ACCEPTED: _ClassVar[GpaState]
    GPA_STATE_PRIVATE_PENDING: _ClassVar[GpaState]
    GPA_STATE_SHARED: _ClassVar[GpaState]
    GPA_STATE_UNBACKED: _ClassVar[GpaState]
    GPA_STATE_POISONED: _ClassVar[GpaState]
PHYSICAL_PATH_UNSPECIFIED: PhysicalPath
PHYSICAL_PATH_DRAM: PhysicalPath
PHYSICAL_PATH_HOST_KEYID: PhysicalPath
GPA_STATE_UNSPECIFIED: GpaState
GPA_STATE_PRIVATE_ACCEPTED: GpaState
GPA_STATE_PRIVATE_PENDING: GpaState
GPA_STATE_SHARED: GpaState
GPA_STATE_UNBACKED: GpaState
GPA_STATE_POISONED: GpaState

class CreateTdRequest(_message.Message):
    __slots__ = ("attributes", "xfam", "mrconfigid", "mrowner", "mrownerconfig", "gpaw", "memory_bytes", "name")
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    XFAM_FIELD_NUMBER: _ClassVar[int]
    MRCONFIGID_FIELD_NUMBER: _ClassVar[int]
    MROWNER_FIELD_NUMBER: _ClassVar[int]
    MROWNERCONFIG_FIELD_NUMBER: _ClassVar[int]
    GPAW_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    attributes: int
    xfam: int
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    gpaw: int
    memory_bytes: int
    name: str
    def __init__(self, attributes: _Optional[int] = ..., xfam: _Optional[int] = ..., mrconfigid: _Optional[bytes] = ..., mrowner: _Optional[bytes] = ..., mrownerconfig: _Optional[bytes] = ..., gpaw: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class CreateTdResponse(_message.Message):
    __slots__ = ("td_id", "hkid", "shared_bit", "guest_memfd", "credential")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    HKID_FIELD_NUMBER: _ClassVar[int]
    SHARED_BIT_FIELD_NUMBER: _ClassVar[int]
    GUEST_MEMFD_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    hkid: int
    shared_bit: int
    guest_memfd: int
    credential: str
    def __init__(self, td_id: _Optional[int] = ..., hkid: _Optional[int] = ..., shared_bit: _Optional[int] = ..., guest_memfd: _Optional[int] = ..., credential: _Optional[str] = ...) -> None: ...

class TdImage(_message.Message):
    __slots__ = ("attributes", "xfam", "mrconfigid", "mrowner", "mrownerconfig", "gpaw", "memory_bytes", "payload")
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    XFAM_FIELD_NUMBER: _ClassVar[int]
    MRCONFIGID_FIELD_NUMBER: _ClassVar[int]
    MROWNER_FIELD_NUMBER: _ClassVar[int]
    MROWNERCONFIG_FIELD_NUMBER: _ClassVar[int]
    GPAW_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    attributes: int
    xfam: int
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    gpaw: int
    memory_bytes: int
    payload: _containers.RepeatedCompositeFieldContainer[Payload]
    def __init__(self, attributes: _Optional[int] = ..., xfam: _Optional[int] = ..., mrconfigid: _Optional[bytes] = ..., mrowner: _Optional[bytes] = ..., mrownerconfig: _Optional[bytes] = ..., gpaw: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., payload: _Optional[_Iterable[_Union[Payload, _Mapping]]] = ...) -> None: ...

class Payload(_message.Message):
    __slots__ = ("gpa", "data", "measure")
    GPA_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MEASURE_FIELD_NUMBER: _ClassVar[int]
    gpa: int
    data: bytes
    measure: bool
    def __init__(self, gpa: _Optional[int] = ..., data: _Optional[bytes] = ..., measure: _Optional[bool] = ...) -> None: ...

class LaunchTdRequest(_message.Message):
    __slots__ = ("image", "name")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    image: TdImage
    name: str
    def __init__(self, image: _Optional[_Union[TdImage, _Mapping]] = ..., name: _Optional[str] = ...) -> None: ...

class LaunchTdResponse(_message.Message):
    __slots__ = ("td_id", "credential", "hkid", "shared_bit", "pages_added")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    HKID_FIELD_NUMBER: _ClassVar[int]
    SHARED_BIT_FIELD_NUMBER: _ClassVar[int]
    PAGES_ADDED_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    credential: str
    hkid: int
    shared_bit: int
    pages_added: int
    def __init__(self, td_id: _Optional[int] = ..., credential: _Optional[str] = ..., hkid: _Optional[int] = ..., shared_bit: _Optional[int] = ..., pages_added: _Optional[int] = ...) -> None: ...

class InitMemRegionRequest(_message.Message):
    __slots__ = ("td_id", "gpa", "source", "measure")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    GPA_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MEASURE_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    gpa: int
    source: bytes
    measure: bool
    def __init__(self, td_id: _Optional[int] = ..., gpa: _Optional[int] = ..., source: _Optional[bytes] = ..., measure: _Optional[bool] = ...) -> None: ...

class InitMemRegionResponse(_message.Message):
    __slots__ = ("pages_added",)
    PAGES_ADDED_FIELD_NUMBER: _ClassVar[int]
    pages_added: int
    def __init__(self, pages_added: _Optional[int] = ...) -> None: ...

class FinalizeTdRequest(_message.Message):
    __slots__ = ("td_id",)
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    def __init__(self, td_id: _Optional[int] = ...) -> None: ...

class FinalizeTdResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DestroyTdRequest(_message.Message):
    __slots__ = ("td_id",)
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    def __init__(self, td_id: _Optional[int] = ...) -> None: ...

class DestroyTdResponse(_message.Message):
    __slots__ = ("pages_reclaimed", "hkid_freed")
    PAGES_RECLAIMED_FIELD_NUMBER: _ClassVar[int]
    HKID_FREED_FIELD_NUMBER: _ClassVar[int]
    pages_reclaimed: int
    hkid_freed: int
    def __init__(self, pages_reclaimed: _Optional[int] = ..., hkid_freed: _Optional[int] = ...) -> None: ...

class ListTdsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TdInfo(_message.Message):
    __slots__ = ("td_id", "name", "hkid", "lifecycle", "op_state", "dead", "dead_reason", "private_pages", "attributes", "conversions")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HKID_FIELD_NUMBER: _ClassVar[int]
    LIFECYCLE_FIELD_NUMBER: _ClassVar[int]
    OP_STATE_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    DEAD_REASON_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_PAGES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    name: str
    hkid: int
    lifecycle: str
    op_state: str
    dead: bool
    dead_reason: str
    private_pages: int
    attributes: int
    conversions: int
    def __init__(self, td_id: _Optional[int] = ..., name: _Optional[str] = ..., hkid: _Optional[int] = ..., lifecycle: _Optional[str] = ..., op_state: _Optional[str] = ..., dead: _Optional[bool] = ..., dead_reason: _Optional[str] = ..., private_pages: _Optional[int] = ..., attributes: _Optional[int] = ..., conversions: _Optional[int] = ...) -> None: ...

class ListTdsResponse(_message.Message):
    __slots__ = ("tds",)
    TDS_FIELD_NUMBER: _ClassVar[int]
    tds: _containers.RepeatedCompositeFieldContainer[TdInfo]
    def __init__(self, tds: _Optional[_Iterable[_Union[TdInfo, _Mapping]]] = ...) -> None: ...

class CreateGuestMemfdRequest(_message.Message):
    __slots__ = ("td_id", "size", "flags")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    size: int
    flags: int
    def __init__(self, td_id: _Optional[int] = ..., size: _Optional[int] = ..., flags: _Optional[int] = ...) -> None: ...

class CreateGuestMemfdResponse(_message.Message):
    __slots__ = ("fd",)
    FD_FIELD_NUMBER: _ClassVar[int]
    fd: int
    def __init__(self, fd: _Optional[int] = ...) -> None: ...

class CloseGuestMemfdRequest(_message.Message):
    __slots__ = ("td_id", "fd")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    fd: int
    def __init__(self, td_id: _Optional[int] = ..., fd: _Optional[int] = ...) -> None: ...

class CloseGuestMemfdResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetUserMemoryRegionRequest(_message.Message):
    __slots__ = ("td_id", "slot", "flags", "guest_phys_addr", "memory_size", "userspace_addr", "guest_memfd_offset", "guest_memfd")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    GUEST_PHYS_ADDR_FIELD_NUMBER: _ClassVar[int]
    MEMORY_SIZE_FIELD_NUMBER: _ClassVar[int]
    USERSPACE_ADDR_FIELD_NUMBER: _ClassVar[int]
    GUEST_MEMFD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    GUEST_MEMFD_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    slot: int
    flags: int
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    guest_memfd_offset: int
    guest_memfd: int
    def __init__(self, td_id: _Optional[int] = ..., slot: _Optional[int] = ..., flags: _Optional[int] = ..., guest_phys_addr: _Optional[int] = ..., memory_size: _Optional[int] = ..., userspace_addr: _Optional[int] = ..., guest_memfd_offset: _Optional[int] = ..., guest_memfd: _Optional[int] = ...) -> None: ...

class SetUserMemoryRegionResponse(_message.Message):
    __slots__ = ("userspace_addr",)
    USERSPACE_ADDR_FIELD_NUMBER: _ClassVar[int]
    userspace_addr: int
    def __init__(self, userspace_addr: _Optional[int] = ...) -> None: ...

class SetMemoryAttributesRequest(_message.Message):
    __slots__ = ("td_id", "address", "size", "attributes", "flags")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    address: int
    size: int
    attributes: int
    flags: int
    def __init__(self, td_id: _Optional[int] = ..., address: _Optional[int] = ..., size: _Optional[int] = ..., attributes: _Optional[int] = ..., flags: _Optional[int] = ...) -> None: ...

class SetMemoryAttributesResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FallocateRequest(_message.Message):
    __slots__ = ("td_id", "fd", "mode", "offset", "len")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LEN_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    fd: int
    mode: int
    offset: int
    len: int
    def __init__(self, td_id: _Optional[int] = ..., fd: _Optional[int] = ..., mode: _Optional[int] = ..., offset: _Optional[int] = ..., len: _Optional[int] = ...) -> None: ...

class FallocateResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HostReadRequest(_message.Message):
    __slots__ = ("td_id", "gpa", "length")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    GPA_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    gpa: int
    length: int
    def __init__(self, td_id: _Optional[int] = ..., gpa: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class HostReadResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class HostWriteRequest(_message.Message):
    __slots__ = ("td_id", "gpa", "data")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    GPA_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    gpa: int
    data: bytes
    def __init__(self, td_id: _Optional[int] = ..., gpa: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class HostWriteResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GuestMemfdReadRequest(_message.Message):
    __slots__ = ("td_id", "fd", "offset", "length")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    fd: int
    offset: int
    length: int
    def __init__(self, td_id: _Optional[int] = ..., fd: _Optional[int] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class GuestMemfdReadResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class GuestMemfdWriteRequest(_message.Message):
    __slots__ = ("td_id", "fd", "offset", "data")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    fd: int
    offset: int
    data: bytes
    def __init__(self, td_id: _Optional[int] = ..., fd: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class GuestMemfdWriteResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GuestMemfdMmapRequest(_message.Message):
    __slots__ = ("td_id", "fd", "offset", "length")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    fd: int
    offset: int
    length: int
    def __init__(self, td_id: _Optional[int] = ..., fd: _Optional[int] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class GuestMemfdMmapResponse(_message.Message):
    __slots__ = ("userspace_addr",)
    USERSPACE_ADDR_FIELD_NUMBER: _ClassVar[int]
    userspace_addr: int
    def __init__(self, userspace_addr: _Optional[int] = ...) -> None: ...

class GuestMemfdFtruncateRequest(_message.Message):
    __slots__ = ("td_id", "fd", "length")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    fd: int
    length: int
    def __init__(self, td_id: _Optional[int] = ..., fd: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class GuestMemfdFtruncateResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TdGpa(_message.Message):
    __slots__ = ("td_id", "gpa")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    GPA_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    gpa: int
    def __init__(self, td_id: _Optional[int] = ..., gpa: _Optional[int] = ...) -> None: ...

class PhysicalReadRequest(_message.Message):
    __slots__ = ("path", "pa", "td_gpa", "length")
    PATH_FIELD_NUMBER: _ClassVar[int]
    PA_FIELD_NUMBER: _ClassVar[int]
    TD_GPA_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    path: PhysicalPath
    pa: int
    td_gpa: TdGpa
    length: int
    def __init__(self, path: _Optional[_Union[PhysicalPath, str]] = ..., pa: _Optional[int] = ..., td_gpa: _Optional[_Union[TdGpa, _Mapping]] = ..., length: _Optional[int] = ...) -> None: ...

class PhysicalReadResponse(_message.Message):
    __slots__ = ("pa", "data", "macs", "private")
    PA_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MACS_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_FIELD_NUMBER: _ClassVar[int]
    pa: int
    data: bytes
    macs: bytes
    private: bool
    def __init__(self, pa: _Optional[int] = ..., data: _Optional[bytes] = ..., macs: _Optional[bytes] = ..., private: _Optional[bool] = ...) -> None: ...

class PhysicalWriteRequest(_message.Message):
    __slots__ = ("path", "pa", "td_gpa", "data", "macs")
    PATH_FIELD_NUMBER: _ClassVar[int]
    PA_FIELD_NUMBER: _ClassVar[int]
    TD_GPA_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MACS_FIELD_NUMBER: _ClassVar[int]
    path: PhysicalPath
    pa: int
    td_gpa: TdGpa
    data: bytes
    macs: bytes
    def __init__(self, path: _Optional[_Union[PhysicalPath, str]] = ..., pa: _Optional[int] = ..., td_gpa: _Optional[_Union[TdGpa, _Mapping]] = ..., data: _Optional[bytes] = ..., macs: _Optional[bytes] = ...) -> None: ...

class PhysicalWriteResponse(_message.Message):
    __slots__ = ("pa",)
    PA_FIELD_NUMBER: _ClassVar[int]
    pa: int
    def __init__(self, pa: _Optional[int] = ...) -> None: ...

class GpaRun(_message.Message):
    __slots__ = ("gpa", "size", "state", "private", "memslot", "guest_memfd", "guest_memfd_offset")
    GPA_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_FIELD_NUMBER: _ClassVar[int]
    MEMSLOT_FIELD_NUMBER: _ClassVar[int]
    GUEST_MEMFD_FIELD_NUMBER: _ClassVar[int]
    GUEST_MEMFD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    gpa: int
    size: int
    state: GpaState
    private: bool
    memslot: int
    guest_memfd: int
    guest_memfd_offset: int
    def __init__(self, gpa: _Optional[int] = ..., size: _Optional[int] = ..., state: _Optional[_Union[GpaState, str]] = ..., private: _Optional[bool] = ..., memslot: _Optional[int] = ..., guest_memfd: _Optional[int] = ..., guest_memfd_offset: _Optional[int] = ...) -> None: ...

class MemslotInfo(_message.Message):
    __slots__ = ("slot", "flags", "guest_phys_addr", "memory_size", "userspace_addr", "guest_memfd", "guest_memfd_offset")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    GUEST_PHYS_ADDR_FIELD_NUMBER: _ClassVar[int]
    MEMORY_SIZE_FIELD_NUMBER: _ClassVar[int]
    USERSPACE_ADDR_FIELD_NUMBER: _ClassVar[int]
    GUEST_MEMFD_FIELD_NUMBER: _ClassVar[int]
    GUEST_MEMFD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    slot: int
    flags: int
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    guest_memfd: int
    guest_memfd_offset: int
    def __init__(self, slot: _Optional[int] = ..., flags: _Optional[int] = ..., guest_phys_addr: _Optional[int] = ..., memory_size: _Optional[int] = ..., userspace_addr: _Optional[int] = ..., guest_memfd: _Optional[int] = ..., guest_memfd_offset: _Optional[int] = ...) -> None: ...

class GetGpaMapRequest(_message.Message):
    __slots__ = ("td_id", "start_gpa", "max_runs")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    START_GPA_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNS_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    start_gpa: int
    max_runs: int
    def __init__(self, td_id: _Optional[int] = ..., start_gpa: _Optional[int] = ..., max_runs: _Optional[int] = ...) -> None: ...

class GetGpaMapResponse(_message.Message):
    __slots__ = ("runs", "memslots", "complete", "next_gpa", "shared_bit", "memory_mode")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    MEMSLOTS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    NEXT_GPA_FIELD_NUMBER: _ClassVar[int]
    SHARED_BIT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MODE_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[GpaRun]
    memslots: _containers.RepeatedCompositeFieldContainer[MemslotInfo]
    complete: bool
    next_gpa: int
    shared_bit: int
    memory_mode: str
    def __init__(self, runs: _Optional[_Iterable[_Union[GpaRun, _Mapping]]] = ..., memslots: _Optional[_Iterable[_Union[MemslotInfo, _Mapping]]] = ..., complete: _Optional[bool] = ..., next_gpa: _Optional[int] = ..., shared_bit: _Optional[int] = ..., memory_mode: _Optional[str] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("memory_mode", "integrity", "tds", "keyids_total", "keyids_free", "phys_pages_total", "phys_pages_free", "private_pages", "poisoned_lines", "exits", "conversions")
    MEMORY_MODE_FIELD_NUMBER: _ClassVar[int]
    INTEGRITY_FIELD_NUMBER: _ClassVar[int]
    TDS_FIELD_NUMBER: _ClassVar[int]
    KEYIDS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    KEYIDS_FREE_FIELD_NUMBER: _ClassVar[int]
    PHYS_PAGES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PHYS_PAGES_FREE_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_PAGES_FIELD_NUMBER: _ClassVar[int]
    POISONED_LINES_FIELD_NUMBER: _ClassVar[int]
    EXITS_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    memory_mode: str
    integrity: bool
    tds: int
    keyids_total: int
    keyids_free: int
    phys_pages_total: int
    phys_pages_free: int
    private_pages: int
    poisoned_lines: int
    exits: int
    conversions: int
    def __init__(self, memory_mode: _Optional[str] = ..., integrity: _Optional[bool] = ..., tds: _Optional[int] = ..., keyids_total: _Optional[int] = ..., keyids_free: _Optional[int] = ..., phys_pages_total: _Optional[int] = ..., phys_pages_free: _Optional[int] = ..., private_pages: _Optional[int] = ..., poisoned_lines: _Optional[int] = ..., exits: _Optional[int] = ..., conversions: _Optional[int] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("td_id", "all_tds")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    ALL_TDS_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    all_tds: bool
    def __init__(self, td_id: _Optional[int] = ..., all_tds: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("kind", "td_id", "gpa", "size", "flags", "detail", "time")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Event.Kind]
        KIND_TD_CREATED: _ClassVar[Event.Kind]
        KIND_TD_FINALIZED: _ClassVar[Event.Kind]
        KIND_TD_DESTROYED: _ClassVar[Event.Kind]
        KIND_TD_DEAD: _ClassVar[Event.Kind]
        KIND_MEMORY_FAULT: _ClassVar[Event.Kind]
        KIND_MAP_GPA: _ClassVar[Event.Kind]
        KIND_CONVERSION: _ClassVar[Event.Kind]
        KIND_POISON: _ClassVar[Event.Kind]
        KIND_HOST_CRASH: _ClassVar[Event.Kind]
        KIND_HOST_ACCESS_REFUSED: _ClassVar[Event.Kind]
        KIND_WATCH_STARTED: _ClassVar[Event.Kind]
    KIND_UNSPECIFIED: Event.Kind
    KIND_TD_CREATED: Event.Kind
    KIND_TD_FINALIZED: Event.Kind
    KIND_TD_DESTROYED: Event.Kind
    KIND_TD_DEAD: Event.Kind
    KIND_MEMORY_FAULT: Event.Kind
    KIND_MAP_GPA: Event.Kind
    KIND_CONVERSION: Event.Kind
    KIND_POISON: Event.Kind
    KIND_HOST_CRASH: Event.Kind
    KIND_HOST_ACCESS_REFUSED: Event.Kind
    KIND_WATCH_STARTED: Event.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    GPA_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    kind: Event.Kind
    td_id: int
    gpa: int
    size: int
    flags: int
    detail: str
    time: float
    def __init__(self, kind: _Optional[_Union[Event.Kind, str]] = ..., td_id: _Optional[int] = ..., gpa: _Optional[int] = ..., size: _Optional[int] = ..., flags: _Optional[int] = ..., detail: _Optional[str] = ..., time: _Optional[float] = ...) -> None: ...
