import enum
import types
from collections.abc import Iterator
from typing import Literal

import pytest
import sysops_sdk
from sysops_sdk import CommandDefinitionError, Plugin, argument, option, plugin_command, requires_permission
from sysops_sdk._commands import _registry, collect_commands, command_definition
from sysops_sdk._server import EntrypointError, load_plugin_class
from sysops_sdk.testing import PluginHarness


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@plugin_command("paint")
@argument("target", help="What to paint")
@option("--color", help="Which color")
@option("--coats", "-c", help="How many coats")
@option("--dry-run", is_flag=True, help="Only pretend")
@requires_permission("house.paint")
def paint(target: str, color: Color = Color.RED, coats: int = 1, dry_run: bool = False) -> str:
    """Paint something."""
    return f"{target}:{color}:{coats}:{dry_run}"


@plugin_command("db migrate")
def migrate(steps: int, mode: Literal["up", "down"] = "up", ratio: float = 0.5) -> Iterator[str]:
    yield f"{mode} {steps} {ratio}"


#: Module-level commands register themselves for every plugin in the process: these are taken out of the
#: SDK's registry again at once, and put back only while a test of this module runs (`_own_registry`).
_MODULE_COMMANDS = [paint, migrate]
for _command in _MODULE_COMMANDS:
    _registry.remove(_command)


@pytest.fixture(autouse=True)
def _own_registry() -> Iterator[None]:
    """Each test sees this module's commands, and nothing it registers (ghost, shade...) outlives it."""
    saved = list(_registry)
    _registry.extend(_MODULE_COMMANDS)
    yield
    _registry[:] = saved


class Sample(Plugin):
    name = "sample"
    version = "1.0.0"

    def initialize(self) -> None:
        self.ready = True

    def cleanup(self) -> None:
        self.ready = False

    @plugin_command("method-cmd", help="Explicit help")
    def method_cmd(self) -> dict[str, bool]:
        return {"ready": self.ready}

    @plugin_command("boom")
    def boom(self) -> None:
        raise ValueError("it broke\nsecond line")

    @plugin_command("stream")
    def stream(self) -> Iterator[str]:
        yield "a"
        yield "b"


def test_public_surface_is_exactly_all() -> None:
    exported = {
        name
        for name, value in vars(sysops_sdk).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert exported == set(sysops_sdk.__all__)


def test_decorators_describe_params_in_source_order() -> None:
    definition = command_definition(paint)
    assert definition.name == "paint"
    assert definition.help == "Paint something."
    assert definition.permissions == ["house.paint"]
    by_name = {p.name: p for p in definition.params}
    assert [p.name for p in definition.params] == ["target", "color", "coats", "dry_run"]
    assert by_name["target"].kind == "argument" and by_name["target"].required
    assert by_name["color"].type == "choice" and by_name["color"].choices == ("red", "blue")
    assert by_name["color"].default == "red"
    assert by_name["coats"].type == "int" and by_name["coats"].flags == ("--coats", "-c")
    assert by_name["dry_run"].is_flag and by_name["dry_run"].default is False


def test_enum_typed_argument_offers_its_values() -> None:
    @plugin_command("shade")
    @argument("color", type=Color, help="Which")
    def shade(color: Color) -> str:
        return color.value

    definition = command_definition(shade)
    assert definition.params[0].choices == ("red", "blue")
    assert definition.convert({"color": "blue"}) == {"color": Color.BLUE}


def test_types_are_inferred_from_annotations_without_decorators() -> None:
    definition = command_definition(migrate)
    by_name = {p.name: p for p in definition.params}
    assert by_name["steps"].kind == "argument" and by_name["steps"].type == "int"
    assert by_name["mode"].type == "choice" and by_name["mode"].choices == ("up", "down")
    assert by_name["mode"].flags == ("--mode",)
    assert by_name["ratio"].type == "float"


def test_harness_runs_methods_functions_generators_and_errors() -> None:
    harness = PluginHarness(Sample)
    names = harness.command_names()
    assert {"method-cmd", "paint", "db migrate", "boom", "stream"} <= set(names)
    assert harness.invoke("method-cmd").data == {"ready": True}
    assert harness.invoke("paint", target="door", coats=2).text == "door:Color.RED:2:False"
    assert harness.invoke("paint", target="door", color="blue").text == "door:Color.BLUE:1:False"
    assert harness.invoke("db migrate", steps=3).lines == ["up 3 0.5"]
    assert harness.invoke("stream").lines == ["a", "b"]
    failed = harness.invoke("boom")
    assert (failed.exit_code, failed.error) == (1, "it broke")
    assert harness.invoke("nope").exit_code == 2
    harness.close()
    assert harness.plugin.ready is False  # type: ignore[attr-defined]


def test_bad_declarations_are_refused() -> None:
    with pytest.raises(CommandDefinitionError, match="invalid command name"):
        plugin_command("Bad Name")
    with pytest.raises(CommandDefinitionError, match="must start with '-'"):
        option("strategy")
    with pytest.raises(CommandDefinitionError, match="unsupported parameter type"):
        argument("x", type=list)

    @plugin_command("ghost")
    @option("--missing", help="not a parameter")
    def ghost() -> None: ...

    with pytest.raises(CommandDefinitionError, match="declares missing but ghost"):
        command_definition(ghost)


def test_duplicate_command_names_name_both_functions() -> None:
    class Twice(Sample):
        @plugin_command("stream")
        def stream_again(self) -> None: ...

    with pytest.raises(CommandDefinitionError, match="defined twice"):
        collect_commands(Twice())


def test_get_service_is_injected_and_missing_services_are_named() -> None:
    plugin = Sample(services={"metrics": "m"})
    assert plugin.get_service("metrics") == "m"
    with pytest.raises(sysops_sdk.ServiceUnavailableError, match="asked for service 'alerting'"):
        plugin.get_service("alerting")


def test_entrypoint_loading_errors_are_clear() -> None:
    with pytest.raises(EntrypointError, match="must look like"):
        load_plugin_class("nocolon")
    with pytest.raises(EntrypointError, match="does not import: ModuleNotFoundError"):
        load_plugin_class("no_such_module_xyz:Plugin")
    with pytest.raises(EntrypointError, match=r"is not a sysops_sdk\.Plugin subclass"):
        load_plugin_class("json:JSONDecoder")
    assert load_plugin_class(f"{__name__}:Sample") is Sample
