"""The hash OAuth2 client secrets are stored under (django-oauth-toolkit's
``CLIENT_SECRET_HASHER``; settings.base lists it last in ``PASSWORD_HASHERS``, so no user's
password ever uses it).

A client secret is 128 random characters from a 62-letter alphabet (about 760 bits, generated
by django-oauth-toolkit), not a password a person chose: nothing is gained by making each guess
slow, and Django's default (PBKDF2 with over a million iterations) spent about 0.4 s of CPU on
every token request, which anyone knowing a client id could make the API pay at will. PBKDF2
with one iteration is a salted SHA-256 HMAC of the secret, through Django's own hasher.
"""

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class RandomSecretHasher(PBKDF2PasswordHasher):
    """Salted PBKDF2-SHA256 with one iteration, for machine-generated secrets only."""

    algorithm = "pbkdf2_sha256_random_secret"
    iterations = 1
