"""The plugin.yaml reference, generated from the pydantic model `sysops.core.manifest.Manifest`.

The model is what `plugin up` validates against, so its JSON schema (the same one exported to
manifests/plugin.schema.json) is the truth: every key, its type, default, bounds and description. One table
for the top level, then one per nested object, linked by anchor.
"""

from __future__ import annotations

import json
from typing import Any

from gen_docs.markdown import cell, code, generated_from, paragraph, table

#: Schema keywords shown as constraints, with how each reads.
_BOUNDS = {
    "minimum": ">= {}",
    "exclusiveMinimum": "> {}",
    "maximum": "<= {}",
    "exclusiveMaximum": "< {}",
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
    "maxProperties": "at most {} keys",
    "pattern": "matches `{}`",
}


def _anchor(name: str) -> str:
    """The anchor mkdocs' toc gives the heading of a nested object."""
    return name.lower()


def type_of(schema: dict[str, Any]) -> str:
    """A short, readable type: `integer`, `list of string`, `map of ConfigOption`, `one of: a, b`, ..."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    if "enum" in schema:
        return "one of: " + ", ".join(code(value) for value in schema["enum"])
    if "const" in schema:
        return code(json.dumps(schema["const"]))
    if "anyOf" in schema:
        kinds = [type_of(option) for option in schema["anyOf"] if option.get("type") != "null"]
        nullable = any(option.get("type") == "null" for option in schema["anyOf"])
        return " or ".join(kinds) + (" or null" if nullable else "")
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items") or {}
        return f"list of {type_of(items)}" if items else "list"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of {type_of(schema['additionalProperties'])}"
    return str(kind) if kind else "any"


def _constraints(schema: dict[str, Any]) -> list[str]:
    """The bounds of a value, from the schema and from the non-null branches of an anyOf."""
    branches = [schema] + [option for option in schema.get("anyOf", []) if option.get("type") != "null"]
    items = [branch["items"] for branch in branches if isinstance(branch.get("items"), dict)]
    found = [template.format(branch[key]) for branch in branches for key, template in _BOUNDS.items() if key in branch]
    found += [
        f"each {template.format(item[key])}" for item in items for key, template in _BOUNDS.items() if key in item
    ]
    return found


def _default(schema: dict[str, Any], required: bool) -> str:
    """The default as YAML-ish JSON, or 'required'."""
    if required:
        return "**required**"
    if "default" not in schema:
        return "-"
    return code(json.dumps(schema["default"]))


def _properties_table(schema: dict[str, Any]) -> str:
    """One row per key of an object schema."""
    required = set(schema.get("required", []))
    rows = []
    for key, prop in schema.get("properties", {}).items():
        notes = "; ".join(_constraints(prop))
        description = prop.get("description", "")
        rows.append(
            [
                code(key),
                type_of(prop),  # links and code spans only: no cell escaping
                _default(prop, key in required),
                cell(f"{description} ({notes})" if notes and description else description or notes),
            ]
        )
    return table(["key", "type", "default", "meaning"], rows)


def _enum_section(name: str, schema: dict[str, Any]) -> str:
    """A nested enum: its values."""
    values = ", ".join(code(value) for value in schema.get("enum", []))
    return "\n".join([f"## {name}\n", paragraph(schema.get("description", "")), f"Values: {values}\n"])


def render(schema: dict[str, Any]) -> str:
    """The whole page from the model's JSON schema."""
    parts = [
        "# Manifest reference: plugin.yaml\n",
        generated_from("the pydantic model `sysops.core.manifest.Manifest`"),
        paragraph(schema.get("description", "")),
        "Unknown keys are refused: every object below allows only the keys listed. The JSON Schema of the same "
        "model is `manifests/plugin.schema.json` (for editors).\n",
        "## Top-level keys\n",
        _properties_table(schema),
    ]
    for name, definition in sorted(schema.get("$defs", {}).items()):
        if "enum" in definition:
            parts.append(_enum_section(name, definition))
            continue
        parts += [f"## {name}\n", paragraph(definition.get("description", "")), _properties_table(definition)]
    return "\n".join(parts)


def generate() -> str:
    """The page for the Manifest model of the installed sysops."""
    from sysops.core.manifest import Manifest

    return render(Manifest.model_json_schema())
