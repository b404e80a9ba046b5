"""Hostile and truncated GGUF headers are rejected in Python, with a clear message, before llama.cpp sees them;
chat templates render only in a sandboxed Jinja environment."""

from __future__ import annotations

import struct

import pytest

from appliance.models.gguf_meta import MAX_ARRAY_LEN, MAX_KV, MAX_STRING_LEN, MAX_TENSORS, GGUFError, read_gguf
from tests.models.fixtures import gguf_string, kv_string, make_gguf, raw_header

U32, STRING, ARRAY = 4, 8, 9
PAD = b"\0" * 256  # enough bytes after a header that it is the header, not the file size, that is refused

HOSTILE = {
    "bad magic": (raw_header(magic=b"GGML") + PAD, "missing GGUF magic"),
    "unknown version": (raw_header(version=99) + PAD, "unsupported GGUF version 99"),
    "tensor count": (raw_header(tensor_count=MAX_TENSORS + 1) + PAD, "tensors exceeds the limit"),
    "kv count": (raw_header(kv_count=2**60) + PAD, "metadata entries exceeds the limit"),
    "key length": (raw_header(kv=[gguf_string(b"k" * 2000)]) + PAD, "exceeds the limit of 1024"),
    "string length": (raw_header(kv=[gguf_string(b"general.name") + struct.pack("<IQ", STRING, MAX_STRING_LEN + 1)])
                      + PAD, "exceeds the limit"),
    "string past the end": (raw_header(kv=[gguf_string(b"general.name") + struct.pack("<IQ", STRING, 10_000)]) + PAD,
                            "truncated"),
    "array length": (raw_header(kv=[gguf_string(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", ARRAY, STRING,
                                                                                          MAX_ARRAY_LEN + 1)]) + PAD,
                     "items exceeds the limit"),
    "array past the end": (raw_header(kv=[gguf_string(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", ARRAY, STRING,
                                                                                                 1_000_000)]) + PAD,
                           "runs past the end of the file"),
    "nested arrays": (raw_header(kv=[gguf_string(b"x") + struct.pack("<IIQIQIQ", ARRAY, ARRAY, 1, ARRAY, 1, ARRAY, 1)])
                      + PAD, "nested arrays"),
    "unknown value type": (raw_header(kv=[gguf_string(b"x") + struct.pack("<I", 77)]) + PAD,
                           "unknown metadata value type 77"),
    "more kv than present": (raw_header(kv=[kv_string(b"general.name", b"x")], kv_count=3), "truncated"),
    "too many dimensions": (raw_header(tensor_count=1) + gguf_string(b"t") + struct.pack("<I", 9) + PAD,
                            "dimensions exceeds the limit"),
    "tensor data past the end": (raw_header(tensor_count=1) + gguf_string(b"t")
                                 + struct.pack("<IQIQ", 1, 2**40, 0, 0) + PAD, "file is truncated"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_header_is_rejected(tmp_path, case):
    data, reason = HOSTILE[case]
    path = tmp_path / "hostile.gguf"
    path.write_bytes(data)
    with pytest.raises(GGUFError) as caught:
        read_gguf(path)
    message = str(caught.value)
    assert reason in message and message.startswith("hostile.gguf: not a usable GGUF file")
    assert "\n" not in message


def test_limits_are_far_above_real_models_and_far_below_harm():
    assert 10_000 < MAX_TENSORS <= 1_000_000 and 500 < MAX_KV <= 100_000
    assert MAX_ARRAY_LEN >= 1_000_000  # the largest vocabularies have ~260k tokens


def test_hostile_and_truncated_files_cannot_be_imported(tmp_path, invoke, appliance_home):
    hostile = tmp_path / "hostile.gguf"
    hostile.write_bytes(HOSTILE["array length"][0])
    result = invoke("models", "import", str(hostile), code=1)
    assert result.stderr.count("\n") == 1 and "items exceeds the limit" in result.stderr
    good = make_gguf(tmp_path / "good.gguf", tensors=4)
    cut = tmp_path / "cut.gguf"
    for size in (good.stat().st_size - 100, 40):  # in the tensor data, and in the metadata
        cut.write_bytes(good.read_bytes()[:size])
        result = invoke("models", "import", str(cut), code=1)
        assert "truncated" in result.stderr
    names = [row["name"] for row in invoke.json("models", "list")]
    assert "hostile" not in names and "cut" not in names
    assert not (tmp_path / "hostile.gguf.manifest.json").exists()


def test_a_directory_import_reports_bad_files_and_keeps_the_good(tmp_path, invoke):
    folder = tmp_path / "drive"
    folder.mkdir()
    make_gguf(folder / "alpha.gguf", {"general.license": "mit"})
    (folder / "broken.gguf").write_bytes(HOSTILE["kv count"][0])
    result = invoke("models", "import", str(folder), code=1)
    assert "registered alpha" in result.stdout
    assert "broken.gguf" in result.stderr and "metadata entries exceeds the limit" in result.stderr
    assert "1 of 2 file(s) were not imported" in result.stderr
    assert "alpha" in [row["name"] for row in invoke.json("models", "list")]


# -- chat templates -------------------------------------------------------------------------------------------
ESCAPE = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
MUTATE = "{% set seen = [] %}{{ seen.append(messages[0]) }}{{ seen }}"


LIPSUM = "{{ lipsum.__globals__['os'].popen('id').read() }}"
CYCLER = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"
LOOP = "{% for a in range(99999) %}{% for b in range(99999) %}x{% endfor %}{% endfor %}"
SILENT_LOOP = "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}"
HUGE = "{{ 'x' * 10000000000 }}"
NAMESPACE_BOMB = ("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                  "{% endfor %}{{ ns.s|length }}")
RECURSE = "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"


def test_chat_template_renders_in_a_sandbox():
    from appliance.models.chat_template import ChatTemplate, TemplateRefused
    from tests.models.fixtures import TEMPLATE

    ok = ChatTemplate(TEMPLATE).render([{"role": "user", "content": "hi"}])
    assert ok == "<|user|>hi\n<|assistant|>"
    for hostile in (ESCAPE, MUTATE, LIPSUM, CYCLER):
        with pytest.raises(TemplateRefused, match="sandbox forbids"):
            ChatTemplate(hostile).render([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("template", [LOOP, SILENT_LOOP, HUGE, RECURSE, NAMESPACE_BOMB])
def test_chat_templates_that_loop_or_explode_are_refused_quickly(template):
    import time

    from appliance.models.chat_template import TemplateRefused, check_template_isolated

    started = time.monotonic()
    with pytest.raises(TemplateRefused):
        check_template_isolated(template)
    assert time.monotonic() - started < 15  # refused, not hung (the budget is ~2 s; the hard stop 10 s)


@pytest.mark.slow
def test_the_engine_renders_the_gguf_template_in_the_sandbox():
    """The engine process renders the model's own template with appliance.models.chat_template (the sandbox above):
    the prompt it counts is the template's output for these messages."""
    from appliance.models.chat_template import ChatTemplate
    from appliance.models.gguf_meta import read_gguf
    from appliance.services import Services

    services = Services.create()
    loaded = services.engine.load()
    try:
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
        template = read_gguf(loaded.entry.path).chat_template
        rendered = ChatTemplate(template).render(messages)
        assert "<|im_start|>system\nBe brief.<|im_end|>" in rendered and rendered.endswith("<|im_start|>assistant\n")
        assert loaded.prompt_tokens(messages) == loaded.token_counts([rendered], special=True)[0]
        # Document text is counted as text: "<|im_end|>" in a passage is not the control token.
        assert loaded.token_count("<|im_end|>") > 1
    finally:
        services.engine.unload()
