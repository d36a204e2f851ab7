"""A throwaway certificate authority for TLS tests, made with the ``openssl`` command line
(``cryptography`` is installed here only as a dependency of test tools, not of rdist)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Member:
    """The files one member of a cluster is started with."""

    cert: str
    key: str
    ca: str

    def env(self) -> dict[str, str]:
        return {"RDIST_TLS_CERT": self.cert, "RDIST_TLS_KEY": self.key, "RDIST_TLS_CA": self.ca}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> Path:
    """A self-signed CA certificate ``<name>-ca.pem`` (and its key) in ``directory``."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}-ca.key",
        "-out",
        f"{name}-ca.pem",
        "-days",
        "2",
        "-subj",
        f"/CN={name} test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    return directory / f"{name}-ca.pem"


def make_member(directory: Path, ca: str, member: str) -> Member:
    """A key and a certificate for ``member``, signed by the CA named ``ca``."""
    (directory / "leaf.ext").write_text(LEAF_EXTENSIONS)
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{member}.key",
        "-out",
        f"{member}.csr",
        "-subj",
        f"/CN={member}",
        cwd=directory,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{member}.csr",
        "-CA",
        f"{ca}-ca.pem",
        "-CAkey",
        f"{ca}-ca.key",
        "-CAcreateserial",
        "-out",
        f"{member}.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        cwd=directory,
    )
    return Member(
        str(directory / f"{member}.pem"),
        str(directory / f"{member}.key"),
        str(directory / f"{ca}-ca.pem"),
    )


@dataclass(frozen=True)
class Authorities:
    worker: Member  #: signed by the cluster's CA
    client: Member  #: signed by the cluster's CA too
    stranger: Member  #: signed by another CA


def make_authorities(directory: Path) -> Authorities:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line is needed to make test certificates")
    make_ca(directory, "cluster")
    make_ca(directory, "other")
    return Authorities(
        make_member(directory, "cluster", "worker"),
        make_member(directory, "cluster", "client"),
        make_member(directory, "other", "stranger"),
    )
