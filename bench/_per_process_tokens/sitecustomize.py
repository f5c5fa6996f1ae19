"""Bench only (``bench/apns_tokens.py --per-process-tokens``): the service as it was before
provider tokens were shared. On ``PYTHONPATH`` of the stack's children, Python imports this at
start-up; adapters then get no shared store and each keeps its tokens to itself
(channels.tokens.LocalTokenStore), so every worker process signs its own APNs token."""

from channels import tokens

tokens.store_config = lambda url, prefix: {tokens.STORE: None, tokens.STORE_PREFIX: prefix}
