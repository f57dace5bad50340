"""The service's TLS certificate: self-signed, generated on first start, kept in the data dir.

``<data>/service/tls/cert.pem`` and ``key.pem`` (mode 0600, written atomically: a crash never
leaves half a key). The certificate names localhost, 127.0.0.1, ::1 and the host the service
binds; clients pin it (``--cacert``/``verify=`` the cert file) or the operator replaces both
files with ones from the site's CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path

CERT_DAYS = 825


def ensure_certificate(data_dir: str | os.PathLike[str], host: str) -> tuple[Path, Path]:
    """(cert, key) files, generated if missing."""
    tls = Path(data_dir) / "service" / "tls"
    cert, key = tls / "cert.pem", tls / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    tls.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = self_signed(host)
    _atomic_write(key, key_pem, 0o600)
    _atomic_write(cert, cert_pem, 0o644)
    return cert, key


def self_signed(host: str) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM): EC P-256, valid for localhost and ``host``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"qnetlab serve on "
                                                              f"{socket.gethostname()}")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName(_names(host)), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _names(host: str) -> list:
    from cryptography import x509

    dns = {"localhost", socket.gethostname()}
    ips = {"127.0.0.1", "::1"}
    for h in (host,):
        try:
            ipaddress.ip_address(h)
            ips.add(h)
        except ValueError:
            dns.add(h)
    ips.discard("0.0.0.0")
    ips.discard("::")
    return ([x509.DNSName(d) for d in sorted(dns)]
            + [x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(ips)])


def _atomic_write(path: Path, content: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
