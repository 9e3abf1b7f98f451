"""The hello plugin's own tests, written with the sysops test kit (the `plugin` fixture of sysops_sdk).

pytest examples/hello/tests                          in-process: fast, on a fake host
pytest examples/hello/tests --sysops-mode=container  in the plugin's real container, through the sysops CLI
sysops plugin test examples/hello                    these tests inside the plugin's own image
"""

from sysops_sdk.testing import PluginUnderTest


def test_greet_by_name(plugin: PluginUnderTest) -> None:
    result = plugin.invoke("greet", "World")
    assert result.exit_code == 0
    assert result.text == "Hello, World!"


def test_greet_options(plugin: PluginUnderTest) -> None:
    result = plugin.invoke("greet", "World", greeting="hi", times=2, shout=True)
    assert result.exit_code == 0
    assert result.text == "HI, WORLD! HI, WORLD!"


def test_info_is_data(plugin: PluginUnderTest) -> None:
    result = plugin.invoke("info")
    assert result.exit_code == 0
    assert result.data["plugin"] == "hello" and result.data["version"] == "1.0.0"


def test_count_streams_lines(plugin: PluginUnderTest) -> None:
    result = plugin.invoke("count", to=3)
    assert result.exit_code == 0
    assert result.lines == ["1", "2", "3"]


def test_size_uses_its_requirement(plugin: PluginUnderTest) -> None:
    assert plugin.invoke("size", 123456789).text == "123.5 MB"


def test_a_failing_command_exits_non_zero_with_its_message(plugin: PluginUnderTest) -> None:
    result = plugin.invoke("fail", "disk on fire")
    assert result.exit_code == 1
    assert "disk on fire" in result.error
