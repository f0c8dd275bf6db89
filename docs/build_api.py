"""Build the API reference (HTML, with pdoc) of every cfrec module: ``python docs/build_api.py [OUT]``.

pdoc documents what a package's ``__all__`` lists, so the modules are named one by one here;
the output (default ``docs/api/``, not committed) opens at ``OUT/index.html``.
"""

from __future__ import annotations

import os
import pkgutil
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")


def modules() -> list[str]:
    """``cfrec`` and every submodule, the config package aside."""
    import cfrec

    names = ["cfrec"] + [m.name for m in pkgutil.walk_packages(cfrec.__path__, "cfrec.")]
    return [n for n in names if not n.startswith("cfrec.conf")]


def build(out: str | Path) -> Path:
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="markdown", footer_text="cfrec API reference")
    pdoc.pdoc(*modules(), output_directory=Path(out))
    return Path(out)


if __name__ == "__main__":
    target = build(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "api")
    print(f"API reference: {target / 'index.html'}")
