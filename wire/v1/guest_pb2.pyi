from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VpInfoRequest(_message.Message):
    __slots__ = ("td_id",)
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    def __init__(self, td_id: _Optional[int] = ...) -> None: ...

class VpInfoResponse(_message.Message):
    __slots__ = ("gpa_width", "attributes", "num_vcpus", "shared_bit")
    GPA_WIDTH_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    NUM_VCPUS_FIELD_NUMBER: _ClassVar[int]
    SHARED_BIT_FIELD_NUMBER: _ClassVar[int]
    gpa_width: int
    attributes: int
    num_vcpus: int
    shared_bit: int
    def __init__(self, gpa_width: _Optional[int] = ..., attributes: _Optional[int] = ..., num_vcpus: _Optional[int] = ..., shared_bit: _Optional[int] = ...) -> None: ...

class GpaRange(_message.Message):
    __slots__ = ("gpa", "length")
    GPA_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    gpa: int
    length: int
    def __init__(self, gpa: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class GpaData(_message.Message):
    __slots__ = ("gpa", "data")
    GPA_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    gpa: int
    data: bytes
    def __init__(self, gpa: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ReadMemoryRequest(_message.Message):
    __slots__ = ("td_id", "ranges")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    ranges: _containers.RepeatedCompositeFieldContainer[GpaRange]
    def __init__(self, td_id: _Optional[int] = ..., ranges: _Optional[_Iterable[_Union[GpaRange, _Mapping]]] = ...) -> None: ...

class ReadMemoryResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, data: _Optional[_Iterable[bytes]] = ...) -> None: ...

class WriteMemoryRequest(_message.Message):
    __slots__ = ("td_id", "writes")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    WRITES_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    writes: _containers.RepeatedCompositeFieldContainer[GpaData]
    def __init__(self, td_id: _Optional[int] = ..., writes: _Optional[_Iterable[_Union[GpaData, _Mapping]]] = ...) -> None: ...

class WriteMemoryResponse(_message.Message):
    __slots__ = ("bytes_written",)
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    bytes_written: int
    def __init__(self, bytes_written: _Optional[int] = ...) -> None: ...

class AcceptPagesRequest(_message.Message):
    __slots__ = ("td_id", "ranges", "level")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    ranges: _containers.RepeatedCompositeFieldContainer[GpaRange]
    level: int
    def __init__(self, td_id: _Optional[int] = ..., ranges: _Optional[_Iterable[_Union[GpaRange, _Mapping]]] = ..., level: _Optional[int] = ...) -> None: ...

class AcceptPagesResponse(_message.Message):
    __slots__ = ("pages_accepted", "already_accepted", "last_status")
    PAGES_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    LAST_STATUS_FIELD_NUMBER: _ClassVar[int]
    pages_accepted: int
    already_accepted: int
    last_status: int
    def __init__(self, pages_accepted: _Optional[int] = ..., already_accepted: _Optional[int] = ..., last_status: _Optional[int] = ...) -> None: ...

class MapGpaRequest(_message.Message):
    __slots__ = ("td_id", "gpa", "size")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    GPA_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    gpa: int
    size: int
    def __init__(self, td_id: _Optional[int] = ..., gpa: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class MapGpaResponse(_message.Message):
    __slots__ = ("status", "failed_gpa", "chunks")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FAILED_GPA_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    status: int
    failed_gpa: int
    chunks: int
    def __init__(self, status: _Optional[int] = ..., failed_gpa: _Optional[int] = ..., chunks: _Optional[int] = ...) -> None: ...

class Instruction(_message.Message):
    __slots__ = ("read", "write", "accept", "map_gpa", "rtmr_extend", "report", "get_quote")
    READ_FIELD_NUMBER: _ClassVar[int]
    WRITE_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    MAP_GPA_FIELD_NUMBER: _ClassVar[int]
    RTMR_EXTEND_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    GET_QUOTE_FIELD_NUMBER: _ClassVar[int]
    read: GpaRange
    write: GpaData
    accept: AcceptRange
    map_gpa: GpaRange
    rtmr_extend: RtmrExtend
    report: Report
    get_quote: GpaRange
    def __init__(self, read: _Optional[_Union[GpaRange, _Mapping]] = ..., write: _Optional[_Union[GpaData, _Mapping]] = ..., accept: _Optional[_Union[AcceptRange, _Mapping]] = ..., map_gpa: _Optional[_Union[GpaRange, _Mapping]] = ..., rtmr_extend: _Optional[_Union[RtmrExtend, _Mapping]] = ..., report: _Optional[_Union[Report, _Mapping]] = ..., get_quote: _Optional[_Union[GpaRange, _Mapping]] = ...) -> None: ...

class AcceptRange(_message.Message):
    __slots__ = ("gpa", "length", "level")
    GPA_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    gpa: int
    length: int
    level: int
    def __init__(self, gpa: _Optional[int] = ..., length: _Optional[int] = ..., level: _Optional[int] = ...) -> None: ...

class RtmrExtend(_message.Message):
    __slots__ = ("gpa", "index")
    GPA_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    gpa: int
    index: int
    def __init__(self, gpa: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class Report(_message.Message):
    __slots__ = ("report_gpa", "reportdata_gpa")
    REPORT_GPA_FIELD_NUMBER: _ClassVar[int]
    REPORTDATA_GPA_FIELD_NUMBER: _ClassVar[int]
    report_gpa: int
    reportdata_gpa: int
    def __init__(self, report_gpa: _Optional[int] = ..., reportdata_gpa: _Optional[int] = ...) -> None: ...

class InstructionResult(_message.Message):
    __slots__ = ("data", "status", "failed_gpa", "pages_accepted", "already_accepted", "chunks")
    DATA_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FAILED_GPA_FIELD_NUMBER: _ClassVar[int]
    PAGES_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    status: int
    failed_gpa: int
    pages_accepted: int
    already_accepted: int
    chunks: int
    def __init__(self, data: _Optional[bytes] = ..., status: _Optional[int] = ..., failed_gpa: _Optional[int] = ..., pages_accepted: _Optional[int] = ..., already_accepted: _Optional[int] = ..., chunks: _Optional[int] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("td_id", "instructions")
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    instructions: _containers.RepeatedCompositeFieldContainer[Instruction]
    def __init__(self, td_id: _Optional[int] = ..., instructions: _Optional[_Iterable[_Union[Instruction, _Mapping]]] = ...) -> None: ...

class RunResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[InstructionResult]
    def __init__(self, results: _Optional[_Iterable[_Union[InstructionResult, _Mapping]]] = ...) -> None: ...

class AttachRequest(_message.Message):
    __slots__ = ("td_id",)
    TD_ID_FIELD_NUMBER: _ClassVar[int]
    td_id: int
    def __init__(self, td_id: _Optional[int] = ...) -> None: ...

class AttachEvent(_message.Message):
    __slots__ = ("detail",)
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    detail: str
    def __init__(self, detail: _Optional[str] = ...) -> None: ...

class EchoRequest(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class EchoResponse(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...
