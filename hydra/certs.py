"""``hydra certs``: a local certificate authority and a server certificate, for development TLS.

Real deployments should use certificates from their own CA or a managed Redis. These are for
``hydra up --tls``, the tests and a first compose setup: the server certificate names
``localhost``, ``127.0.0.1`` and ``redis`` (the compose service), plus the hosts given with
``hydra certs --host`` (the names volunteers use to reach Redis). An existing CA is never
overwritten unless asked (``--force``): volunteers already trust it.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hydra.errors import InvalidInput

DAYS = 825


def _plausible_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        labels = host.rstrip(".").split(".")
        return all(0 < len(label) <= 63 and label.replace("-", "").isalnum() for label in labels) and len(host) < 254


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hydra development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


DEFAULT_HOSTS = ("localhost", "127.0.0.1", "redis")


def make_certificates(
    out: Path, hosts: tuple[str, ...] | list[str] = DEFAULT_HOSTS, *, force: bool = False
) -> dict[str, Path]:
    """Write ca.pem, ca-key.pem, server.pem and server-key.pem into ``out``; return their paths.

    The server certificate names every host in ``hosts`` (DNS names or IP addresses). Refuses
    to replace an existing CA unless ``force``.
    """
    hosts = tuple(dict.fromkeys(h.strip() for h in hosts if h.strip()))
    if not hosts:
        raise InvalidInput("give at least one host name for the server certificate")
    for host in hosts:
        if not _plausible_host(host):
            raise InvalidInput(f"not a host name or IP address: {host!r}")
    if (out / "ca.pem").exists() and not force:
        raise InvalidInput(
            f"{out / 'ca.pem'} exists and volunteers may trust it: use another --out, or --force to replace it"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create {out}: {exc.strerror}") from None
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Hydra development CA"))
        .issuer_name(_name("Hydra development CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {
        "ca": out / "ca.pem",
        "ca_key": out / "ca-key.pem",
        "cert": out / "server.pem",
        "key": out / "server-key.pem",
    }
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key, paths["ca_key"])
    _write_key(key, paths["key"])
    return paths
