"""Help that reads the way typer/click users expect: `--json` with no type after it, `TEXT`/`INTEGER`/`PATH` for
values, `NAME` (not `{name}`) in usage lines. Recent typer releases render `<bool>` and `{name}`; this restores the
click conventions on whichever typer is installed (a no-op where the hooks are absent)."""

from __future__ import annotations

from typing import Any

from typer import core

_CLICK_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN", "Path": "PATH"}


def _click_type(label: str) -> str:
    label = label.strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]
    return _CLICK_NAMES.get(label, label.upper() if label.isidentifier() else label)


def install() -> None:
    option: Any = getattr(core, "TyperOption", None)
    argument: Any = getattr(core, "TyperArgument", None)
    if option is None or argument is None or not hasattr(option, "display_type"):
        return
    option_type = option.display_type_rich
    argument_type = argument.display_type_rich

    def option_display(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) or getattr(self, "is_bool_flag", False):
            return None
        shown = option_type(self, ctx)
        return None if shown is None else _click_type(str(shown))

    def argument_display(self: Any, ctx: Any) -> str | None:
        shown = argument_type(self, ctx)
        return None if shown is None else _click_type(str(shown))

    option.display_type_rich = option_display
    argument.display_type_rich = argument_display
    if hasattr(argument, "_usage_display_name"):

        def usage_name(self: Any) -> str:
            name = str(self.metavar or self.name).upper()
            name = name if self.required else f"[{name}]"
            return name + ("..." if self.nargs != 1 else "")

        argument._usage_display_name = usage_name
