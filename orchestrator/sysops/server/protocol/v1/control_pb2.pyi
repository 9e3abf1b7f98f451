from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UpRequest(_message.Message):
    __slots__ = ("manifest_json", "image", "fingerprint", "source", "key")
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    manifest_json: str
    image: str
    fingerprint: str
    source: str
    key: str
    def __init__(self, manifest_json: _Optional[str] = ..., image: _Optional[str] = ..., fingerprint: _Optional[str] = ..., source: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("message", "done", "result_json")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    message: str
    done: bool
    result_json: str
    def __init__(self, message: _Optional[str] = ..., done: _Optional[bool] = ..., result_json: _Optional[str] = ...) -> None: ...

class DownRequest(_message.Message):
    __slots__ = ("name", "purge", "cascade", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PURGE_FIELD_NUMBER: _ClassVar[int]
    CASCADE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    purge: bool
    cascade: bool
    force: bool
    def __init__(self, name: _Optional[str] = ..., purge: _Optional[bool] = ..., cascade: _Optional[bool] = ..., force: _Optional[bool] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("name", "to", "key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    to: int
    key: str
    def __init__(self, name: _Optional[str] = ..., to: _Optional[int] = ..., key: _Optional[str] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("kind", "name", "all")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    all: bool
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class QueryReply(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class ActRequest(_message.Message):
    __slots__ = ("kind", "arguments_json")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    kind: str
    arguments_json: str
    def __init__(self, kind: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class ActReply(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("name", "follow", "tail", "structured", "batched")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    STRUCTURED_FIELD_NUMBER: _ClassVar[int]
    BATCHED_FIELD_NUMBER: _ClassVar[int]
    name: str
    follow: bool
    tail: int
    structured: bool
    batched: bool
    def __init__(self, name: _Optional[str] = ..., follow: _Optional[bool] = ..., tail: _Optional[int] = ..., structured: _Optional[bool] = ..., batched: _Optional[bool] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class RoutesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Route(_message.Message):
    __slots__ = ("command", "plugin", "spec")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    command: str
    plugin: str
    spec: bytes
    def __init__(self, command: _Optional[str] = ..., plugin: _Optional[str] = ..., spec: _Optional[bytes] = ...) -> None: ...

class RoutesReply(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("command", "arguments_json", "output_format")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    command: str
    arguments_json: str
    output_format: str
    def __init__(self, command: _Optional[str] = ..., arguments_json: _Optional[str] = ..., output_format: _Optional[str] = ...) -> None: ...

class InvokeChunk(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: bytes
    def __init__(self, event: _Optional[bytes] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ("plugin", "follow", "after_id")
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    plugin: str
    follow: bool
    after_id: int
    def __init__(self, plugin: _Optional[str] = ..., follow: _Optional[bool] = ..., after_id: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "time", "plugin", "kind", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    time: float
    plugin: str
    kind: str
    message: str
    def __init__(self, id: _Optional[int] = ..., time: _Optional[float] = ..., plugin: _Optional[str] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
