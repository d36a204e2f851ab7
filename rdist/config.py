"""Configuration: one object, from defaults < dask's configuration < YAML file <
environment < command-line flags.

The settings themselves -- names, defaults, environment forms, dask keys, who reads them --
are defined once, in :mod:`rdist.settings`. Where dask is installed, the ``distributed.*``
keys a user set (``~/.config/dask/*.yaml``, ``DASK_DISTRIBUTED__...``, ``dask.config.set``)
come right above the defaults. The YAML file is ``$RDIST_CONFIG`` or
``~/.config/rdist/rdist.yaml``; environment variables are ``RDIST_<SECTION>__<KEY>``
(``RDIST_SCHEDULER__WORKER_TTL=60``) plus the older flat names and the few that platforms
set for us (``REDIS_URL`` and ``PORT`` on Heroku). A setting that does not exist or a value
that cannot be used raises :class:`ConfigError` naming it and where it was set. ``rdist
config`` prints the result with where each value came from, secrets masked.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rdist.settings import BY_NAME, SETTINGS, Setting, defaults
from rdist.timeouts import seconds


def redis_url_from_env() -> str | None:
    """The configured ``redis.url`` (``RDIST_REDIS_URL``, Heroku's ``REDIS_URL``, the YAML
    file...), else None (start an embedded Redis)."""
    url = load_config().get("redis.url")
    return str(url) if url else None


def cluster_from_env() -> str:
    """The configured ``redis.cluster`` (``RDIST_CLUSTER``, ...)."""
    return str(load_config().get("redis.cluster"))


#: Every known setting, once: its default, environment forms, dask key and readers live in
#: :mod:`rdist.settings` (the table in docs/configuration.md is generated from it).
DEFAULTS: dict[str, dict[str, Any]] = defaults()

#: Environment variables that are not of the ``RDIST_<SECTION>__<KEY>`` form, lowest first.
ENV_ALIASES: list[tuple[str, str]] = [
    (alias, setting.name) for setting in SETTINGS for alias in setting.aliases
]
SECRETS = frozenset(setting.name for setting in SETTINGS if setting.secret)
SSL_CERT_REQS = BY_NAME["redis.ssl_cert_reqs"].choices


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the setting and source."""


@dataclass(frozen=True)
class Config:
    """The effective settings; ``sources`` says which layer set each ``section.key``."""

    data: dict[str, dict[str, Any]]
    sources: dict[str, str] = field(default_factory=dict)

    def get(self, dotted: str, default: Any = None) -> Any:
        section, _, key = dotted.partition(".")
        return self.data.get(section, {}).get(key, default)

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.data.get(name, {}))

    def with_overrides(
        self,
        overrides: Mapping[str, Any],
        source: str = "flag",
        origins: Mapping[str, str] | None = None,
    ) -> Config:
        """A copy with ``{"section.key": value}`` applied; None values (unset flags) are
        skipped. ``origins`` names where each value was set (an environment variable), for
        the message of a value that cannot be used."""
        data = copy.deepcopy(self.data)
        sources = dict(self.sources)
        for dotted, value in overrides.items():
            if value is None:
                continue
            try:
                _set(data, dotted, _coerce(dotted, value, source))
            except ConfigError as exc:
                if origins and dotted in origins:
                    raise ConfigError(f"{exc} (set by {origins[dotted]})") from None
                raise
            sources[dotted] = source
        return Config(data, sources)

    def render(self) -> str:
        """YAML-like text of every setting with its source, secrets and passwords masked."""
        lines = []
        for section in sorted(self.data):
            lines.append(f"{section}:")
            for key in sorted(self.data[section]):
                dotted = f"{section}.{key}"
                value = _masked(dotted, self.data[section][key])
                lines.append(
                    f"  {key}: {_yaml_scalar(value)}  # {self.sources.get(dotted, 'default')}"
                )
        return "\n".join(lines) + "\n"


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("RDIST_CONFIG"):
        return Path(env["RDIST_CONFIG"]).expanduser()
    return Path(env.get("HOME", "~")).expanduser() / ".config" / "rdist" / "rdist.yaml"


