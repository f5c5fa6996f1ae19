"""The README's configuration tables name every variable the settings read and every provider
setting an adapter declares, and the design rules the code is held to stay true."""

from __future__ import annotations

import re
from pathlib import Path

from channels import registry

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_variable_the_settings_read_is_in_the_readme():
    read = set()
    for path in (ROOT / "settings").glob("*.py"):
        read |= set(re.findall(r"env(?:_int|_float|_bool|_list|_rate_limit)?\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']", path.read_text()))
    assert read, "no variables found: the pattern no longer matches settings/"
    missing = sorted(v for v in read if v not in README)
    assert not missing, f"not in README.md: {missing}"


def test_every_provider_setting_an_adapter_declares_is_in_the_readme():
    declared = {s.env for cls in registry.providers().values() for s in cls.settings}
    missing = sorted(v for v in declared if v not in README)
    assert not missing, f"not in README.md: {missing}"


def test_notify_holds_no_knowledge_of_a_particular_channel_or_provider():
    """Under notify/ (outside migrations) no comparison with, assignment of, or list of a
    particular channel, and no import of a provider's module: the service asks the registry."""
    # Names that are only channels or providers: never a literal. ``sms`` and ``email`` are also
    # content groups and recipient fields (allowed), so only compared with or assigned to a
    # channel they are channel knowledge.
    only_channels = "apns|fcm|webpush|twilio|ses|smtp"
    literal = re.compile(rf"""["']({only_channels})["']|channel\w*\s*(==|!=|=|\bin\b)\s*[\[(]?\s*["'](sms|email)["']""")
    imports = re.compile(r"(from|import)\s+channels\.(apns|fcm|webpush|twilio_sms|ses_email|smtp_email|email)\b")
    offending = []
    for path in list((ROOT / "notify").rglob("*.py")) + list((ROOT / "settings").glob("*.py")):
        if "migrations" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if literal.search(code) or imports.search(code):
                offending.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offending, "\n".join(offending)
