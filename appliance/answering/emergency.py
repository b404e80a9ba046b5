"""The emergency notice: a question that reads as an emergency, answered by the model alone, says so first.

A frightened person asking about bleeding, someone not breathing, a poisoning, a burn or a sick child, when neither
the field guide nor the library had anything for the question, must not read the model's words as if they were
checked. The notice comes before them (the CLI prints it first on stdout, the TUI shows it above the answer in the
error colour): call for help, this answer is the model's alone, and the field guide's section on it when there is
one (`appliance kb guide SECTION` prints it, from the verified shipped text, without loading a model).

Reading a question as an emergency is a word list, on purpose: predictable, instant, testable, and wrong only
towards saying it once too often. Whole words, case folded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from appliance.errors import ApplianceError


@dataclass(frozen=True)
class Kind:
    name: str
    pattern: re.Pattern
    chapter: str  # the field guide's chapter for it ("" when the guide has none)


def _words(*alternatives: str) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b", re.IGNORECASE)


KINDS = (
    Kind("not breathing", _words(r"not breathing", r"(?:stopped|stops|isn'?t|is not|can'?t|cannot|can not) breath\w*",
                                 r"no pulse", r"unconscious", r"unresponsive", r"not responding", r"won'?t wake( up)?",
                                 r"collapsed", r"heart attack", r"cardiac arrest", r"cpr", r"drown\w*",
                                 r"turning blue",
                                 r"(?:lips|face|he|she|they)(?: \w+)? (?:is |are |went |turned )?blue"),
         "CPR"),
    Kind("choking", _words(r"chok\w*", r"stuck in (?:his|her|their|my|the) throat"), "Choking"),
    Kind("bleeding", _words(r"bleed\w*", r"bled", r"blood\w*", r"ha?emorrhag\w*", r"gash\w*", r"stabbed",
                            r"deep cut", r"cut (?:off|open)", r"amputat\w*", r"tourniquet"), "Severe bleeding"),
    Kind("poisoning", _words(r"poison\w*", r"overdos\w*", r"swallowed", r"drank (?:bleach|petrol|gasoline|"
                             r"antifreeze|cleaner|chemicals?)", r"ate (?:pills|tablets|berries|mushrooms)"),
         "Poisoning"),
    Kind("snake bite", _words(r"snake ?bites?", r"snake ?bitten", r"bitten by a snake", r"(?:snake|adder|viper|"
                              r"rattlesnake|cobra)s?\b.{0,30}\bbit\w*", r"bit by a snake"), "Snake bites"),
    Kind("carbon monoxide", _words(r"carbon monoxide", r"co alarm", r"co detector", r"fumes"), "Carbon monoxide"),
    Kind("burn", _words(r"burn\w*", r"scald\w*"), "Burns"),
    Kind("heat stroke", _words(r"heat ?stroke", r"overheat\w*", r"sunstroke"), "Heat illness"),
    Kind("hypothermia", _words(r"hypotherm\w*", r"freezing to death", r"frostbite"), "Hypothermia"),
    Kind("dehydration", _words(r"dehydrat\w*", r"diarrh?o?ea\w*", r"diarrh\w*", r"vomiting"),
         "Dehydration and oral rehydration"),
    Kind("unwell child", _words(r"(?:baby|babies|infant|newborn|toddler|child|children|kid|kids|son|daughter)"
                                r"(?:'s)?\b.{0,60}\b(?:sick|ill|fever\w*|hot|cold|limp|floppy|fit|seizure\w*|fell|"
                                r"fallen|hurt|injured|vomit\w*|swallow\w*|rash|won'?t (?:eat|drink|stop|wake)|"
                                r"breath\w*|blue|crying|fainted)"), ""),
)

CALL_FOR_HELP = ("If a life may be in danger, call your local emergency number now (112 in Europe, 911 "
                 "in North America, 999 in the UK), or get someone else to call.")


@dataclass(frozen=True)
class EmergencyNotice:
    kinds: tuple[str, ...]  # what the question reads as ("bleeding", ...)
    chapters: tuple[str, ...]  # the field guide's chapters for them

    @property
    def text(self) -> str:
        lines = [f"EMERGENCY? This reads like {' and '.join(self.kinds)}.", CALL_FOR_HELP,
                 "The answer below is from the model alone, not from the field guide or your library: it may be "
                 "wrong."]
        for chapter in self.chapters:
            lines.append(f'The field guide covers this: see "{chapter}" (appliance kb guide "{chapter}").')
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"kinds": list(self.kinds), "guide_sections": list(self.chapters), "text": self.text}


def read_as_emergency(question: str, chapters: list[str] | None = None) -> EmergencyNotice | None:
    """The notice for a question that reads as an emergency (None otherwise). `chapters`: the field guide's
    chapter titles (a kind whose chapter the guide lacks points nowhere)."""
    found = [kind for kind in KINDS if kind.pattern.search(question or "")]
    if not found:
        return None
    if chapters is None:
        from appliance.answering.field_guide import chapters as guide_chapters

        try:
            chapters = [title for title, _ in guide_chapters()]
        except ApplianceError:  # a damaged shipped guide must not hide the call for help
            chapters = []
    names = tuple(dict.fromkeys(kind.name for kind in found))
    pointed = tuple(dict.fromkeys(kind.chapter for kind in found if kind.chapter and kind.chapter in chapters))
    return EmergencyNotice(names, pointed)
