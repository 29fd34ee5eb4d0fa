"""Credential shapes (fake values of real formats) that no store or log may keep, and text that must stay intact.

Each entry is (name, text as a client or worker would send it, the secret part to
search for). Shared by the redaction unit tests and the every-store search.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"
OPENSSH_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
PGP_BODY = "lQOYBGKxW9oBCADQz8VbqH5zXk2YJm4d8uQhTnK3pL0sRvW7eFgA1cB2dE3fG4hI"

SHAPES: list[tuple[str, str, str]] = [
    (
        "pem",
        f"key:\n-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\nAbCdEf0123456789\n-----END RSA PRIVATE KEY-----\nok",
        PEM_BODY,
    ),
    (
        "pem-escaped-in-json",
        '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\n'
        + PEM_BODY[::-1]
        + '\\n-----END PRIVATE KEY-----\\n", "client_email": "x@p.iam.gserviceaccount.com"}',
        PEM_BODY[::-1],
    ),
    (
        "openssh",
        f"-----BEGIN OPENSSH PRIVATE KEY-----\n{OPENSSH_BODY}\n-----END OPENSSH PRIVATE KEY-----",
        OPENSSH_BODY,
    ),
    (
        "pgp",
        f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{PGP_BODY}\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----",
        PGP_BODY,
    ),
    ("aws-key-id", "aws_access_key_id AKIAQ3EXAMPLE7KEYID1 in us-east-1", "AKIAQ3EXAMPLE7KEYID1"),
    ("aws-session-key-id", "temporary ASIAY34FZKBOKMUTVV7A creds", "ASIAY34FZKBOKMUTVV7A"),
    ("aws-secret", "secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY ends", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("github-pat", "push with ghp_R2d2C3po4Luke5Leia6Han7Solo8Yoda9Ab", "ghp_R2d2C3po4Luke5Leia6Han7Solo8Yoda9Ab"),
    ("github-oauth", "gho_16C7e42F292c6912E7710c838347Ae178B4a", "gho_16C7e42F292c6912E7710c838347Ae178B4a"),
    ("github-app", "ghs_k3PzX9qLm2Vn8RtY5wQa7BcD4eF6gH1iJ0kL", "ghs_k3PzX9qLm2Vn8RtY5wQa7BcD4eF6gH1iJ0kL"),
    (
        "github-fine-grained",
        "github_pat_11ABCDEFG0abcdefghijklmn_OPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxy",
        "github_pat_11ABCDEFG0abcdefghijklmn_OPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxy",
    ),
    ("gitlab", "CI uses glpat-x9Yz8Wv7Ut6Sr5Qp4On3", "glpat-x9Yz8Wv7Ut6Sr5Qp4On3"),
    ("slack-bot", "SLACK xoxb-2048-4096-Zz9Yy8Xx7Ww6Vv5Uu4Tt", "xoxb-2048-4096-Zz9Yy8Xx7Ww6Vv5Uu4Tt"),
    (
        "slack-webhook",
        "post to https://hooks.slack.com/services/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",
        "T0A1B2C3D/B4E5F6G7H/q1w2e3r4t5y6u7i8o9p0a1s2",
    ),
    ("stripe-live", "charge with sk_live_51Hx9Kq2eZvKYlo2CabcdEFGH", "sk_live_51Hx9Kq2eZvKYlo2CabcdEFGH"),
    ("stripe-restricted", "rk_live_51Hx9Kq2eZvKYlo2CrestrICT", "rk_live_51Hx9Kq2eZvKYlo2CrestrICT"),
    ("stripe-test", "sk_test_4eC39HqLyjWDarjtT1zdp7dc", "sk_test_4eC39HqLyjWDarjtT1zdp7dc"),
    ("openai", "OPENAI sk-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z", "sk-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"),
    (
        "openai-project",
        "sk-proj-Q1w2E3r4T5y6U7i8O9p0-A1s2D3f4G5h6J7k8L9",
        "sk-proj-Q1w2E3r4T5y6U7i8O9p0-A1s2D3f4G5h6J7k8L9",
    ),
    (
        "anthropic",
        "claude key sk-ant-api03-Zx9Cv8Bn7Mm6Ll5Kk4Jj3Hh2Gg1Ff0Dd-AAAA",
        "sk-ant-api03-Zx9Cv8Bn7Mm6Ll5Kk4Jj3Hh2Gg1Ff0Dd-AAAA",
    ),
    ("google-api", "maps AIzaSyD4vJ9uQ2sL7kP0mN3bV6cX8zW1yT5rE2q", "AIzaSyD4vJ9uQ2sL7kP0mN3bV6cX8zW1yT5rE2q"),
    ("google-oauth", "ya29.a0AfH6SMBx7Zq9Lk2Vn8Rt5Wy3Pc1Md", "ya29.a0AfH6SMBx7Zq9Lk2Vn8Rt5Wy3Pc1Md"),
    (
        "jwt",
        "session eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
    ),
    ("bearer", "curl -H 'Authorization: Bearer q8Zr5Tp2Wn7Kd4Lm' url", "q8Zr5Tp2Wn7Kd4Lm"),
    ("basic", "Authorization: Basic YWxpY2U6czNjcjN0LXB3ZA==", "YWxpY2U6czNjcjN0LXB3ZA=="),
    ("url-password", "clone https://deploy:Tr0ub4dor-and-3@git.example.com/o/r.git", "Tr0ub4dor-and-3"),
    ("redis-url", "REDIS redis://:n0t-A-g00d-Pa55@cache.internal:6379/0", "n0t-A-g00d-Pa55"),
    ("password-assignment", "login with password=Hunter2-Correct-Horse then", "Hunter2-Correct-Horse"),
    ("passwd-colon", "passwd: 'Sw0rdf1sh-Pass'", "Sw0rdf1sh-Pass"),
    ("secret-assignment", "CLIENT_SECRET=Qm9vLXNlY3JldC12YWx1ZQ", "Qm9vLXNlY3JldC12YWx1ZQ"),
    ("api-key-query", "GET https://api.example.com/v1/x?api_key=Zr8Tq3Wm6Yp1&page=2", "Zr8Tq3Wm6Yp1"),
    ("token-query", "callback?token=Kx7Lp2Vn9Qr4Ts1W&state=ok", "Kx7Lp2Vn9Qr4Ts1W"),
    (
        "azure-storage",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA==;EndpointSuffix=x",
        "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA==",
    ),
    (
        "azure-sas",
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessSignature=sv=2021&sig=dGhpcyBpcyBhIHNhcyBzaWc%3D&se=1",
        "dGhpcyBpcyBhIHNhcyBzaWc",
    ),
    ("npm", "//registry.npmjs.org/:_authToken=npm_Q1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6J7k8", "npm_Q1w2E3r4T5y6U7i8O9p0"),
    (
        "pypi",
        "twine pypi-AgEIcHlwaS5vcmcCJGE4ZTdkZTQ4LWQ1NjktNDFmYy1hODk3LTk3Yjg2ODk0NDAyZQ",
        "pypi-AgEIcHlwaS5vcmcCJGE4ZTdkZTQ4LWQ1NjktNDFmYy1hODk3LTk3Yjg2ODk0NDAyZQ",
    ),
    (
        "sendgrid",
        "mail 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",
        "TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc",
    ),
    ("twilio", "twilio SK0123456789abcdef0123456789abcdef here", "SK0123456789abcdef0123456789abcdef"),
    ("mailgun", "mailgun key-3ax6xnjp29jd6fds4gc373sgvjxteol0", "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"),
    ("vault", "VAULT_TOKEN hvs.CAESIJlWq9Zx8Cv7Bn6Mm5Ll4Kk3Jj2Hh1", "hvs.CAESIJlWq9Zx8Cv7Bn6Mm5Ll4Kk3Jj2Hh1"),
    (
        "digitalocean",
        "doctl dop_v1_" + "a1b2c3d4e5f6" * 5 + "a1b2",
        "dop_v1_" + "a1b2c3d4e5f6" * 5 + "a1b2",
    ),
    ("shopify", "shopify shpat_0123456789abcdef0123456789abcdef", "shpat_0123456789abcdef0123456789abcdef"),
    ("square", "square sq0atp-Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op", "sq0atp-Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op"),
    ("databricks", "databricks dapi0123456789abcdef0123456789abcdef", "dapi0123456789abcdef0123456789abcdef"),
    (
        "heroku",
        "heroku HRKU-AA0123456789abcdefghijABCDEFGHIJ_klmnopqrstuvwxyz-0123456789",
        "HRKU-AA0123456789abcdefghijABCDEFGHIJ",
    ),
    (
        "heroku-uuid-key",
        "HEROKU_API_KEY=01234567-89ab-cdef-0123-456789abcdef",
        "01234567-89ab-cdef-0123-456789abcdef",
    ),
    ("hugging-face", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567"),
    ("json-secret-key", '{"db_password": "Pa55-w0rd with spaces"}', "Pa55-w0rd with spaces"),
]

# Text a redaction must leave exactly as it is (no false positives).
ORDINARY = [
    "Refactor the token bucket (max_tokens=512); see https://example.com/docs?page=2 and the password policy.",
    "Task 3f2b7c1e-9a4d-4c7e-8b1a-2d3e4f5a6b7c finished in 2.5 s after 3 attempts.",
    "chain head 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d08c15d6afdf2 prev " + "0" * 64,
    "commit 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12 on branch feature/secret-santa",
    "Use a passphrase manager; tokens are counted per request (prompt_tokens, completion_tokens).",
    "sha256:2c26b46b68ffc68f digest of the payload",
    "The author wrote about monkeys and keyboards: nothing to hide.",
    "https://example.com/users/alice/repos?page=3&per_page=50",
    "Einstein's theory, €5 — naïve café; 東京; emoji 🎉",
]


def leaks(text: str) -> list[str]:
    """The names of the shapes whose secret part is in ``text``."""
    return [name for name, _, secret in SHAPES if secret in text]


_READ: dict[str, Any] = {
    "string": lambda conn, key: conn.get(key),
    "hash": lambda conn, key: conn.hgetall(key),
    "list": lambda conn, key: conn.lrange(key, 0, -1),
    "set": lambda conn, key: conn.smembers(key),
    "zset": lambda conn, key: conn.zrange(key, 0, -1),
    "stream": lambda conn, key: conn.xrange(key),
}


def redis_dump(conn: Any, pattern: str) -> list[str]:
    """Every key matching ``pattern`` and its value whatever its type; Celery message bodies are decoded."""
    found = []
    for key in conn.scan_iter(match=pattern, count=1000):
        kind = conn.type(key).decode()
        value = _READ[kind](conn, key) if kind in _READ else None
        items = value if isinstance(value, list) else [value]
        found.append(f"{key!r} {kind} {value!r} {[_decoded_body(item) for item in items]!r}")
    return found


def _decoded_body(item: Any) -> str:
    """A kombu message's base64 body, decoded (it would hide a secret from a plain search)."""
    try:
        message = json.loads(item)
        return base64.b64decode(message["body"]).decode("utf-8", "replace")
    except (TypeError, ValueError, KeyError, binascii.Error):
        return ""
