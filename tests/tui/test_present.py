"""Plain unit tests for the Textual-free parts: labels, consent rules, history extensions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from appliance.errors import ApplianceError
from appliance.models.manifest import license_section
from appliance.records.history import History
from kb.source import Source
from tui.present import (
    commercial_label,
    consent_reasons,
    kb_label,
    license_label,
    location_label,
    short_path,
    source_label,
)


def record(declared, warnings=()):
    return {"license": license_section([{"value": v, "from": "test"} for v in declared]),
            "content_warnings": list(warnings)}


def test_license_labels_never_guess():
    assert license_label(record(["apache-2.0"])) == "Apache-2.0"
    assert license_label(record([])) == "UNKNOWN"
    assert license_label(record(["some-custom-thing"])) == "UNKNOWN"
    assert license_label(record(["apache-2.0", "mit"])) == "CONFLICT: Apache-2.0 vs MIT"  # the CLI's label too
    assert commercial_label(record([])) == "unknown"
    assert commercial_label(record(["apache-2.0"])) == "yes"
    assert commercial_label(record(["cc-by-nc-4.0"])) == "no"


def test_consent_is_needed_for_unknown_restrictive_or_warned_models():
    assert consent_reasons(record(["apache-2.0"])) == []
    assert "UNKNOWN" in consent_reasons(record([]))[0]
    assert "conflicting" in consent_reasons(record(["apache-2.0", "mit"]))[0]
    assert "restricts use" in consent_reasons(record(["cc-by-nc-4.0"]))[0]
    warned = record(["apache-2.0"], [{"kind": "hub-tag", "value": "not-for-all-audiences", "from": "hub",
                                      "text": "tagged not-for-all-audiences on the hub"}])
    assert consent_reasons(warned) == ["Content warning: tagged not-for-all-audiences on the hub"]


def test_the_labels_are_the_core_policy():
    """The TUI shows what appliance.models.record decides, for stored dicts and typed records alike."""
    from appliance.models.record import ModelRecord

    for declared in (["apache-2.0"], [], ["cc-by-nc-4.0"], ["apache-2.0", "mit"]):
        view = ModelRecord.from_dict(dict(record(declared), schema="appliance.model-manifest", file={}, lineage={}))
        assert license_label(record(declared)) == license_label(view) == view.license.label
        assert commercial_label(record(declared)) == view.license.commercial
        assert consent_reasons(record(declared)) == view.consent_reasons()


def test_short_labels(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert short_path(tmp_path / "a" / "b.md") == "~/a/b.md"
    assert short_path("/elsewhere/b.md") == "/elsewhere/b.md"
    assert source_label(Source("/x/guide.pdf", "Guide", "Ch 3", 12, number=2)) == "[2] guide.pdf · Ch 3 · p. 12"
    assert source_label({"number": 1, "path": "/x/w.md", "section": "", "page": None}) == "[1] w.md"
    # what the source's file states of itself, beside the citation (only what is known)
    zim = Source("/m/wikimed.zim", "Burn", "First aid", number=3, article="A/Burn", work="Wikipedia Medicine",
                 publisher="Kiwix", license="CC-BY-SA")
    assert source_label(zim) == ('[3] wikimed.zim › Burn › First aid · "Wikipedia Medicine", published by Kiwix, '
                                 "license CC-BY-SA")
    assert source_label(Source("/x/g.pdf", "G", number=1, publisher="Red Cross\x1b[2J")) == (
        "[1] g.pdf · published by Red Cross\\x1b[2J")
    assert kb_label(None) == "KB –"
    assert kb_label({"documents": 1, "zims": 0}) == "KB 1 doc"
    assert kb_label({"documents": 3, "zims": 1}) == "KB 3 docs + 1 ZIM"
    entry = SimpleNamespace(mode="in-place", path=tmp_path / "usb" / "m.gguf", record={})
    assert location_label(entry) == "~/usb"
    assert location_label(SimpleNamespace(mode="pack", path=tmp_path, record={})) == "bundled"


def test_history_rename_delete_and_chat_messages(tmp_path):
    history = History(tmp_path / "history.sqlite")
    result = {"answer": "Boil it.", "model": {"name": "m"}, "sources": [], "timings": {}}
    first = history.record_exchange("How do I purify water?", result)
    history.record_exchange("And then?", dict(result, answer="Cool it."), first)
    other = history.record_exchange("Unrelated", result)
    assert history.chat_messages(first) == [
        {"role": "user", "content": "How do I purify water?"}, {"role": "assistant", "content": "Boil it."},
        {"role": "user", "content": "And then?"}, {"role": "assistant", "content": "Cool it."},
    ]
    assert history.chat_messages(first, last=2) == [{"role": "user", "content": "And then?"},
                                                    {"role": "assistant", "content": "Cool it."}]
    history.rename_conversation(first, "  Water   notes ")
    assert history.conversation(first)["title"] == "Water notes"
    with pytest.raises(ApplianceError):
        history.rename_conversation(first, "   ")
    history.delete_conversation(first)
    assert history.conversation(first) is None and history.messages(first) == []
    assert [c["id"] for c in history.conversations()] == [other]
    with pytest.raises(ApplianceError):
        history.delete_conversation(first)
