"""CI runs exactly what the README tells a newcomer to type."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not
            line.strip().startswith("#")]  # fmt: skip


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    install, test = blocks[0], blocks[2]
    ci = (ROOT / ".ci" / "run").read_text()
    ci_install = ci.split("# --- install")[1].split("# --- test")[0]
    ci_test = ci.split("# --- test")[1]
    assert _commands(install) == _commands(ci_install)[1:]
    assert _commands(test) == _commands(ci_test)[1:]
    assert "pip install -e '.[all]'" in install
    assert "pytest" in test
