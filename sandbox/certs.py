"""Throw-away TLS material: a local CA and one server certificate for 127.0.0.1 / localhost
(plus the ``--public-host`` name when it is another one), and signing certificates the same CA
issues (the SNS stand-in's message-signing key: :func:`ensure_signing_cert`).

The CA is written to ``<dir>/ca.pem``; clients verify the sandbox's HTTPS ports against it
(``httpx.Client(verify=ca)``, ``requests`` ``session.verify = ca`` / ``REQUESTS_CA_BUNDLE``,
``boto3 ... verify=ca``). Files are created once and reused on later starts; only the server
certificate is re-issued (by the same CA) when it lacks the public host's SAN.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .ports import HOST, normalize_host

log = logging.getLogger("sandbox.certs")


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the generated PEM files.

    Attributes:
        ca_file: CA certificate (PEM) clients trust.
        cert_file: server certificate chain (server cert then CA), PEM.
        key_file: server private key (PKCS#8 PEM, unencrypted).
    """

    ca_file: Path
    cert_file: Path
    key_file: Path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (key material)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def pem_key(key) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (the .p8 / service-account / VAPID form)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san_entry(host: str) -> x509.GeneralName:
    """``host`` as a SAN entry: ``IPAddress`` for an IP literal, else ``DNSName``."""
    host = normalize_host(host)
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _default_sans() -> list[x509.GeneralName]:
    return [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]


def _same_name(a: x509.GeneralName, b: x509.GeneralName) -> bool:
    if isinstance(a, x509.DNSName) and isinstance(b, x509.DNSName):
        return a.value.lower().rstrip(".") == b.value.lower().rstrip(".")
    return type(a) is type(b) and a.value == b.value


def _with(sans: list[x509.GeneralName], extra: x509.GeneralName) -> list[x509.GeneralName]:
    """``sans`` plus ``extra`` at the end unless already present."""
    if any(_same_name(s, extra) for s in sans):
        return list(sans)
    return [*sans, extra]


def _cert_sans(cert_file: Path) -> list[x509.GeneralName] | None:
    """SAN entries of the first certificate in ``cert_file``; None when unreadable."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return None


def _validity() -> tuple[_dt.datetime, _dt.datetime]:
    now = _dt.datetime.now(_dt.timezone.utc)
    return now - _dt.timedelta(days=1), now + _dt.timedelta(days=3650)


def _new_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    start, end = _validity()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "notify provider sandbox"),
        x509.NameAttribute(NameOID.COMMON_NAME, "notify sandbox throw-away CA"),
    ])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_cert, ca_key


def _new_server_cert(ca_cert: x509.Certificate, ca_key, sans: list[x509.GeneralName]
                     ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    start, end = _validity()
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write_server(files: TlsFiles, cert: x509.Certificate, key, ca_pem: bytes) -> None:
    write_private(files.key_file, pem_key(key))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)


def ensure_tls(directory: Path, public_host: str = HOST) -> TlsFiles:
    """Create (once) the CA and the server certificate under ``directory``.

    The server certificate has SANs ``localhost``, ``127.0.0.1`` and ``::1`` (plus
    ``public_host`` as a DNS name or IP address when it is none of these), EKU serverAuth,
    subject/authority key identifiers (strict X.509 verifiers need them) and is valid for ten
    years. Existing files are reused untouched when the server certificate already names
    ``public_host``; otherwise a new server key and certificate are issued by the existing CA
    (``ca.pem`` / ``ca-key.pem`` are kept, so clients that trust the CA keep working) with the
    old certificate's SANs plus ``public_host``. Only if the CA key is missing is everything
    created anew.

    Returns:
        :class:`TlsFiles` with absolute paths.
    """
    directory = Path(directory).resolve()
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    wanted = _san_entry(public_host)
    ca_key_file = directory / "ca-key.pem"
    if files.ca_file.exists() and files.cert_file.exists() and files.key_file.exists():
        current = _cert_sans(files.cert_file)
        if current is not None and any(_same_name(s, wanted) for s in current):
            return files
        if ca_key_file.exists():
            ca_pem = files.ca_file.read_bytes()
            ca_cert = x509.load_pem_x509_certificate(ca_pem)
            ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), None)
            sans = _with(current if current else _default_sans(), wanted)
            cert, key = _new_server_cert(ca_cert, ca_key, sans)
            _write_server(files, cert, key, ca_pem)
            log.info("re-issued %s with SAN %s (CA kept)", files.cert_file, wanted.value)
            return files
        log.warning("%s lacks SAN %s and %s is missing: creating a new CA",
                    files.cert_file, wanted.value, ca_key_file)

    ca_cert, ca_key = _new_ca()
    cert, key = _new_server_cert(ca_cert, ca_key, _with(_default_sans(), wanted))

    directory.mkdir(parents=True, exist_ok=True)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    write_private(ca_key_file, pem_key(ca_key))
    _write_server(files, cert, key, ca_pem)
    files.ca_file.write_bytes(ca_pem)
    return files


def ensure_signing_cert(directory: Path, stem: str, common_name: str) -> tuple[rsa.RSAPrivateKey, bytes]:
    """Create (once) an RSA-2048 signing key ``<stem>-key.pem`` and its certificate
    ``<stem>.pem`` (subject CN ``common_name``, key usage digitalSignature, issued by the CA of
    :func:`ensure_tls`, which must have run) under ``directory``; returns the key and the
    certificate's PEM bytes. Reused on later starts while the CA is the same one."""
    directory = Path(directory).resolve()
    key_file, cert_file = directory / f"{stem}-key.pem", directory / f"{stem}.pem"
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    if key_file.exists() and cert_file.exists():
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        if cert.issuer == ca_cert.subject:
            return serialization.load_pem_private_key(key_file.read_bytes(), None), cert_file.read_bytes()
    ca_key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start, end = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    write_private(key_file, pem_key(key))
    cert_file.write_bytes(pem)
    return key, pem
