"""TLS for the data plane, as dask's ``Security``: one object that workers and clients share.

Off unless a certificate is given. With ``cert``, ``key`` and ``ca`` set, a worker's data
server listens on ``tls://host:port`` and every data connection -- worker to worker, client
to worker -- is TLS with **mutual** verification: each end presents a certificate signed by
the cluster's CA and checks the other's. Host names are not checked (workers are reached by
IP address or container name; dask does the same): any certificate the CA signed is a
member of the cluster. The cluster-secret handshake still runs inside TLS.

A process with TLS on speaks only TLS to ``tcp://``/``tls://`` peers (a plain ``tcp://``
address is refused rather than used in clear); same-user peers on one host still take the
local unix socket (:mod:`rdist.comm.local`), which never leaves the kernel.

Settings (lowest first): the YAML file's ``tls:`` section, ``RDIST_TLS__CERT`` and the
short ``RDIST_TLS_CERT`` / ``RDIST_TLS_KEY`` / ``RDIST_TLS_CA``, then a worker's
``--tls-cert`` / ``--tls-key`` / ``--tls-ca`` flags.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from rdist.config import Config, ConfigError, load_config


@dataclass(frozen=True)
class Security:
    """Certificate files (PEM) of this process and of the cluster's CA; all None: no TLS."""

    #: this process's certificate (chain), presented to peers
    tls_cert: str | None = None
    #: its private key; None when it is in the certificate file
    tls_key: str | None = None
    #: the CA that signs every member's certificate
    tls_ca: str | None = None
    _contexts: dict[bool, ssl.SSLContext] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not (self.tls_cert or self.tls_key or self.tls_ca):
            return
        if not self.tls_cert or not self.tls_ca:
            raise ConfigError(
                "TLS for the data plane needs a certificate and the cluster's CA: set "
                "--tls-cert and --tls-ca (RDIST_TLS_CERT, RDIST_TLS_CA), and --tls-key "
                "(RDIST_TLS_KEY) unless the key is in the certificate file"
            )
        for path, flag, env in (
            (self.tls_cert, "--tls-cert", "RDIST_TLS_CERT"),
            (self.tls_key, "--tls-key", "RDIST_TLS_KEY"),
            (self.tls_ca, "--tls-ca", "RDIST_TLS_CA"),
        ):
            if path and not Path(path).is_file():
                raise ConfigError(f"{flag} ({env}) names {path}, which is not a file")

    @classmethod
    def from_config(cls, config: Config | None = None) -> Security:
        """From the ``tls`` section of the configuration (file < environment < flags)."""
        tls = (config or load_config()).section("tls")
        return cls(tls.get("cert") or None, tls.get("key") or None, tls.get("ca") or None)

    @property
    def enabled(self) -> bool:
        return bool(self.tls_cert)

    def context(self, server_side: bool) -> ssl.SSLContext:
        """The TLS context of a data server (``server_side``) or of a connecting peer."""
        if not self.enabled:
            raise ConfigError("TLS is not configured (RDIST_TLS_CERT, RDIST_TLS_CA)")
        ctx = self._contexts.get(server_side)
        if ctx is None:
            ctx = self._contexts[server_side] = self._make_context(server_side)
        return ctx

    def _make_context(self, server_side: bool) -> ssl.SSLContext:
        assert self.tls_cert and self.tls_ca
        protocol = ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT
        ctx = ssl.SSLContext(protocol)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False  # any certificate of the cluster's CA is a member
        ctx.verify_mode = ssl.CERT_REQUIRED  # both ways: the server asks for the peer's too
        try:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
            ctx.load_verify_locations(self.tls_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"cannot load the data plane's TLS files (cert {self.tls_cert}, key "
                f"{self.tls_key or 'in the cert file'}, CA {self.tls_ca}): {exc}"
            ) from None
        return ctx

    def check(self) -> Security:
        """Load both contexts now, so a bad file fails at start and not at the first peer."""
        if self.enabled:
            self.context(server_side=True)
            self.context(server_side=False)
        return self
