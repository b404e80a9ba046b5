"""A pack file is shared by every data dir of the environment: a record written beside it (by an older version, or by
hand) must not shape what a fresh data dir believes about it. Its record comes from its pin."""

import dataclasses
import json
import shutil

from appliance.models import manifest, packs
from appliance.services import Services


def test_a_sidecar_beside_a_pack_is_not_read_by_a_fresh_data_dir(tmp_path, monkeypatch, appliance_home,
                                                                 default_model_path):
    folder = tmp_path / "packs"
    folder.mkdir()
    pin = packs.SMOLLM2
    pack = dataclasses.replace(packs.QWEN25_CODER_05B, name="sidecar-test-pack", filename="sidecar-test.gguf",
                               sha256=pin.sha256, size=pin.size)
    copy = folder / pack.filename
    shutil.copy(default_model_path, copy)
    monkeypatch.setenv("APPLIANCE_PACKS_DIR", str(folder))
    monkeypatch.setitem(packs.SPLIT_PACKS, pack.name, pack)

    # Someone's data dir imported the same file in place and noted a warning: that writes the sidecar beside it.
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path / "first"))
    first = Services.create().models
    entry = first.register(copy, name="noted-elsewhere")
    first.add_note(entry, "from elsewhere")
    first.assert_license(first.resolve("noted-elsewhere"), "CC-BY-NC-4.0")
    sidecar = manifest.sidecar_path(copy)
    assert "from elsewhere" in sidecar.read_text()

    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path / "second"))
    library = Services.create().models
    library.ensure_pack(pack.name)
    registered = library.resolve(pack.name)
    assert registered.record["content_warnings"] == []
    assert "record_from" not in registered.record["source"]
    assert registered.record["source"]["kind"] == "split-wheels"
    assert "CC-BY-NC-4.0" not in json.dumps(registered.record["license"])
    assert "from elsewhere" in sidecar.read_text()  # left as it was
