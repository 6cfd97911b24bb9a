"""Plugins: other packages add tasks and CLI commands through the ``varedit.plugins`` entry-point group.

A plugin is a distribution that declares, in its ``pyproject.toml``::

    [project.entry-points."varedit.plugins"]
    myplugin = "my_package.varedit_plugin:register"

``register`` is called with a :class:`PluginAPI` and adds what the plugin offers::

    def register(api):
        api.add_command(my_click_command)           # `varedit my-command ...`
        api.add_task("my-task", my_task)            # varedit.extensions.get_task("my-task")

Discovery is lazy: a built-in command (``varedit inpaint ...``) never looks at plugins; the entry
points are read (and each plugin's ``register`` run) only when the command list is needed
(``varedit --help``, an unknown command name) or when the Python API asks (:func:`load_plugins`).
Keep the module an entry point names cheap to import (import torch and friends inside the command
or task), since ``varedit --help`` imports it.

A plugin that fails (its module does not import, its object is not callable, ``register`` raises, a
command name is taken) is reported in one warning line naming it and the error, and everything else
keeps working. Nothing here imports torch.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple

if TYPE_CHECKING:  # click is imported by the CLI; the Python API path does not need it
    import click

log = logging.getLogger(__name__)

GROUP = "varedit.plugins"
#: the plugin interface version handed to ``register`` (``api.api_version``); raised on breaking changes
API_VERSION = 1


# records are NamedTuples and plain classes, not dataclasses: this module is imported by every `varedit`
# run, and a NamedTuple is several times cheaper to create than a dataclass (-X importtime)
class Task(NamedTuple):
    """A task a plugin added: ``func(editor, *args, **kwargs)``, where ``editor`` is a
    :class:`varedit.tasks.Editor` (``pipe.editor`` or ``OnnxVAR.editor()``)."""

    name: str
    func: Callable[..., Any]
    plugin: str
    help: str = ""

    def __call__(self, editor: Any, *args: Any, **kwargs: Any) -> Any:
        return self.func(editor, *args, **kwargs)


class PluginFailure(NamedTuple):
    """A plugin that could not be loaded, and why (one line)."""

    plugin: str
    source: str       # the entry point's value and its distribution, e.g. "pkg.mod:register (pkg 1.0)"
    error: str


class Plugins:
    """What discovery found: commands and tasks by name, the plugins loaded, and the failures."""

    def __init__(self) -> None:
        self.commands: dict[str, click.Command] = {}
        self.command_plugin: dict[str, str] = {}   # command name -> the plugin that added it
        self.tasks: dict[str, Task] = {}
        self.loaded: list[str] = []
        self.failures: list[PluginFailure] = []

    def __repr__(self) -> str:
        return (f"Plugins(loaded={self.loaded}, commands={sorted(self.commands)}, tasks={sorted(self.tasks)}, "
                f"failures={[f.plugin for f in self.failures]})")


class PluginAPI:
    """Handed to a plugin's ``register(api)``: the one way a plugin adds things.

    ``api.plugin`` is the plugin's entry-point name, ``api.varedit_version`` the host's version and
    ``api.api_version`` this interface's version (:data:`API_VERSION`).
    """

    def __init__(self, plugin: str, *, reserved_commands: Iterable[str] = (), plugins: Plugins | None = None):
        from . import __version__
        self.plugin = plugin
        self.varedit_version = __version__
        self.api_version = API_VERSION
        self._reserved = frozenset(reserved_commands)
        self._into = plugins if plugins is not None else Plugins()
        self._commands: dict[str, Any] = {}
        self._tasks: dict[str, Task] = {}

    def add_command(self, command: click.Command, name: str | None = None) -> None:
        """Add a click command (or group) as ``varedit NAME`` (default: the command's own name).
        A name a built-in command or another plugin already has is an error."""
        import click
        if not isinstance(command, click.Command):
            raise TypeError(f"add_command needs a click.Command, got {type(command).__name__}")
        name = name or command.name
        if not name:
            raise ValueError("the command has no name: pass name=")
        if name in self._reserved:
            raise ValueError(f"command {name!r} is a built-in varedit command")
        if name in self._into.commands or name in self._commands:
            owner = self._into.command_plugin.get(name, self.plugin)
            raise ValueError(f"command {name!r} is already added by plugin {owner!r}")
        self._commands[name] = command

    def add_task(self, name: str, func: Callable[..., Any], help: str | None = None) -> None:
        """Add a task ``func(editor, *args, **kwargs)`` under ``name`` (see :func:`get_task`)."""
        if not callable(func):
            raise TypeError(f"add_task needs a callable, got {type(func).__name__}")
        if not name or not isinstance(name, str):
            raise ValueError("a task needs a non-empty name")
        if name in self._into.tasks or name in self._tasks:
            owner = self._into.tasks[name].plugin if name in self._into.tasks else self.plugin
            raise ValueError(f"task {name!r} is already added by plugin {owner!r}")
        doc = help if help is not None else (func.__doc__ or "").strip().split("\n")[0]
        self._tasks[name] = Task(name, func, self.plugin, doc)

    def _commit(self) -> None:
        """Publish what ``register`` added, all or nothing (a plugin that raises adds nothing)."""
        for name, cmd in self._commands.items():
            self._into.commands[name] = cmd
            self._into.command_plugin[name] = self.plugin
        self._into.tasks.update(self._tasks)
        self._into.loaded.append(self.plugin)


class _Dist(NamedTuple):
    name: str
    version: str


class EntryPoint(NamedTuple):
    """An entry point found by the fast scan (the same fields and ``load()`` as importlib.metadata's)."""

    name: str
    value: str
    group: str
    dist: _Dist | None = None

    def load(self) -> Any:
        import importlib
        import re
        m = re.match(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?(\[.*\])?\s*$", self.value)
        if m is None:
            raise ValueError(f"malformed entry point value {self.value!r} (expected module:attribute)")
        obj = importlib.import_module(m.group("module"))
        for part in (m.group("attr") or "").split(".") if m.group("attr") else ():
            obj = getattr(obj, part)
        return obj


def _normalize(name: str) -> str:
    import re
    return re.sub(r"[-_.]+", "-", name).lower()


def _group_entries(text: str, group: str) -> list[tuple[str, str]]:
    out, inside = [], False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            inside = line[1:-1].strip() == group
        elif inside and "=" in line:
            name, _, value = line.partition("=")
            out.append((name.strip(), value.strip()))
    return out


def _scan(group: str) -> list[EntryPoint] | None:
    """The fast path of discovery: read ``entry_points.txt`` of the ``*.dist-info`` / ``*.egg-info``
    folders on ``sys.path`` directly, in importlib.metadata's order (path entries in order, dist-info
    before egg-info, the first distribution of a name wins). importlib.metadata finds the same entry
    points (tested) but imports and parses every distribution's metadata on each ``varedit --help``, which
    costs more than this whole path (docs/decisions.md, "Plugins are found by reading entry_points.txt").
    None when it cannot see what importlib.metadata would (a zip file on sys.path, a meta-path finder
    that provides distributions): use importlib.metadata."""
    import os
    import sys
    from importlib.machinery import PathFinder
    if any(f is not PathFinder and getattr(f, "find_distributions", None) is not None for f in sys.meta_path):
        return None
    seen: set[str] = set()
    found: list[EntryPoint] = []
    for entry in sys.path:
        root = entry or "."
        if os.path.isfile(root):
            return None
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for suffix in (".dist-info", ".egg-info"):
            for n in names:
                if not n.endswith(suffix):
                    continue
                dist_name, _, version = n[: -len(suffix)].partition("-")
                key = _normalize(dist_name)
                if key in seen:
                    continue
                seen.add(key)
                try:
                    with open(os.path.join(root, n, "entry_points.txt"), encoding="utf-8") as fh:
                        text = fh.read()
                except OSError:  # no entry points (or an egg-info file, not a folder)
                    continue
                dist = _Dist(dist_name, version.split("-")[0])
                found.extend(EntryPoint(k, v, group, dist) for k, v in _group_entries(text, group))
    return found


def _entry_points(group: str) -> list[Any]:
    eps: list[Any] | None = _scan(group)
    if eps is None:
        from importlib.metadata import entry_points
        eps = list(entry_points(group=group))
    # a distribution found twice on sys.path (an editable install beside a build, say) lists its entry
    # points twice: keep the first of each name, as the import system would
    seen: dict[str, Any] = {}
    for ep in eps:
        seen.setdefault(ep.name, ep)
    return sorted(seen.values(), key=lambda ep: ep.name)


def _source(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    where = f" ({dist.name} {dist.version})" if dist is not None and getattr(dist, "name", None) else ""
    return f"{ep.value}{where}"


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_plugins(*, group: str = GROUP, reserved_commands: Iterable[str] = (),
                 entry_points: Iterable[Any] | None = None) -> Plugins:
    """Load every plugin of the entry-point ``group`` and return what they added.

    Each plugin is isolated: a failure is logged as one warning line (``plugin NAME (SOURCE) failed
    to load: ERROR``), recorded in ``Plugins.failures``, and the others load. ``reserved_commands``
    are names a plugin may not take (the CLI passes its built-in commands). ``entry_points``
    replaces discovery (objects with ``name``, ``value`` and ``load()``), for hosts and tests.
    Each call discovers afresh (it reads the entry points and imports the plugins again); keep the result.
    """
    eps = list(entry_points) if entry_points is not None else _entry_points(group)
    found = Plugins()
    reserved = frozenset(reserved_commands)
    for ep in eps:
        try:
            obj = ep.load()
            register = getattr(obj, "register", obj)  # a module (or object) with register(), or the function
            if not callable(register):
                raise TypeError(f"{ep.value} is not callable and has no register()")
            api = PluginAPI(ep.name, reserved_commands=reserved, plugins=found)
            register(api)
            api._commit()
        except Exception as e:  # noqa: BLE001 (a plugin must never take the host down)
            fail = PluginFailure(ep.name, _source(ep), _one_line(e))
            found.failures.append(fail)
            log.warning("plugin %r (%s) failed to load: %s", fail.plugin, fail.source, fail.error)
    return found


def get_task(name: str, plugins: Plugins | None = None) -> Task:
    """The task ``name`` added by a plugin; ``plugins`` defaults to a fresh :func:`load_plugins`.
    An unknown name is a ``ValueError`` listing the known ones."""
    found = plugins if plugins is not None else load_plugins()
    if name not in found.tasks:
        known = ", ".join(sorted(found.tasks)) or "none"
        raise ValueError(f"no plugin task {name!r} (installed plugin tasks: {known})")
    return found.tasks[name]


class PluginCommandsMixin:
    """Mixed into the CLI's click group: plugin commands resolve and list beside the built-in ones.

    The plugins are loaded at most once per invocation (kept in ``ctx.meta``, not in a global), and
    only when a name is not a built-in command or the command list is needed (help, completion).
    ``varedit --help`` shows them under "Plugin commands".
    """

    _META_KEY = "varedit.plugins"

    def _plugins(self, ctx: click.Context) -> Plugins:
        meta = ctx.meta
        if self._META_KEY not in meta:
            builtin = super().list_commands(ctx)  # type: ignore[misc]
            meta[self._META_KEY] = load_plugins(reserved_commands=builtin)
        return meta[self._META_KEY]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)  # type: ignore[misc]
        if cmd is not None:
            return cmd
        return self._plugins(ctx).commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugins(ctx).commands))  # type: ignore[misc]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        builtin = set(super().list_commands(ctx))  # type: ignore[misc]
        plugins = self._plugins(ctx)
        limit = formatter.width - 6 - max((len(n) for n in [*builtin, *plugins.commands]), default=0)
        for title, names in (("Commands", sorted(builtin)), ("Plugin commands", sorted(plugins.commands))):
            rows = []
            for name in names:
                cmd = self.get_command(ctx, name)
                if cmd is None or cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(limit)))
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


__all__ = ["API_VERSION", "GROUP", "PluginAPI", "PluginCommandsMixin", "PluginFailure", "Plugins", "Task", "get_task",
           "load_plugins"]