def load_config(
    overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Defaults, then dask's matching ``distributed.*`` settings (where dask is installed),
    then the YAML file, then the environment, then ``overrides`` (CLI flags)."""
    env = os.environ if env is None else env
    config = Config(copy.deepcopy(DEFAULTS), {})
    config = config.with_overrides(_from_dask(env), source="dask")
    path = config_path(env)
    config = config.with_overrides(
        _read_yaml(path, required=bool(env.get("RDIST_CONFIG"))), source=f"file {path}"
    )
    found = _from_env(env)
    config = config.with_overrides(
        {dotted: value for dotted, (_, value) in found.items()},
        source="env",
        origins={dotted: f"${name}" for dotted, (name, _) in found.items()},
    )
    return config.with_overrides(overrides or {}, source="flag")


def _from_dask(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``distributed.*`` keys of ``dask.config`` that a user set -- in a YAML file under
    ``~/.config/dask/``, a ``DASK_DISTRIBUTED__...`` variable or ``dask.config.set`` -- for
    the settings that have one (a value equal to distributed's own default is no setting).
    dask is imported only when one of those sources can exist: it costs a worker half a
    second to start otherwise."""
    dask_config = _dask_config(env)
    if dask_config is None:
        return {}
    found: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.dask is None:
            continue
        value = dask_config.get(setting.dask, default=_MISSING)
        if value is _MISSING or value == _dask_default(setting.dask):
            continue
        if value is False and isinstance(setting.default, float):
            value = 0.0  # dask's False turns a memory threshold off, as our 0 does
        if isinstance(value, list):  # dask's AMM policies: [{"class": "...", ...}]
            value = [v.get("class", "") if isinstance(v, dict) else v for v in value]
        found[setting.name] = value
    return found


_MISSING = object()


def _dask_config(env: Mapping[str, str]) -> Any:
    import sys

    dirs = _dask_dirs(env)
    if "dask.config" not in sys.modules:
        has_files = any(Path(d).is_dir() and any(Path(d).iterdir()) for d in dirs)
        if not has_files and not any(name.startswith("DASK_") for name in env):
            return None
    try:
        import dask.config
    except ImportError:
        return None
    if env is not os.environ:  # a given environment (tests, tools): dask's view of that one
        return _DaskView(dask.config.collect(dirs, env=env))
    return dask.config


def _dask_dirs(env: Mapping[str, str]) -> list[str]:
    """Where dask looks for YAML files (``dask.config.paths``), for this environment."""
    import sys

    dirs = [
        env.get("DASK_ROOT_CONFIG", "/etc/dask"),
        str(Path(sys.prefix) / "etc" / "dask"),
        str(Path(env.get("HOME", "~")).expanduser() / ".config" / "dask"),
    ]
    return dirs + ([env["DASK_CONFIG"]] if env.get("DASK_CONFIG") else [])


class _DaskView:
    """``dask.config.get`` over a configuration collected from a given environment."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data

    def get(self, key: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict):
                return default
            node = node.get(part, node.get(part.replace("-", "_"), _MISSING))
            if node is _MISSING:
                return default
        return node


def _dask_default(key: str) -> Any:
    """distributed's own default for ``key`` (its distributed.yaml), or _MISSING."""
    try:
        import dask.config
    except ImportError:  # pragma: no cover - _dask_config found dask
        return _MISSING
    for layer in dask.config.defaults:
        value = _DaskView(layer).get(key, _MISSING)
        if value is not _MISSING:
            return value
    return _DISTRIBUTED_DEFAULTS.get(key, _MISSING)


#: distributed's defaults for the keys we carry over, for when distributed is not imported
#: (its defaults then are not in ``dask.config.defaults``): a value equal to them is taken
#: as unset, as it would be once distributed is imported.
_DISTRIBUTED_DEFAULTS: dict[str, Any] = {
    "distributed.scheduler.allowed-failures": 3,
    "distributed.scheduler.work-stealing": True,
    "distributed.worker.memory.target": 0.6,
    "distributed.worker.memory.spill": 0.7,
    "distributed.worker.memory.pause": 0.8,
    "distributed.worker.memory.terminate": 0.95,
    "distributed.client.heartbeat": "5s",
    "distributed.comm.timeouts.connect": "30s",
    "distributed.scheduler.active-memory-manager.start": True,
    "distributed.scheduler.active-memory-manager.interval": "2s",
    "distributed.scheduler.active-memory-manager.measure": "optimistic",
    "distributed.scheduler.active-memory-manager.policies": [
        {"class": "distributed.active_memory_manager.ReduceReplicas"}
    ],
}


def _read_yaml(path: Path, required: bool) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise ConfigError(f"RDIST_CONFIG names {path}, which does not exist")
        return {}
    import yaml  # only needed when a file exists

    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
        raise ConfigError(f"{path} must map sections to settings, e.g. 'dashboard: {{port: 8787}}'")
    return {
        f"{section}.{key}": value
        for section, values in loaded.items()
        for key, value in values.items()
    }


def _from_env(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``section.key -> (variable, value)`` of the ``RDIST_SECTION__KEY`` variables and the
    aliases (a nested name beats its alias, a later alias an earlier one)."""
    found: dict[str, tuple[str, str]] = {}
    for name, dotted in ENV_ALIASES:
        if env.get(name):
            found[dotted] = (name, env[name])
    for name, value in env.items():
        if name.startswith("RDIST_") and "__" in name:
            section, _, key = name[len("RDIST_") :].partition("__")
            found[f"{section.lower()}.{key.lower()}"] = (name, value)
    return found


def _set(data: dict[str, dict[str, Any]], dotted: str, value: Any) -> None:
    section, _, key = dotted.partition(".")
    if not section or not key:
        raise ConfigError(f"setting {dotted!r} must look like 'section.key'")
    data.setdefault(section, {})[key] = value


def _coerce(dotted: str, value: Any, source: str) -> Any:
    """Parse strings (env, flags) to the type of the default; check durations and choices."""
    setting = BY_NAME.get(dotted)
    if setting is None:  # a typo would otherwise be ignored in silence
        import difflib

        close = difflib.get_close_matches(dotted, BY_NAME, n=1)
        hint = f"; did you mean {close[0]}?" if close else " (docs/configuration.md lists them)"
        raise ConfigError(f"{dotted} from {source} is no rdist setting{hint}")
    default = setting.default
    kind = type(default) if default is not None else setting.kind
    try:
        value = _parsed(setting, kind, value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{dotted} from {source} must be {_kind_name(setting)}, got {value!r}"
        ) from None
    if setting.choices and str(value).lower() not in setting.choices:
        raise ConfigError(f"{dotted} from {source} must be one of {setting.choices}, got {value!r}")
    return value.lower() if setting.choices else value


def _parsed(setting: Setting, kind: type, value: Any) -> Any:
    if value is None:
        return None
    if setting.duration:
        return seconds(value, setting.name)
    if kind is bool:
        return value if isinstance(value, bool) else _boolean(value)
    if kind is list:  # env and flags: comma separated
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        return [v.strip() for v in str(value).split(",") if v.strip()]
    if kind is str:
        return str(value)
    if isinstance(value, bool):  # YAML's true where a number is expected
        raise ValueError(value)
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return kind(value)  # env strings, and YAML ints where a float is expected


def _boolean(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(value)


_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", list: "a list"}


def _kind_name(setting: Setting) -> str:
    if setting.duration:
        return "a duration (seconds, or text like '30s')"
    kind = type(setting.default) if setting.default is not None else setting.kind
    return _KIND_NAMES.get(kind, "text")


#: Query parameters of a URL whose values are secrets (``?password=``, ``&token=``, ...).
_SECRET_PARAM = re.compile(r"(?i)([?&;][^=&;#]*(?:pass|pwd|token|secret|auth)[^=&;#]*=)[^&;#]*")
#: The user-information part of a URL, ``scheme://[user[:password]]@``, up to the last
#: ``@`` before the query (a password with an unescaped ``/`` or ``#`` is masked whole).
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^?]*)@")


def mask_url(url: Any) -> str:
    """``url`` with every secret in it replaced by ``***``: the whole ``user:password@``
    part (a lone ``:password@``, or a token given as the user name, alike) and the values
    of query parameters named like a password or token (``?password=``,
    ``&sentinel_password=``, ``?token=``). Whatever rdist prints, logs or shows in a repr
    passes through here."""
    text = _USERINFO.sub(r"\1***@", str(url), count=1)
    return _SECRET_PARAM.sub(r"\1***", text)


def _masked(dotted: str, value: Any) -> Any:
    if value and dotted in SECRETS:
        return "***"
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    text = str(value)
    special = any(c in text for c in ":#{}[],&*?|<>=!%@`'\"")
    looks_typed = text.lower() in ("null", "true", "false", "yes", "no", "~") or _is_number(text)
    return repr(text) if not text or special or looks_typed else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def redis_ssl_cert_reqs(env: Mapping[str, str] | None = None) -> str:
    """How ``rediss://`` connections check the server certificate: "required" unless the
    environment or the YAML file says "optional" or "none" (Heroku Redis's certificate is
    self-signed)."""
    return str(load_config(env=env).get("redis.ssl_cert_reqs")).lower()
