"""The protocol reference, generated from the .proto files: services, their RPCs, messages, fields, enums.

protoc (grpcio-tools) compiles each file into a descriptor set with source info, so the comments written in
the .proto (leading and trailing) come out with each element: the page is the protos, readable. Covered:
the plugin protocol `sysops.plugin.v1` and the host services `sysops.host.v1` (sdk/), and the control API
`sysops.control.v1` the CLI speaks to a server (orchestrator/).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2  # type: ignore[import-untyped]

from gen_docs.markdown import cell, code, generated_from, paragraph, table

#: (include root, proto path inside it), relative to the repository root.
PROTOS = (
    ("sdk", "sysops_sdk/protocol/v1/plugin.proto"),
    ("sdk", "sysops_sdk/protocol/v1/host.proto"),
    ("orchestrator", "sysops/server/protocol/v1/control.proto"),
)

# Field numbers in descriptor.proto, used in SourceCodeInfo paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_SERVICE_METHOD, _ENUM_VALUE = 2, 2

_SCALARS = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Type.items()
    if name not in ("TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP")
}


class ProtocError(ValueError):
    """protoc refused a .proto file (or found none)."""


@dataclass(frozen=True)
class Comments:
    """The comments protoc attached to each element, by its SourceCodeInfo path."""

    by_path: dict[tuple[int, ...], str]

    def of(self, *path: int) -> str:
        """Leading and trailing comment of one element, joined into one paragraph."""
        return self.by_path.get(tuple(path), "")


def compile_descriptor(root: Path, include: str, proto: str) -> descriptor_pb2.FileDescriptorProto:
    """Run protoc on one file; its descriptor with source info (comments)."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "set.pb"
        code_ = protoc.main(
            ["protoc", f"-I{root / include}", "--include_source_info", f"--descriptor_set_out={out}", proto]
        )
        if code_ != 0:
            raise ProtocError(f"protoc failed on {include}/{proto} (exit {code_})")
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return descriptor_set.file[0]


def _comments(descriptor: descriptor_pb2.FileDescriptorProto) -> Comments:
    """Every element's comments, whitespace folded."""
    found: dict[tuple[int, ...], str] = {}
    for location in descriptor.source_code_info.location:
        text = " ".join(f"{location.leading_comments} {location.trailing_comments}".split())
        if text:
            found[tuple(location.path)] = text
    return Comments(found)


def anchor(package: str, name: str) -> str:
    """The explicit anchor of a message or enum: names repeat across packages (InvokeRequest)."""
    return f"{package}.{name}".lower().replace(".", "-")


def _type_name(field: descriptor_pb2.FieldDescriptorProto, package: str) -> str:
    """`string`, `repeated CommandSpec` (linked when defined in the same file), ..."""
    if field.type in (field.TYPE_MESSAGE, field.TYPE_ENUM):
        own = field.type_name.startswith(f".{package}.")
        name = field.type_name.removeprefix(f".{package}.") if own else field.type_name.removeprefix(".")
        kind = f"[{name}](#{anchor(package, name)})" if own else code(name)
    else:
        kind = _SCALARS.get(field.type, "?")
    return f"repeated {kind}" if field.label == field.LABEL_REPEATED else kind


def _heading(package: str, title: str) -> str:
    """A level-3 heading with its explicit anchor."""
    return f"### {title} {{#{anchor(package, title)}}}\n"


def _enum(
    enum: descriptor_pb2.EnumDescriptorProto, title: str, package: str, comments: Comments, path: tuple[int, ...]
) -> str:
    """An enum's heading, comment and values."""
    rows = [
        [code(value.name), str(value.number), cell(comments.of(*path, _ENUM_VALUE, i))]
        for i, value in enumerate(enum.value)
    ]
    return "\n".join(
        [_heading(package, title), paragraph(comments.of(*path)), table(["value", "number", "meaning"], rows)]
    )


def _message(
    message: descriptor_pb2.DescriptorProto, title: str, package: str, comments: Comments, path: tuple[int, ...]
) -> list[str]:
    """A message's heading, comment and fields, then its nested enums and messages."""
    rows = [
        [code(field.name), str(field.number), _type_name(field, package), cell(comments.of(*path, _MESSAGE_FIELD, i))]
        for i, field in enumerate(message.field)
    ]
    parts = [_heading(package, title), paragraph(comments.of(*path))]
    parts.append(table(["field", "number", "type", "meaning"], rows) if rows else "No fields.\n")
    for i, enum in enumerate(message.enum_type):
        parts.append(_enum(enum, f"{title}.{enum.name}", package, comments, (*path, _MESSAGE_ENUM, i)))
    for i, nested in enumerate(message.nested_type):
        if not nested.options.map_entry:
            parts += _message(nested, f"{title}.{nested.name}", package, comments, (*path, _MESSAGE_NESTED, i))
    return parts


def _service(service: descriptor_pb2.ServiceDescriptorProto, package: str, comments: Comments, index: int) -> str:
    """A service's heading, comment and RPCs."""
    path = (_FILE_SERVICE, index)
    rows = []
    for i, method in enumerate(service.method):
        request = method.input_type.removeprefix(f".{package}.")
        reply = method.output_type.removeprefix(f".{package}.")
        stream = "stream " if method.server_streaming else ""
        signature = f"{method.name}({'stream ' if method.client_streaming else ''}{request}) returns ({stream}{reply})"
        rows.append([code(signature), cell(comments.of(*path, _SERVICE_METHOD, i))])
    heading = f"### service {service.name} {{#{anchor(package, service.name)}}}\n"
    return "\n".join([heading, paragraph(comments.of(*path)), table(["rpc", "meaning"], rows)])


def render_file(descriptor: descriptor_pb2.FileDescriptorProto, shown_path: str) -> str:
    """One .proto as a section: its header comment, services, enums and messages."""
    comments = _comments(descriptor)
    package = descriptor.package
    header = comments.of(12)  # the `syntax` statement carries the file's opening comment
    parts = [f"## {package}\n", f"Source: `{shown_path}`.\n", paragraph(header)]
    parts += [_service(service, package, comments, i) for i, service in enumerate(descriptor.service)]
    parts += [_enum(enum, enum.name, package, comments, (_FILE_ENUM, i)) for i, enum in enumerate(descriptor.enum_type)]
    for i, message in enumerate(descriptor.message_type):
        parts += _message(message, message.name, package, comments, (_FILE_MESSAGE, i))
    return "\n".join(part for part in parts if part)


def generate(root: Path) -> str:
    """The page for every proto in PROTOS, from the repository at `root`."""
    parts = [
        "# Protocol reference\n",
        generated_from("the `.proto` files"),
        "The [protocol guide](../protocol.md) explains transport, authentication, versioning and the call "
        "sequence; this page lists every service, message and field with the comments of the protos.\n",
    ]
    parts += [render_file(compile_descriptor(root, include, proto), f"{include}/{proto}") for include, proto in PROTOS]
    return "\n".join(parts)
