from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CallerIdentity(_message.Message):
    __slots__ = ("principal", "granted_permissions")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    GRANTED_PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    principal: str
    granted_permissions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, principal: _Optional[str] = ..., granted_permissions: _Optional[_Iterable[str]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ("protocol_version", "caller")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    protocol_version: str
    caller: CallerIdentity
    def __init__(self, protocol_version: _Optional[str] = ..., caller: _Optional[_Union[CallerIdentity, _Mapping]] = ...) -> None: ...

class ParamSpec(_message.Message):
    __slots__ = ("name", "kind", "flags", "type", "help", "default_json", "required", "is_flag", "choices", "multiple", "metavar")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ARGUMENT: _ClassVar[ParamSpec.Kind]
        OPTION: _ClassVar[ParamSpec.Kind]
    ARGUMENT: ParamSpec.Kind
    OPTION: ParamSpec.Kind
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_JSON_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    IS_FLAG_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    METAVAR_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ParamSpec.Kind
    flags: _containers.RepeatedScalarFieldContainer[str]
    type: str
    help: str
    default_json: str
    required: bool
    is_flag: bool
    choices: _containers.RepeatedScalarFieldContainer[str]
    multiple: bool
    metavar: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ParamSpec.Kind, str]] = ..., flags: _Optional[_Iterable[str]] = ..., type: _Optional[str] = ..., help: _Optional[str] = ..., default_json: _Optional[str] = ..., required: _Optional[bool] = ..., is_flag: _Optional[bool] = ..., choices: _Optional[_Iterable[str]] = ..., multiple: _Optional[bool] = ..., metavar: _Optional[str] = ...) -> None: ...

class CommandSpec(_message.Message):
    __slots__ = ("name", "help", "params", "permissions", "timeout_seconds", "read_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    help: str
    params: _containers.RepeatedCompositeFieldContainer[ParamSpec]
    permissions: _containers.RepeatedScalarFieldContainer[str]
    timeout_seconds: float
    read_only: bool
    def __init__(self, name: _Optional[str] = ..., help: _Optional[str] = ..., params: _Optional[_Iterable[_Union[ParamSpec, _Mapping]]] = ..., permissions: _Optional[_Iterable[str]] = ..., timeout_seconds: _Optional[float] = ..., read_only: _Optional[bool] = ...) -> None: ...

class PluginDescriptor(_message.Message):
    __slots__ = ("protocol_version", "name", "version", "description", "commands", "subscriptions", "types", "sdk_version")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    SDK_VERSION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: str
    name: str
    version: str
    description: str
    commands: _containers.RepeatedCompositeFieldContainer[CommandSpec]
    subscriptions: _containers.RepeatedScalarFieldContainer[str]
    types: _containers.RepeatedScalarFieldContainer[str]
    sdk_version: str
    def __init__(self, protocol_version: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., description: _Optional[str] = ..., commands: _Optional[_Iterable[_Union[CommandSpec, _Mapping]]] = ..., subscriptions: _Optional[_Iterable[str]] = ..., types: _Optional[_Iterable[str]] = ..., sdk_version: _Optional[str] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("command", "arguments_json", "caller", "output_format")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    command: str
    arguments_json: str
    caller: CallerIdentity
    output_format: str
    def __init__(self, command: _Optional[str] = ..., arguments_json: _Optional[str] = ..., caller: _Optional[_Union[CallerIdentity, _Mapping]] = ..., output_format: _Optional[str] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("text", "continued")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTINUED_FIELD_NUMBER: _ClassVar[int]
    text: str
    continued: bool
    def __init__(self, text: _Optional[str] = ..., continued: _Optional[bool] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("kind", "text", "data_json", "exit_code", "error", "error_type", "continued")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        NONE: _ClassVar[Result.Kind]
        TEXT: _ClassVar[Result.Kind]
        DATA: _ClassVar[Result.Kind]
    NONE: Result.Kind
    TEXT: Result.Kind
    DATA: Result.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTINUED_FIELD_NUMBER: _ClassVar[int]
    kind: Result.Kind
    text: str
    data_json: str
    exit_code: int
    error: str
    error_type: str
    continued: bool
    def __init__(self, kind: _Optional[_Union[Result.Kind, str]] = ..., text: _Optional[str] = ..., data_json: _Optional[str] = ..., exit_code: _Optional[int] = ..., error: _Optional[str] = ..., error_type: _Optional[str] = ..., continued: _Optional[bool] = ...) -> None: ...

class InvokeEvent(_message.Message):
    __slots__ = ("output", "result")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    output: OutputChunk
    result: Result
    def __init__(self, output: _Optional[_Union[OutputChunk, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotReply(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: bytes
    def __init__(self, state: _Optional[bytes] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: bytes
    def __init__(self, state: _Optional[bytes] = ...) -> None: ...

class RestoreReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EventDelivery(_message.Message):
    __slots__ = ("id", "topic", "payload_json", "publisher", "time")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    id: int
    topic: str
    payload_json: str
    publisher: str
    time: float
    def __init__(self, id: _Optional[int] = ..., topic: _Optional[str] = ..., payload_json: _Optional[str] = ..., publisher: _Optional[str] = ..., time: _Optional[float] = ...) -> None: ...

class DeliveryReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = ("grace_seconds",)
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    grace_seconds: float
    def __init__(self, grace_seconds: _Optional[float] = ...) -> None: ...

class ShutdownReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
