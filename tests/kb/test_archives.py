"""The offline readers of what a Kiwix mirror publishes (kb.archives): the OPDS feed, .sha256 and .meta4, with
hostile input; and the shipped catalog's shape."""

from __future__ import annotations

import pytest

from kb import archives
from kb.archives import CatalogError

SHA = "ab" * 32


def _feed(*entries: str) -> bytes:
    return ('<feed xmlns="http://www.w3.org/2005/Atom">' + "".join(entries) + "</feed>").encode()


def _entry(name: str, href: str, updated: str = "2026-01-01T00:00:00Z", flavour: str = "", length: str = "10") -> str:
    return (f"<entry><name>{name}</name><flavour>{flavour}</flavour><updated>{updated}</updated><title>T</title>"
            f"<publisher><name>Kiwix</name></publisher><language>eng</language>"
            f'<link rel="http://opds-spec.org/acquisition/open-access" href="{href}" length="{length}"/></entry>')


def test_the_feed_gives_the_newest_file_of_a_name_and_flavour():
    feed = _feed(_entry("wikivoyage_en_all", "/z/wikivoyage_en_all_nopic_2026-05.zim.meta4", "2026-05-01",
                        "nopic"),
                 _entry("wikivoyage_en_all", "/z/wikivoyage_en_all_maxi_2026-03.zim.meta4", "2026-03-01", "maxi"),
                 _entry("wikivoyage_en_all", "/z/wikivoyage_en_all_maxi_2026-06.zim.meta4", "2026-06-01", "maxi"),
                 _entry("other", "/z/other_2026-07.zim", "2026-07-01"))
    entries = archives.parse_feed(feed, "https://mirror.example/catalog")
    chosen = archives.current(entries, "wikivoyage_en_all", "maxi")
    assert chosen is not None and chosen.file_name == "wikivoyage_en_all_maxi_2026-06.zim"
    assert chosen.url == "https://mirror.example/z/wikivoyage_en_all_maxi_2026-06.zim"
    assert chosen.metalink.endswith(".meta4") and chosen.length == 10 and chosen.publisher == "Kiwix"
    assert archives.current(entries, "wikivoyage_en_all").file_name.startswith("wikivoyage_en_all_maxi_2026-06")
    assert archives.current(entries, "nothing") is None


@pytest.mark.parametrize("data", [
    b"", b"not xml", b"<html><body>a login page</body></html>", b"<feed><entry>",
    # a billion laughs: expat's amplification limit stops it
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">'
    b'<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">'
    b'<!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;"><!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">]>'
    b'<feed xmlns="http://www.w3.org/2005/Atom"><title>&h;</title></feed>',
])
def test_a_feed_that_is_not_one_is_one_error(data):
    with pytest.raises(CatalogError):
        archives.parse_feed(data)


def test_a_feed_too_large_is_not_read():
    with pytest.raises(CatalogError, match="larger than"):
        archives.parse_feed(b" " * (archives.MAX_FEED_BYTES + 1))


@pytest.mark.parametrize("href", ["/z/../../etc/passwd", "/z/.hidden.zim", "/z/archive.exe", "/z/a%2F..%2Fb.zim",
                                  "/z/"])
def test_a_file_name_that_is_not_a_plain_zim_is_refused(href):
    (entry,) = archives.parse_feed(_feed(_entry("x", href)), "https://mirror.example")
    with pytest.raises(CatalogError, match="does not name a .zim file"):
        _ = entry.file_name


def test_sha256_files_in_the_forms_mirrors_write():
    name = "zimgit-water_en_2026-11.zim"
    assert archives.parse_sha256(f"{SHA}  {name}\n".encode(), name) == SHA
    assert archives.parse_sha256(f"{SHA.upper()} *{name}\n".encode(), name) == SHA  # binary mode marker
    assert archives.parse_sha256(f"{SHA}\n".encode(), name) == SHA  # a bare hash
    assert archives.parse_sha256(f"{'cd' * 32}  other.zim\n{SHA}  zim/{name}\n".encode(), name) == SHA
    for bad in (b"", b"not a hash  x.zim\n", f"{SHA[:-1]}  {name}".encode(),
                f"{'cd' * 32}  other.zim\n{'ef' * 32}  third.zim\n".encode()):
        with pytest.raises(CatalogError):
            archives.parse_sha256(bad, name)


def test_meta4_gives_its_sha256_size_and_urls():
    data = (f'<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="a.zim"><size>123</size>'
            f'<hash type="md5">00</hash><hash type="sha-256">{SHA.upper()}</hash>'
            f"<url>https://m1/a.zim</url><url>https://m2/a.zim</url></file></metalink>").encode()
    link = archives.parse_meta4(data)
    assert (link.name, link.size, link.sha256, link.urls) == ("a.zim", 123, SHA, ("https://m1/a.zim", "https://m2/a.zim"))
    no_sha = archives.parse_meta4(b'<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="a.zim">'
                                  b'<hash type="sha-256">short</hash></file></metalink>')
    assert no_sha.sha256 is None and no_sha.size is None
    for bad in (b"", b"<metalink xmlns='urn:ietf:params:xml:ns:metalink'/>", b"<x>"):
        with pytest.raises(CatalogError):
            archives.parse_meta4(bad)


def test_the_shipped_catalog_names_each_fact_and_its_basis():
    shipped = archives.catalog()
    assert len(shipped.entries) >= 7 and "approximate" in shipped.size_basis and "not checked" in shipped.size_basis
    topics = {entry.topic for entry in shipped.entries}
    assert {"first aid and medicine", "water", "food", "repair", "travel and maps"} <= topics
    for entry in shipped.entries:
        assert entry.license["text"] and entry.license["basis"], entry.name
        assert entry.approx_bytes is None or entry.approx_bytes > 0
        assert shipped.find(entry.name) == entry
        if entry.flavour:
            assert shipped.find(f"{entry.name}_{entry.flavour}") == entry
    assert shipped.find("no_such_archive") is None
