"""The field guide shipped in the box: pinned, every number checked against the table of its sources, registered
on a fresh data dir (real knowledge base, real embedder), removal kept across upgrades, a tampered copy refused."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.answering import field_guide
from appliance.cli import cli
from appliance.services import Services

NUMBERS = Path(__file__).resolve().parent.parent / "data" / "field_guide_numbers.toml"
GUIDE = Path(field_guide.__file__).parent / field_guide.RESOURCE
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_WORDS = {"one": "1", "two": "2", "three": "3", "five": "5", "six": "6", "half": "1/2"}
# Metric figures are conversions of the sources' own (US) figures, rounded for a frightened reader: within 5 %
# (a temperature: within 0.5 degrees).
_TO_METRIC = {"feet": ("metres", lambda v: v * 0.3048), "inches": ("cm", lambda v: v * 2.54),
              "gallon": ("litres", lambda v: v * 3.785), "°F": ("°C", lambda v: (v - 32) * 5 / 9)}


@pytest.fixture
def guide_on(monkeypatch):
    """The guide registered on first use, as for a user (conftest switches it off for the other tests)."""
    monkeypatch.setenv("APPLIANCE_KB_FIELD_GUIDE", "on")


def _table() -> list[dict]:
    return tomllib.loads(NUMBERS.read_text(encoding="utf-8"))["number"]


def _value(text: str) -> float:
    if "/" in text:
        top, bottom = text.split("/")
        return int(top) / int(bottom)
    return float(text.replace(",", ""))


def test_the_shipped_guide_is_the_pinned_one():
    data = GUIDE.read_bytes()
    assert (hashlib.sha256(data).hexdigest(), len(data)) == (field_guide.SHA256, field_guide.SIZE)
    assert field_guide.shipped_bytes() == data
    text = data.decode("utf-8")
    assert f"Version {field_guide.VERSION}, {field_guide.DATE}" in text


def test_every_section_names_its_source_and_the_list_covers_the_first_day():
    found = field_guide.sections()
    assert all(section.source for section in found if section.chapter != "About this guide")
    titles = [title for title, _ in field_guide.chapters()]
    for needed in ("Safe water", "Severe bleeding", "Burns", "CPR", "Choking", "Hypothermia", "Heat illness",
                   "Carbon monoxide", "Dehydration and oral rehydration", "Poisoning", "Snake bites", "Shelter",
                   "Fire", "Food safety", "Sanitation", "Signalling for rescue", "A dead laptop or phone"):
        assert needed in titles
    named = " ".join(source for _, sources in field_guide.chapters() for source in sources)
    for publisher in ("WHO", "CDC", "Red Cross", "FM 21-76"):
        assert publisher in named


def test_every_number_in_the_guide_is_in_the_table_with_its_source():
    """A typo in a dose, a rate or a distance fails here: each number of the guide's text must be covered by an
    entry of tests/data/field_guide_numbers.toml for its section, each entry must be in its section word for word,
    name a source the section names, agree with what that source says, and a metric figure must be the conversion
    of the source's own."""
    sections = {section.title: section for section in field_guide.sections() if section.title}
    table = _table()
    covered: dict[str, set[int]] = {}
    for entry in table:
        section = sections.get(entry["section"])
        assert section is not None, f"no section {entry['section']!r} in the guide"
        assert entry["source"] in section.source, f"{entry['phrase']!r}: {entry['source']} is not named there"
        starts = [m.start() for m in re.finditer(re.escape(entry["phrase"]), section.text)]
        assert starts, f"{entry['section']}: {entry['phrase']!r} is not in the guide's text"
        for start in starts:
            covered.setdefault(entry["section"], set()).update(range(start, start + len(entry["phrase"])))
        ours = _NUMBER.findall(entry["phrase"])
        says = entry["source_says"]
        said = set(_NUMBER.findall(says)) | {_WORDS[w] for w in re.findall(r"[a-z]+", says.lower()) if w in _WORDS}
        if "converted_from" in entry:
            figure, unit = entry["converted_from"].split(" ", 1)
            assert figure in said, f"{entry['phrase']!r}: the source says {says!r}, not {entry['converted_from']}"
            metric, convert = _TO_METRIC[unit]
            value = convert(_value(figure))
            assert metric in entry["phrase"]
            allowed = 0.5 if metric == "°C" else 0.05 * value
            assert abs(_value(ours[0]) - value) <= allowed, f"{entry['phrase']!r} is not {figure} {unit}"
        else:
            for number in ours:
                assert number in said, f"{entry['phrase']!r}: {number} is not what the source says ({says!r})"
    for title, section in sections.items():
        for match in _NUMBER.finditer(section.text):
            assert match.start() in covered.get(title, set()), (
                f"{title}: the number {match.group()!r} ({section.text[max(0, match.start() - 30):match.end() + 20]!r})"
                " is not in tests/data/field_guide_numbers.toml")


