"""Configuration: one object, from defaults < YAML file < environment < command-line flags.

The YAML file is ``$RDIST_CONFIG`` or ``~/.config/rdist/rdist.yaml``; environment variables
are ``RDIST_<SECTION>__<KEY>`` (``RDIST_SCHEDULER__WORKER_TTL=60``) plus the few aliases that
platforms set for us (``REDIS_URL`` and ``PORT`` on Heroku). ``rdist config`` prints the
result with where each value came from, secrets masked.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def redis_url_from_env() -> str | None:
    """``RDIST_REDIS_URL``, else Heroku's ``REDIS_URL``, else None (start an embedded Redis)."""
    return os.environ.get("RDIST_REDIS_URL") or os.environ.get("REDIS_URL") or None


def cluster_from_env() -> str:
    return os.environ.get("RDIST_CLUSTER", "default")


#: Every known setting and its default; the type of a default is the type env values parse to.
DEFAULTS: dict[str, dict[str, Any]] = {
    "redis": {
        "url": None,  # None: start an embedded Redis (LocalCluster, Client())
        "cluster": "default",
        # "required" (verify), "optional" or "none": Heroku Redis uses a self-signed certificate
        "ssl_cert_reqs": "required",
    },
    "scheduler": {
        "worker_ttl": 30.0,
        "allowed_failures": 3,
        # "package.module:factory" of each scheduler plugin (rdist.plugins.scheduler_side)
        "plugins": [],
        # unpickle the scheduler plugins clients register (off: the scheduler runs no
        # code that clients send)
        "accept_client_plugins": False,
    },
    "worker": {"nthreads": 1, "host": "127.0.0.1", "memory_limit": "0", "resources": ""},
    "dashboard": {"host": "127.0.0.1", "port": 8787, "token": None, "interval": 1.0},
    # lines each process keeps of its log, in memory and in Redis (rdist.logbuffer)
    "logging": {"length": 1000},
    # TLS for the data plane (rdist.comm.security): PEM files; no cert, no TLS
    "tls": {"cert": None, "key": None, "ca": None},
}

#: Environment variables that are not of the ``RDIST_<SECTION>__<KEY>`` form, lowest first.
ENV_ALIASES: list[tuple[str, str]] = [
    ("REDIS_URL", "redis.url"),
    ("RDIST_REDIS_URL", "redis.url"),
    ("RDIST_CLUSTER", "redis.cluster"),
    ("RDIST_REDIS_SSL_CERT_REQS", "redis.ssl_cert_reqs"),
    ("PORT", "dashboard.port"),
    ("RDIST_DASHBOARD_TOKEN", "dashboard.token"),
    ("RDIST_TLS_CERT", "tls.cert"),
    ("RDIST_TLS_KEY", "tls.key"),
    ("RDIST_TLS_CA", "tls.ca"),
]
SECRETS = frozenset({"dashboard.token"})
SSL_CERT_REQS = ("required", "optional", "none")


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

    def with_overrides(self, overrides: Mapping[str, Any], source: str = "flag") -> Config:
        """A copy with ``{"section.key": value}`` applied; None values (unset flags) are skipped."""
        data = copy.deepcopy(self.data)
        sources = dict(self.sources)
        for dotted, value in overrides.items():
            if value is None:
                continue
            _set(data, dotted, _coerce(dotted, value, source))
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
    """Defaults, then the YAML file, then the environment, then ``overrides`` (CLI flags)."""
    env = os.environ if env is None else env
    config = Config(copy.deepcopy(DEFAULTS), {})
    path = config_path(env)
    config = config.with_overrides(
        _read_yaml(path, required=bool(env.get("RDIST_CONFIG"))), source=f"file {path}"
    )
    config = config.with_overrides(_from_env(env), source="env")
    return config.with_overrides(overrides or {}, source="flag")


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


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """``RDIST_SECTION__KEY`` variables, and the aliases (a generic name beats its alias)."""
    found: dict[str, Any] = {}
    for name, dotted in ENV_ALIASES:
        if env.get(name):
            found[dotted] = env[name]
    for name, value in env.items():
        if name.startswith("RDIST_") and "__" in name:
            section, _, key = name[len("RDIST_") :].partition("__")
            found[f"{section.lower()}.{key.lower()}"] = value
    return found


def _set(data: dict[str, dict[str, Any]], dotted: str, value: Any) -> None:
    section, _, key = dotted.partition(".")
    if not section or not key:
        raise ConfigError(f"setting {dotted!r} must look like 'section.key'")
    data.setdefault(section, {})[key] = value


def _coerce(dotted: str, value: Any, source: str) -> Any:
    """Parse strings (env, flags) to the type of the default; check the few enumerations."""
    section, _, key = dotted.partition(".")
    default = DEFAULTS.get(section, {}).get(key)
    try:
        if default is None or isinstance(default, str) or isinstance(value, type(default)):
            pass
        elif isinstance(default, bool):
            value = str(value).strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(default, list):  # env and flags: comma separated
            value = [v.strip() for v in str(value).split(",") if v.strip()]
        else:  # env strings, and YAML ints where a float is expected
            value = type(default)(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{dotted} from {source} must be a {type(default).__name__}, got {value!r}"
        ) from None
    if dotted == "redis.ssl_cert_reqs" and str(value).lower() not in SSL_CERT_REQS:
        raise ConfigError(
            f"redis.ssl_cert_reqs from {source} must be one of {SSL_CERT_REQS}, got {value!r}"
        )
    return value


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
