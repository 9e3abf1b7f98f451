"""The hello plugin: one command of each kind of return value."""

from collections.abc import Iterator
from typing import Literal

import humanize
from sysops_sdk import Plugin, argument, option, plugin_command


class HelloPlugin(Plugin):
    name = "hello"
    version = "1.0.0"
    description = "Friendly greetings"

    def initialize(self) -> None:
        self.greeted = 0

    def cleanup(self) -> None:
        pass

    def snapshot(self) -> dict[str, int]:
        return {"greeted": self.greeted}

    def restore(self, state: dict[str, int]) -> None:
        self.greeted = state.get("greeted", 0)

    @plugin_command("greet")
    @argument("name", help="Who to greet")
    @option("--greeting", help="Which greeting to use")
    @option("--times", help="How many times to greet")
    @option("--shout", is_flag=True, help="Greet in capitals")
    def greet(
        self, name: str, greeting: Literal["hello", "hi", "hey"] = "hello", times: int = 1, shout: bool = False
    ) -> str:
        """Greet someone by name."""
        self.greeted += 1
        text = " ".join([f"{greeting.capitalize()}, {name}!"] * times)
        return text.upper() if shout else text

    @plugin_command("info")
    def info(self) -> dict[str, object]:
        """Show what this plugin instance knows about itself."""
        return {"plugin": self.name, "version": self.version, "greeted": self.greeted}


@plugin_command("count")
@option("--to", help="Count up to this number")
@option("--delay", help="Seconds to wait between numbers")
def count(to: int = 3, delay: float = 0.0) -> Iterator[str]:
    """Stream the numbers from 1 up to --to, one line each."""
    import time

    for number in range(1, to + 1):
        yield f"{number}"
        if delay:
            time.sleep(delay)


@plugin_command("size")
@argument("size_bytes", help="A number of bytes")
def size(size_bytes: int) -> str:
    """Format a number of bytes for humans (uses the third-party 'humanize' package)."""
    return humanize.naturalsize(size_bytes)


@plugin_command("fail")
@argument("reason", help="The message of the error to raise")
def fail(reason: str = "something went wrong") -> None:
    """Raise an error, to show how failures look."""
    raise RuntimeError(reason)
