"""Chat templates are attacker-controlled text: the public sandbox escapes are refused (jinja2 >= 3.1.6), in the
render sandbox and in the isolated check that runs at import."""

from __future__ import annotations

import importlib.metadata

import pytest

from appliance.models.chat_template import ChatTemplate, TemplateRefused, check_template_isolated

MESSAGES = [{"role": "user", "content": "hi"}]
ESCAPES = {
    # The usual forms: walk to object's subclasses, or to a module's globals through a global helper.
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "lipsum globals": "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "lipsum globals via attr": "{{ (lipsum|attr('__globals__'))['os'].popen('id').read() }}",
    # CVE-2024-56326 (fixed in 3.1.5): str.format reached through a stored reference, not called directly.
    "stored str.format": "{% set f = '{0.__class__.__mro__[1].__subclasses__}'.format %}{{ f(1) }}",
    "stored str.format_map": "{% set f = '{x.__init__.__globals__}'.format_map %}{{ f({'x': lipsum}) }}",
    # CVE-2025-27516 (fixed in 3.1.6): str.format fetched with the |attr filter.
    "format via attr": "{{ ('{0.__class__.__mro__[1].__subclasses__}'|attr('format'))(1) }}",
}


def test_jinja2_has_both_sandbox_fixes():
    version = tuple(int(part) for part in importlib.metadata.version("jinja2").split(".")[:3])
    assert version >= (3, 1, 6)


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_escape_is_refused_when_rendering(name):
    with pytest.raises(TemplateRefused, match="sandbox forbids"):
        ChatTemplate(ESCAPES[name]).render(MESSAGES)


def test_escapes_are_refused_by_the_import_time_check():
    for source in ESCAPES.values():
        with pytest.raises(TemplateRefused):
            check_template_isolated(source)
