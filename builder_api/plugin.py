"""Loading the optional project plugin named by `plugin = "builder_plugin.py"`.

The plugin runs inside the daemon, with the daemon's rights: it is a trust boundary, not a
sandbox. It must define `register(api)`, where `api.add_route(method, path, handler)` adds an
endpoint (existing endpoints cannot be replaced).
"""

from __future__ import annotations

import importlib.util
from typing import Any


class PluginError(Exception):
    pass


def load_plugin(path: str, api: Any) -> None:
    spec = importlib.util.spec_from_file_location("builder_plugin", path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot load plugin {path!r}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the plugin's own bug: report it as a start-up refusal
        raise PluginError(f"plugin {path!r} failed to load: {exc!r}") from exc
    register = getattr(module, "register", None)
    if not callable(register):
        raise PluginError(f"plugin {path!r} defines no register(api) function")
    try:
        register(api)
    except Exception as exc:
        raise PluginError(f"plugin {path!r} register(api) failed: {exc!r}") from exc
