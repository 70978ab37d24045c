"""Box JWT server authentication: the app's `config.json`, and the assertion Box trades for a token.

What Box documents (../shared/apis/box.md, "JWT (server auth)"): the Developer Console hands out
a `config.json` holding the app's client id and secret, an RSA private key encrypted with a
passphrase, the id Box knows the matching public key by, and the enterprise id. The app signs a
short-lived JWT (the *assertion*: `iss` = client id, `sub` = enterprise or user id,
`box_sub_type`, `aud` = the token URL, a unique `jti`, `exp` at most 60 s ahead, header `kid` =
the public key id) and POSTs it to the token URL with the JWT-bearer grant. The signing is
PyJWT's, the key decryption cryptography's: nothing here is hand-written crypto.

This module only reads the file and signs; sending the token request is the auth's job.
"""

from __future__ import annotations

import datetime
import json
import secrets
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

#: The `grant_type` of a JWT token request (RFC 7523).
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: How long an assertion is valid. Box refuses one whose `exp` lies more than 60 s ahead; the
#: Box SDKs use 30 s, which leaves room for a clock running somewhat ahead of Box's.
ASSERTION_LIFETIME_SECONDS = 30
#: Box wants a `jti` of 16 to 128 characters, never used before: 32 random bytes, base64url.
JTI_BYTES = 32
#: A config.json is about 2 KiB; a path to anything far larger (a device, a log) is a mistake
#: that must not fill the memory.
MAX_CONFIG_BYTES = 64 * 1024
#: Lines of the key's body shorter than this are not masked on their own (see
#: `app_config_secrets`); PEM lines are 64 characters.
MIN_KEY_LINE = 16
#: Where each field sits in the Developer Console's `config.json`.
FIELDS = {
    "client_id": ("boxAppSettings", "clientID"),
    "client_secret": ("boxAppSettings", "clientSecret"),
    "public_key_id": ("boxAppSettings", "appAuth", "publicKeyID"),
    "private_key": ("boxAppSettings", "appAuth", "privateKey"),
    "passphrase": ("boxAppSettings", "appAuth", "passphrase"),
}
#: Fields a usable config cannot do without (the passphrase only comes with an encrypted key).
REQUIRED = ("client_id", "client_secret", "public_key_id", "private_key")
#: Told to the user when the file is not what the tap needs.
WHERE_TO_GET_IT = ("download it from the app's Configuration tab in the Box Developer Console: "
                   "Add and Manage Public Keys > Generate a Public/Private Keypair")


class BoxAppConfigError(ValueError):
    """The app config cannot be used; the message is one line naming the setting at fault."""


@dataclass(frozen=True)
class BoxApp:
    """A Box app with JWT auth, as its `config.json` describes it."""

    client_id: str
    client_secret: str = field(repr=False)
    public_key_id: str
    private_key: RSAPrivateKey = field(repr=False)
    enterprise_id: str | None

    def assertion(self, *, audience: str, subject_type: str, subject_id: str,
                  now: datetime.datetime | None = None) -> str:
        """A signed JWT asking `audience` (the token URL) for a token acting as the subject."""
        issued = now or datetime.datetime.now(datetime.UTC)
        claims = {
            "iss": self.client_id,
            "sub": subject_id,
            "box_sub_type": subject_type,
            "aud": audience,
            "jti": secrets.token_urlsafe(JTI_BYTES),
            "iat": int(issued.timestamp()),
            "exp": int(issued.timestamp()) + ASSERTION_LIFETIME_SECONDS,
        }
        return jwt.encode(claims, self.private_key, algorithm="RS256",
                          headers={"kid": self.public_key_id})


def read_app_config(text: str, setting: str) -> BoxApp:
    """Parse `config.json` and decrypt its key; `setting` names where the text came from."""
    try:
        document = json.loads(text)
    except ValueError as error:
        # The decoder's message says where it stopped, never what it read.
        raise BoxAppConfigError(
            f"{setting} is not a Box app config.json: not JSON ({error}); {WHERE_TO_GET_IT}"
        ) from None
    if not isinstance(document, dict):
        document = {}
    values = {name: field_value(document, path) for name, path in FIELDS.items()}
    missing = [".".join(FIELDS[name]) for name in REQUIRED if not values[name]]
    if missing:
        raise BoxAppConfigError(
            f"{setting} is not a Box app config.json with a key pair: "
            f"{', '.join(missing)} missing; {WHERE_TO_GET_IT}"
        )
    client_id, client_secret, public_key_id, pem = (values[name] or "" for name in REQUIRED)
    enterprise = document.get("enterpriseID")
    return BoxApp(
        client_id=client_id,
        client_secret=client_secret,
        public_key_id=public_key_id,
        private_key=decrypt_private_key(pem, values["passphrase"], setting),
        enterprise_id=str(enterprise) if enterprise not in (None, "", "0", 0) else None,
    )


def read_app_config_file(path: str, setting: str) -> str:
    """The text of the file at `path`, or one line saying why it cannot be read."""
    try:
        with Path(path).expanduser().open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise BoxAppConfigError(
            f"{setting} {path!r} cannot be read: {error.strerror or type(error).__name__}"
        ) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise BoxAppConfigError(f"{setting} {path!r} is not a Box app config.json: larger than "
                                f"{MAX_CONFIG_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BoxAppConfigError(
            f"{setting} {path!r} is not a Box app config.json: not UTF-8 text") from None


def decrypt_private_key(pem: str, passphrase: str | None, setting: str) -> RSAPrivateKey:
    where = f"{setting}: boxAppSettings.appAuth.privateKey"
    if "PRIVATE KEY-----" not in pem:
        raise BoxAppConfigError(f"{where} is not a PEM private key")
    password = passphrase.encode() if passphrase else None
    try:
        key = load_pem_private_key(pem.encode(), password=password)
    except TypeError:
        # cryptography's answer to a passphrase for a plain key, or none for an encrypted one.
        if password is None:
            raise BoxAppConfigError(
                f"{where} is encrypted and boxAppSettings.appAuth.passphrase is empty"
            ) from None
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, UnsupportedAlgorithm):
        raise BoxAppConfigError(
            f"{where} cannot be decrypted with boxAppSettings.appAuth.passphrase "
            "(a wrong passphrase, or a damaged key)"
        ) from None
    if not isinstance(key, RSAPrivateKey):
        raise BoxAppConfigError(f"{where} is not an RSA private key")
    return key


def field_value(document: t.Any, path: tuple[str, ...]) -> str | None:
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document if isinstance(document, str) and document.strip() else None


def app_config_secrets(text: str) -> list[str]:
    """Every secret the text of a `config.json` holds, in each form a log could show it.

    The client secret, the passphrase, the private key as written and as JSON escapes it,
    and each line of the key's base64 body, so a key reflowed or re-escaped anywhere is
    still masked line by line. Never raises: a config that cannot be read has its own error.
    """
    try:
        document = json.loads(text)
    except ValueError:
        return []
    values = [field_value(document, FIELDS[name])
              for name in ("client_secret", "passphrase", "private_key")]
    found = [value for value in values if value]
    key = field_value(document, FIELDS["private_key"])
    if key:
        found.append(json.dumps(key)[1:-1])
        # Not the short tail of the last line ("8w=="): masked everywhere, it would hide
        # ordinary text and protect nothing.
        found += [line.strip() for line in key.splitlines()
                  if len(line.strip()) >= MIN_KEY_LINE and not line.startswith("-----")]
    return found
