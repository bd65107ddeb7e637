"""Names of compounds and media: which characters they may hold, and when two are the same.

Real names carry Greek letters, primes and locant commas (TGF-β3, IFN-γ, 2′-deoxycytidine,
N6,2′-O-dibutyryl-cAMP, Neu5Ac, α-MEM), so a name may hold letters and digits of any script
and the marks such names use. A name must stay unambiguous, though: names are kept in
Unicode NFC, and two names of one section that a person cannot tell apart are refused, as
are references that match a declared name only up to such a difference (with a hint saying
which character differs). "Cannot tell apart" is either of:

- the same after NFKC and case folding, with dashes (‐ ‑ – — −) read as '-', primes and
  apostrophes (′ ’ ʹ ´ `) as ', and ß (a German keyboard's stand-in for β) as β;
- the same after that with letters that look alike across scripts read as Latin (Greek
  capitals Α Β Ε Ζ Η Ι Κ Μ Ν Ο Ρ Τ Υ Χ, omicron, Cyrillic а в е к м н о р с т у х і ј ѕ).
  (µ, the micro sign, is μ after NFKC.)
"""

from __future__ import annotations

import re
import unicodedata

MAX_NAME = 64

# Punctuation a name may hold besides letters, marks and digits of any script.
_PUNCT = set(" _.-+/()[]',") | set("′″‴’‐‑‒–—−")
_DASHES = "‐‑‒–—―−﹣－"
_PRIMES = "′’‘ʹʼ´`＇"
_FOLD = str.maketrans(
    {
        **{c: "-" for c in _DASHES},
        **{c: "'" for c in _PRIMES},
        "″": "''",
        "‴": "'''",
        "ß": "β",
        "ẞ": "β",
    }
)
_LOOKALIKE = str.maketrans(
    dict(
        zip(
            "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧοАВЕКМНОРСТУХаеорсухіјѕ",
            "ABEZHIKMNOPTYXoABEKMHOPCTYXaeopcyxijs",
            strict=True,
        )
    )
)
_COMMA_OK = re.compile(r"(?<=\S),(?=\S)")


def normal(name: str) -> str:
    """``name`` in Unicode NFC: an é typed as e + accent is the é of another keyboard."""
    return unicodedata.normalize("NFC", name)


def problem(name: str) -> str | None:
    """Why ``name`` (in NFC) cannot be a compound or medium name, or None if it can."""
    if not name:
        return "a name cannot be empty"
    if len(name) > MAX_NAME:
        return f"a name is at most {MAX_NAME} characters (this one has {len(name)})"
    if name != name.strip():
        return "a name cannot begin or end with a space"
    if "  " in name:
        return "a name cannot hold two spaces in a row (they look like one)"
    first = name[0]
    if not (unicodedata.category(first)[0] in "LN" or first in "(["):
        return f"a name begins with a letter, a digit or '(', not {_show(first)}"
    for c in name:
        cat = unicodedata.category(c)
        if cat[0] in "LMN" or c in _PUNCT:
            continue
        if c.isspace():
            return f"{_show(c)} is not a plain space; use a space (U+0020)"
        if cat == "Cf":
            return f"{_show(c)} is invisible; remove it"
        return f"{_show(c)} is not allowed in a name"
    without = _COMMA_OK.sub("", name)
    if "," in without:
        # "N6,2′-O-dibutyryl" is a name; "A, B" reads as two names in every message.
        return "a comma in a name sits between two characters (as in 1,25-dihydroxy), never before or after a space"
    return None


def _show(c: str) -> str:
    name = unicodedata.name(c, "")
    shown = c if unicodedata.category(c)[0] in "LMNPS" else ""
    glyph = f"{shown!r} " if shown else ""
    return f"{glyph}(U+{ord(c):04X}{' ' + name if name else ''})"


def folded(name: str) -> str:
    """``name`` with case and the differences of :data:`_FOLD` removed (NFKC)."""
    return unicodedata.normalize("NFKC", name).translate(_FOLD).casefold()


def skeleton(name: str) -> str:
    """``name`` as it looks: :func:`folded` with look-alike letters of other scripts as Latin."""
    s = unicodedata.normalize("NFKC", name).translate(_FOLD).translate(_LOOKALIKE)
    return s.casefold().translate(_LOOKALIKE)


def same(a: str, b: str) -> bool:
    """Whether a person could take ``a`` for ``b`` (see the module's rules)."""
    return folded(a) == folded(b) or skeleton(a) == skeleton(b)


def difference(a: str, b: str) -> str:
    """What tells look-alike ``a`` from ``b``, for a message: "'ß' (U+00DF LATIN SMALL
    LETTER SHARP S) where 'TGF-β3' has 'β' (U+03B2 GREEK SMALL LETTER BETA)"."""
    if unicodedata.normalize("NFD", a) == unicodedata.normalize("NFD", b):
        return "only how an accent is encoded"
    if len(a) == len(b):
        pairs = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        if all(_case_pair(x, y) for x, y in pairs):
            return "only letter case"
        x, y = next((x, y) for x, y in pairs if not _case_pair(x, y))
        return f"{_show(x)} where '{b}' has {_show(y)}"
    odd = [c for c in a if c not in b]
    return f"{_show(odd[0])} where '{b}' differs" if odd else f"where '{b}' differs"


def _case_pair(x: str, y: str) -> bool:
    """The same letter in two cases (by Unicode name: µ, the micro sign, is not μ's case)."""
    nx, ny = unicodedata.name(x, x), unicodedata.name(y, y)
    return nx.replace("CAPITAL", "SMALL") == ny.replace("CAPITAL", "SMALL")


def lookalike(word: str, options: set[str] | list[str]) -> str | None:
    """The option a person could take ``word`` for (:func:`same`), if any."""
    for o in sorted(options):
        if o != word and same(word, o):
            return o
    return None


def key_text(name: str) -> str:
    """``name`` as ASCII for task keys that operators type: Greek letters by their names
    (β -> beta), accents dropped, anything else but [A-Za-z0-9._+()-] as '_'."""
    out = []
    for c in unicodedata.normalize("NFKC", name):  # µ (micro sign) -> μ -> "mu"
        if c.isascii() and (c.isalnum() or c in "._+()-"):
            out.append(c)
            continue
        uname = unicodedata.name(c, "")
        if uname.startswith("GREEK") and " LETTER " in uname:
            word = uname.rsplit(" ", 1)[-1].lower()
            out.append(word.capitalize() if "CAPITAL" in uname else word)
            continue
        base = unicodedata.normalize("NFKD", c).encode("ascii", "ignore").decode()
        if c in _DASHES:
            out.append("-")
        elif c in _PRIMES or c in "″‴":
            out.append("p" * max(1, len(unicodedata.normalize("NFKC", c))))
        elif base and all(ch.isalnum() for ch in base):
            out.append(base)
        else:
            out.append("_")
    return "".join(out)
