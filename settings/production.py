"""The production settings: every value from an environment variable (README: Configuration).

Service addresses default to this machine; provider settings have no silent default (set them,
or use ``settings.dev`` with the provider sandbox). On top of what every settings module shares
(``settings.base``, ``settings.providers``), production is served over HTTPS, directly or
behind a TLS-terminating proxy, and holds a secret key of its own: ``manage.py check --deploy``
passes with no warning when configured as README's "Running in production" says.
"""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F401,F403
from .base import INSECURE_DEV_CREDENTIAL_KEY, INSECURE_DEV_SECRET_KEY, NOTIFY_CREDENTIAL_KEYS, SECRET_KEY
from .env import env, env_bool, env_int
from .providers import *  # noqa: F401,F403

# The fallback key is public: with it anyone can forge sessions, unsubscribe and preference
# links and tracking URLs. Refused before anything starts (the API, the relay, the workers,
# every manage.py command).
if SECRET_KEY == INSECURE_DEV_SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is unset or the public development key: set it to a long random value "
        "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), the same for every process")
# Apps' provider credentials sealed with a public key are as good as in clear. The public key may
# stay second (decrypting) while the rows are re-encrypted away from it, never first.
if NOTIFY_CREDENTIAL_KEYS[0] == INSECURE_DEV_CREDENTIAL_KEY:
    raise ImproperlyConfigured(
        "NOTIFY_CREDENTIAL_KEYS is unset or starts with the public development key: set it to a Fernet key "
        "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'), the "
        "same for every process")

#: Plain-HTTP requests are redirected to HTTPS, except the probes and the scrape, which reach the
#: API inside the deployment's network (SECURE_REDIRECT_EXEMPT matches the path without its /).
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^healthz$", r"^readyz$", r"^metrics$"]
#: Behind a TLS-terminating proxy: the header it sets to ``https`` (``X-Forwarded-Proto``), so
#: Django knows the request was secure. Only for a proxy that sets or strips it on every request:
#: otherwise a client could claim HTTPS itself.
_PROXY_HEADER = env("DJANGO_SECURE_PROXY_SSL_HEADER")
SECURE_PROXY_SSL_HEADER = ("HTTP_" + _PROXY_HEADER.upper().replace("-", "_"), "https") if _PROXY_HEADER else None
#: HTTP Strict Transport Security (RFC 6797): a year, subdomains included, preload allowed.
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", True)
#: The admin's session and CSRF cookies travel over HTTPS only.
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