def test_a_changed_dose_fails_the_numbers_check(monkeypatch):
    """The check above is not vacuous: the guide with 80 drops instead of 8 is caught."""
    text = GUIDE.read_text(encoding="utf-8").replace("add 8 drops of 6% bleach", "add 80 drops of 6% bleach")
    monkeypatch.setattr(field_guide, "sections", lambda text=text, real=field_guide.sections: real(text))
    with pytest.raises(AssertionError, match="8 drops of 6% bleach"):
        test_every_number_in_the_guide_is_in_the_table_with_its_source()


def test_a_fresh_data_dir_registers_the_guide_verified_by_hash(guide_on, appliance_home):
    services = Services.create()
    documents = services.kb.documents()
    assert [d["path"] for d in documents] == [str(appliance_home / "kb" / "shipped" / "field-guide.md")]
    assert documents[0]["sha256"] == field_guide.SHA256 and documents[0]["size"] == field_guide.SIZE
    assert documents[0]["title"] == field_guide.TITLE and documents[0]["chunks"] >= 20
    assert services.knowledge.guide_state.status == "registered"
    hits = services.kb.search("How do I purify water?", k=3)
    assert hits and "Boiling water to purify it" in hits[0].source().section
    assert "rolling boil" in hits[0].text
    # Opening it again registers nothing new.
    services.kb.close()
    again = Services.create()
    assert again.kb.documents()[0]["added"] == documents[0]["added"]


def test_removing_the_guide_sticks_across_reopening_and_upgrades(guide_on, monkeypatch):
    services = Services.create()
    path = services.kb.documents()[0]["path"]
    assert services.kb.remove(path) >= 20  # `kb remove` of its path, as the owner would
    services.kb.close()
    reopened = Services.create()
    assert reopened.kb.documents() == []
    assert reopened.knowledge.guide_state.status == "removed"
    reopened.kb.close()
    # An upgrade ships another guide (another pin): still removed.
    newer = GUIDE.read_bytes().replace(b"Version 1.0", b"Version 1.1")
    monkeypatch.setattr(field_guide, "shipped_bytes", lambda: newer)
    monkeypatch.setattr(field_guide, "SHA256", hashlib.sha256(newer).hexdigest())
    upgraded = Services.create()
    assert upgraded.kb.documents() == []
    state = field_guide.FieldGuide(upgraded.kb).restore()
    assert state.status == "registered"
    assert upgraded.kb.documents()[0]["sha256"] == hashlib.sha256(newer).hexdigest()


def test_an_upgrade_replaces_the_registered_guide(guide_on, monkeypatch):
    first = Services.create()
    assert first.kb.documents()[0]["sha256"] == field_guide.SHA256
    first.kb.close()
    newer = GUIDE.read_bytes().replace(b"Version 1.0", b"Version 1.1")
    monkeypatch.setattr(field_guide, "shipped_bytes", lambda: newer)
    monkeypatch.setattr(field_guide, "SHA256", hashlib.sha256(newer).hexdigest())
    monkeypatch.setattr(field_guide, "VERSION", "1.1")
    upgraded = Services.create()
    documents = upgraded.kb.documents()
    assert len(documents) == 1 and documents[0]["sha256"] == hashlib.sha256(newer).hexdigest()
    assert upgraded.knowledge.guide_state.version == "1.1"


def test_a_guide_that_does_not_match_its_pin_is_left_out_and_said(guide_on, monkeypatch):
    monkeypatch.setattr(field_guide, "SHA256", "0" * 64)
    services = Services.create()
    assert services.kb.documents() == []  # the library still opens; nothing unverified went in
    state = services.knowledge.guide_state
    assert state.status == "not registered" and "does not match its pin" in state.problem
    assert any("does not match its pin" in notice for notice in services.kb.take_notices())


def test_kb_guide_and_kb_list_from_the_command_line(guide_on):
    runner = CliRunner()
    listed = runner.invoke(cli, ["kb", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    row = json.loads(listed.stdout)[0]
    assert row["field_guide"]["provenance"] == field_guide.PROVENANCE
    assert row["field_guide"]["status"] == "registered"
    shown = runner.invoke(cli, ["kb", "guide"])
    assert shown.exit_code == 0 and "Severe bleeding: American Red Cross" in shown.stdout
    section = runner.invoke(cli, ["kb", "guide", "severe bleeding"])
    assert section.exit_code == 0 and "at least 5 cm (2 inches) above the wound" in section.stdout
    unknown = runner.invoke(cli, ["kb", "guide", "Knitting"])
    assert unknown.exit_code == 2 and "no section 'Knitting'" in unknown.stderr
    removed = runner.invoke(cli, ["kb", "guide", "--remove"])
    assert removed.exit_code == 0 and "stays out" in removed.stderr
    assert json.loads(runner.invoke(cli, ["kb", "list", "--json"]).stdout) == []
    assert json.loads(runner.invoke(cli, ["kb", "guide", "--json"]).stdout)["status"] == "removed"
    restored = runner.invoke(cli, ["kb", "guide", "--restore", "--json"])
    assert restored.exit_code == 0 and json.loads(restored.stdout)["status"] == "registered"


def test_switched_off_no_guide_is_registered(appliance_home):
    services = Services.create()  # conftest: APPLIANCE_KB_FIELD_GUIDE=off
    assert services.kb.documents() == []
    assert services.knowledge.guide_state is None
