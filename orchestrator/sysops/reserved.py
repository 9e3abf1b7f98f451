"""The top-level command words that belong to sysops itself, kept in one light module.

The CLI sends these words to its built-in command groups without looking at plugin routes, and the
rollout refuses a plugin command that starts with one of them. Both import this one tuple, so a plugin
can never claim a word whose route the CLI would then shadow with a built-in. It imports nothing, so
the routed-command hot path stays light.
"""

from __future__ import annotations

#: `plugin`, `serve`, `context`, `events`, `host`, `metrics`, `alerts`, `config`, `index`, `key` and `completion`
#: are the CLI's built-ins;
#: `help` and `version` are kept for sysops.
RESERVED_COMMANDS: tuple[str, ...] = (
    "plugin", "serve", "context", "events", "host", "metrics", "alerts", "config", "help", "version", "node-agent",
    "index", "key", "completion",
)  # fmt: skip
