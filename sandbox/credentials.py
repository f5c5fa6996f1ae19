"""Throw-away provider credentials, generated once per sandbox directory and reused.

What is created under ``<dir>`` (all keys are fresh random keys, never real ones):

- ``apns_AuthKey_<KEYID>.p8``: APNs token-auth key, EC P-256, PKCS#8 PEM (Apple's ``.p8`` format),
  with a 10-character key id and team id;
- ``fcm-service-account.json``: a Google service-account file in the real shape (``type``,
  ``project_id``, ``private_key_id``, ``private_key`` RSA-2048 PEM, ``client_email``, ``token_uri``
  …). ``token_uri`` points at the sandbox FCM port ``/token`` (on ``--public-host``) and is
  rewritten on every start, so the port base and public host may change between runs;
- ``vapid_private.pem``: the demo application server's VAPID key (EC P-256, PKCS#8 PEM);
- ``credentials.json``: ids and secrets (Twilio account SID/auth token, SES access keys, the SMTP
  AUTH username and password, …);
- ``sns-signing-key.pem`` / ``sns-signing.pem``: the SNS stand-in's message-signing key (RSA-2048)
  and its certificate, issued by the sandbox CA, served at ``sns.signing_cert_url``.

:func:`ensure_credentials` returns a :class:`Credentials`; :func:`sandbox_json` and
:func:`sandbox_env` render the two files of the contract (sandbox/README.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .certs import TlsFiles, ensure_signing_cert, ensure_tls, pem_key, write_private
from .ports import Ports

APNS_TOPIC = "com.example.notify"
FCM_PROJECT_ID = "notify-sandbox"
VAPID_SUBJECT = "mailto:ops@example.com"
TWILIO_FROM = "+15005550006"
SES_REGION = "us-east-1"
SES_FROM = "notify@example.com"
SES_VERIFIED_DOMAIN = "example.com"
SMTP_FROM = "notify@example.com"
#: How clients reach the SMTP port: STARTTLS (required by the server) then AUTH PLAIN/LOGIN.
SMTP_TLS = "starttls"
#: The AWS account the SES and SNS stand-ins act for (moto's default account).
AWS_ACCOUNT_ID = "123456789012"
#: The topic SES events are published to (one topic, as one configuration set's SNS destination).
SNS_TOPIC_ARN = f"arn:aws:sns:{SES_REGION}:{AWS_ACCOUNT_ID}:notify-sandbox-ses-events"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

_UPPER_ALNUM = string.ascii_uppercase + string.digits


def b64url(data: bytes) -> str:
    """Unpadded base64url, the encoding of Web Push keys and JWT parts."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding. Raises ``ValueError`` on bad input."""
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _rand(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def ec_public_raw(public_key) -> bytes:
    """Uncompressed SEC1 point (65 bytes) of an EC P-256 public key."""
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


@dataclass
class Credentials:
    """Everything the provider emulators need to check what clients send.

    Public keys are kept as ``cryptography`` objects so that verification needs no parsing per
    request.
    """

    directory: Path
    tls: TlsFiles
    ports: Ports
    apns_key_file: Path
    apns_key_id: str
    apns_team_id: str
    apns_topic: str
    apns_public_key: Any
    fcm_service_account_file: Path
    fcm_project_id: str
    fcm_client_email: str
    fcm_private_key_id: str
    fcm_public_key: Any
    fcm_token_uri: str
    vapid_private_key_file: Path
    vapid_public_key: str
    vapid_subject: str
    twilio_account_sid: str
    twilio_auth_token: str
    twilio_api_key_sid: str
    twilio_api_key_secret: str
    twilio_from: str
    twilio_messaging_service_sid: str
    ses_region: str
    ses_access_key_id: str
    ses_secret_access_key: str
    ses_from: str
    smtp_username: str
    smtp_password: str
    smtp_from: str
    sns_topic_arn: str
    sns_signing_key: Any
    sns_signing_key_file: Path
    sns_signing_cert_pem: bytes


def _new_secrets() -> dict[str, str]:
    return {
        "apns_key_id": _rand(_UPPER_ALNUM, 10),
        "apns_team_id": _rand(_UPPER_ALNUM, 10),
        "fcm_private_key_id": secrets.token_hex(20),
        "fcm_client_id": str(secrets.randbelow(9 * 10**20) + 10**20),
        "twilio_account_sid": "AC" + secrets.token_hex(16),
        "twilio_auth_token": secrets.token_hex(16),
        # An API key of the account ("API keys"): SID SK + 32 hex, a 32-character secret.
        "twilio_api_key_sid": "SK" + secrets.token_hex(16),
        "twilio_api_key_secret": _rand(string.ascii_letters + string.digits, 32),
        "twilio_messaging_service_sid": "MG" + secrets.token_hex(16),
        "ses_access_key_id": "AKIA" + _rand(_UPPER_ALNUM, 16),
        "ses_secret_access_key": _rand(string.ascii_letters + string.digits + "+/", 40),
        "smtp_username": "notify-" + secrets.token_hex(4),
        "smtp_password": secrets.token_urlsafe(24),
    }


def ensure_credentials(directory: Path | str, ports: Ports) -> Credentials:
    """Create (once) or load the sandbox credentials in ``directory``.

    Args:
        directory: sandbox directory (created if missing).
        ports: the port layout and public host of this run; only ``token_uri`` in the FCM
            service-account file and the server certificate's SANs (see
            :func:`~sandbox.certs.ensure_tls`) depend on it.

    Returns:
        :class:`Credentials` with absolute paths.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    tls = ensure_tls(directory, ports.public_host)

    meta_file = directory / "credentials.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    for k, v in _new_secrets().items():
        meta.setdefault(k, v)

    # APNs .p8 key
    apns_key_file = directory / f"apns_AuthKey_{meta['apns_key_id']}.p8"
    if apns_key_file.exists():
        apns_key = serialization.load_pem_private_key(apns_key_file.read_bytes(), None)
    else:
        apns_key = ec.generate_private_key(ec.SECP256R1())
        write_private(apns_key_file, pem_key(apns_key))

    # FCM service account
    sa_file = directory / "fcm-service-account.json"
    project_id = FCM_PROJECT_ID
    client_email = f"firebase-adminsdk-sbx@{project_id}.iam.gserviceaccount.com"
    token_uri = f"{ports.https(ports.fcm)}/token"
    if sa_file.exists():
        sa = json.loads(sa_file.read_text())
        fcm_key = serialization.load_pem_private_key(sa["private_key"].encode(), None)
    else:
        fcm_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sa = {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": meta["fcm_private_key_id"],
            "private_key": pem_key(fcm_key).decode(),
            "client_email": client_email,
            "client_id": meta["fcm_client_id"],
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
            + client_email.replace("@", "%40"),
            "universe_domain": "googleapis.com",
        }
    if sa.get("token_uri") != token_uri or not sa_file.exists():
        sa["token_uri"] = token_uri
        write_private(sa_file, (json.dumps(sa, indent=2) + "\n").encode())

    # VAPID key of the demo application server
    vapid_file = directory / "vapid_private.pem"
    if vapid_file.exists():
        vapid_key = serialization.load_pem_private_key(vapid_file.read_bytes(), None)
    else:
        vapid_key = ec.generate_private_key(ec.SECP256R1())
        write_private(vapid_file, pem_key(vapid_key))

    # SNS message-signing key and certificate (by the sandbox CA, like AWS's by a public CA)
    sns_key, sns_cert_pem = ensure_signing_cert(directory, "sns-signing", "sns.amazonaws.com")

    if not meta_file.exists() or json.loads(meta_file.read_text()) != meta:
        write_private(meta_file, (json.dumps(meta, indent=2) + "\n").encode())

    return Credentials(
        directory=directory,
        tls=tls,
        ports=ports,
        apns_key_file=apns_key_file,
        apns_key_id=meta["apns_key_id"],
        apns_team_id=meta["apns_team_id"],
        apns_topic=APNS_TOPIC,
        apns_public_key=apns_key.public_key(),
        fcm_service_account_file=sa_file,
        fcm_project_id=sa["project_id"],
        fcm_client_email=sa["client_email"],
        fcm_private_key_id=sa["private_key_id"],
        fcm_public_key=fcm_key.public_key(),
        fcm_token_uri=token_uri,
        vapid_private_key_file=vapid_file,
        vapid_public_key=b64url(ec_public_raw(vapid_key.public_key())),
        vapid_subject=VAPID_SUBJECT,
        twilio_account_sid=meta["twilio_account_sid"],
        twilio_auth_token=meta["twilio_auth_token"],
        twilio_api_key_sid=meta["twilio_api_key_sid"],
        twilio_api_key_secret=meta["twilio_api_key_secret"],
        twilio_from=TWILIO_FROM,
        twilio_messaging_service_sid=meta["twilio_messaging_service_sid"],
        ses_region=SES_REGION,
        ses_access_key_id=meta["ses_access_key_id"],
        ses_secret_access_key=meta["ses_secret_access_key"],
        ses_from=SES_FROM,
        smtp_username=meta["smtp_username"],
        smtp_password=meta["smtp_password"],
        smtp_from=SMTP_FROM,
        sns_topic_arn=SNS_TOPIC_ARN,
        sns_signing_key=sns_key,
        sns_signing_key_file=directory / "sns-signing-key.pem",
        sns_signing_cert_pem=sns_cert_pem,
    )


def sns_signing_cert_url(c: Credentials) -> str:
    """Where the SNS stand-in serves its signing certificate (AWS's shape:
    ``/SimpleNotificationService-<id>.pem``; the id changes with the certificate)."""
    digest = hashlib.sha256(c.sns_signing_cert_pem).hexdigest()[:32]
    return f"{c.ports.https(c.ports.sns)}/SimpleNotificationService-{digest}.pem"


def sns_host_pattern(c: Credentials) -> str:
    """A regular expression matching exactly the SNS stand-in's ``host:port``, the form of
    ``NOTIFY_SNS_CERT_HOST_PATTERN`` that trusts it."""
    return re.escape(f"{c.ports.public_host}:{c.ports.sns}")


def sandbox_json(c: Credentials) -> dict[str, Any]:
    """The ``sandbox.json`` document (shape fixed by sandbox/README.md)."""
    p = c.ports
    return {
        "control_url": p.http(p.control),
        "ca_file": str(c.tls.ca_file),
        "apns": {
            "url": p.https(p.apns), "key_file": str(c.apns_key_file), "key_id": c.apns_key_id,
            "team_id": c.apns_team_id, "topic": c.apns_topic,
        },
        "fcm": {
            "url": p.https(p.fcm), "service_account_file": str(c.fcm_service_account_file),
            "project_id": c.fcm_project_id,
        },
        "webpush": {
            "url": p.https(p.webpush), "vapid_private_key_file": str(c.vapid_private_key_file),
            "vapid_public_key": c.vapid_public_key, "vapid_subject": c.vapid_subject,
        },
        "twilio": {
            "url": p.https(p.twilio), "account_sid": c.twilio_account_sid,
            "auth_token": c.twilio_auth_token, "api_key_sid": c.twilio_api_key_sid,
            "api_key_secret": c.twilio_api_key_secret, "from_number": c.twilio_from,
            "messaging_service_sid": c.twilio_messaging_service_sid,
        },
        "ses": {
            "url": p.https(p.ses), "region": c.ses_region, "access_key_id": c.ses_access_key_id,
            "secret_access_key": c.ses_secret_access_key, "from_address": c.ses_from,
        },
        "smtp": {
            "host": p.public_host, "port": p.smtp, "tls": SMTP_TLS, "username": c.smtp_username,
            "password": c.smtp_password, "from_address": c.smtp_from,
        },
        "sns": {
            "url": p.https(p.sns), "topic_arn": c.sns_topic_arn,
            "signing_cert_url": sns_signing_cert_url(c), "signing_key_file": str(c.sns_signing_key_file),
            "cert_host_pattern": sns_host_pattern(c),
        },
    }


def sandbox_env(c: Credentials) -> str:
    """The ``sandbox.env`` text: ``KEY=value`` lines with the contract's variable names."""
    doc = sandbox_json(c)
    pairs = [
        ("NOTIFY_PROVIDER_CA_FILE", doc["ca_file"]),
        ("NOTIFY_APNS_URL", doc["apns"]["url"]),
        ("NOTIFY_APNS_KEY_FILE", doc["apns"]["key_file"]),
        ("NOTIFY_APNS_KEY_ID", doc["apns"]["key_id"]),
        ("NOTIFY_APNS_TEAM_ID", doc["apns"]["team_id"]),
        ("NOTIFY_APNS_TOPIC", doc["apns"]["topic"]),
        ("NOTIFY_FCM_URL", doc["fcm"]["url"]),
        ("NOTIFY_FCM_SERVICE_ACCOUNT_FILE", doc["fcm"]["service_account_file"]),
        ("NOTIFY_FCM_PROJECT_ID", doc["fcm"]["project_id"]),
        ("NOTIFY_VAPID_PRIVATE_KEY_FILE", doc["webpush"]["vapid_private_key_file"]),
        ("NOTIFY_VAPID_PUBLIC_KEY", doc["webpush"]["vapid_public_key"]),
        ("NOTIFY_VAPID_SUBJECT", doc["webpush"]["vapid_subject"]),
        # The sandbox's push service is on a loopback address, which subscriptions may only use
        # when allowed (channels.webpush.WebPushChannel.validate_address).
        ("NOTIFY_WEBPUSH_PRIVATE_ENDPOINTS", urlsplit(doc["webpush"]["url"]).netloc),
        ("NOTIFY_TWILIO_URL", doc["twilio"]["url"]),
        ("NOTIFY_TWILIO_ACCOUNT_SID", doc["twilio"]["account_sid"]),
        ("NOTIFY_TWILIO_AUTH_TOKEN", doc["twilio"]["auth_token"]),
        ("NOTIFY_TWILIO_API_KEY_SID", doc["twilio"]["api_key_sid"]),
        ("NOTIFY_TWILIO_API_KEY_SECRET", doc["twilio"]["api_key_secret"]),
        ("NOTIFY_TWILIO_FROM", doc["twilio"]["from_number"]),
        ("NOTIFY_TWILIO_MESSAGING_SERVICE_SID", doc["twilio"]["messaging_service_sid"]),
        ("AWS_ENDPOINT_URL_SESV2", doc["ses"]["url"]),
        ("NOTIFY_SES_REGION", doc["ses"]["region"]),
        ("NOTIFY_SES_ACCESS_KEY_ID", doc["ses"]["access_key_id"]),
        ("NOTIFY_SES_SECRET_ACCESS_KEY", doc["ses"]["secret_access_key"]),
        ("NOTIFY_SES_FROM", doc["ses"]["from_address"]),
        ("NOTIFY_SMTP_HOST", doc["smtp"]["host"]),
        ("NOTIFY_SMTP_PORT", str(doc["smtp"]["port"])),
        ("NOTIFY_SMTP_TLS", doc["smtp"]["tls"]),
        ("NOTIFY_SMTP_USERNAME", doc["smtp"]["username"]),
        ("NOTIFY_SMTP_PASSWORD", doc["smtp"]["password"]),
        ("NOTIFY_SMTP_FROM", doc["smtp"]["from_address"]),
        # Trusting the SNS stand-in is configuration: these three, and nothing else, do it.
        ("NOTIFY_SNS_TOPIC_ARNS", doc["sns"]["topic_arn"]),
        ("NOTIFY_SNS_CERT_HOST_PATTERN", doc["sns"]["cert_host_pattern"]),
        ("NOTIFY_SNS_CA_FILE", doc["ca_file"]),
        ("NOTIFY_SANDBOX_CONTROL_URL", doc["control_url"]),
    ]
    return "".join(f"{k}={v}\n" for k, v in pairs)


def write_sandbox_files(c: Credentials) -> Path:
    """Write ``sandbox.json`` and ``sandbox.env`` atomically; return the ``sandbox.json`` path."""
    out = c.directory / "sandbox.json"
    for path, text in ((out, json.dumps(sandbox_json(c), indent=2) + "\n"),
                       (c.directory / "sandbox.env", sandbox_env(c))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        write_private(tmp, text.encode())
        os.replace(tmp, path)
    return out
