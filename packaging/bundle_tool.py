"""The USB bundle's helper for install.sh. Standard library only: it runs on the target's own Python before any
venv exists. Copied to the top of every bundle (and listed in its BUNDLE.json).

  python3 bundle_tool.py files BUNDLE.json          "size sha256 kind path" lines, one a file (install.sh checks
                                                    them); kind "record" marks a model's sidecar
  python3 bundle_tool.py record-ok BUNDLE.json PATH a sidecar changed by in-place use: still the model's record?
  python3 bundle_tool.py signature BUNDLE.json [PUBKEY.pem]
                                                    check BUNDLE.json.sig.json (Ed25519, RFC 8032; pure Python)
  python3 bundle_tool.py lock BUNDLE.json           the wheelhouse lock file for this machine and Python, or exit 1
  python3 bundle_tool.py variants BUNDLE.json       the llama.cpp variants this CPU can run, best first
  <venv>/bin/python bundle_tool.py engine BUNDLE.json VARIANT
                                                    record VARIANT as the engine and unpack the other variants'
                                                    libraries this CPU runs beside it (the engine's fallbacks)
Exit codes: 0 ok, 1 failure, 3 integrity (a signature that does not verify).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(path: str) -> dict:
    with open(path, "rb") as handle:
        return json.load(handle)


def _llama_build():
    """packaging/llama_build.py, the one place that names this machine and reads its CPU flags: under engine/ in a
    bundle, beside this file in the repository. Only the commands run with the chosen Python (>= 3.11) use it."""
    folder = HERE / "engine" if (HERE / "engine" / "llama_build.py").is_file() else HERE
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    import llama_build

    return llama_build


def machine() -> str:
    return _llama_build().machine()


def cpu_flags() -> set[str]:
    return _llama_build().cpu_flags()


# --- Ed25519 verification (RFC 8032 section 6, the reference code, verify only) -----------------------------------
_P = 2 ** 255 - 19
_L = 2 ** 252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_I = pow(2, (_P - 1) // 4, _P)


def _add(a, b):
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    a_ = (y1 - x1) * (y2 - x2) % _P
    b_ = (y1 + x1) * (y2 + x2) % _P
    c = 2 * t1 * t2 * _D % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b_ - a_, d - c, d + c, b_ + a_
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(s, point):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, point)
        point = _add(point, point)
        s >>= 1
    return q


def _equal(a, b):
    return (a[0] * b[2] - b[0] * a[2]) % _P == 0 and (a[1] * b[2] - b[1] * a[2]) % _P == 0


def _recover_x(y, sign):
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _I % _P
    if (x * x - x2) % _P != 0:
        return None
    if (x & 1) != sign:
        x = _P - x
    return x


def _decompress(data: bytes):
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


_G = (lambda y: (_recover_x(y, 0), y, 1, _recover_x(y, 0) * y % _P))(4 * pow(5, _P - 2, _P) % _P)


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    a = _decompress(public)
    if a is None or len(signature) != 64:
        return False
    r = _decompress(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if r is None or s >= _L:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % _L
    return _equal(_mul(s, _G), _add(r, _mul(h, a)))


def _pem_public_raw(path: str) -> bytes:
    text = Path(path).read_text()
    body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
    der = base64.b64decode(body)
    return der[-32:]  # SubjectPublicKeyInfo for Ed25519: a fixed 12-byte prefix, then the raw key


def check_signature(bundle: str, pinned: str | None) -> int:
    sig_path = Path(bundle).with_name(Path(bundle).name + ".sig.json")
    if not sig_path.exists():
        if pinned:
            print(f"{sig_path.name}: missing, but a public key was given; refused", file=sys.stderr)
            return 3
        print("unsigned bundle (no BUNDLE.json.sig.json): file hashes checked, origin not", file=sys.stderr)
        return 0
    try:
        document = json.loads(sig_path.read_text())
        public = base64.b64decode(document["public_key"], validate=True)
        signature = base64.b64decode(document["signature"], validate=True)
        payload = document["payload"]
    except (OSError, ValueError, KeyError, TypeError):
        print(f"{sig_path.name}: unreadable signature document; refused", file=sys.stderr)
        return 3
    key_id = "ed25519:" + hashlib.sha256(public).hexdigest()[:16]
    if pinned and _pem_public_raw(pinned) != public:
        print(f"{sig_path.name}: signed by {key_id}, not by the key in {pinned}; refused", file=sys.stderr)
        return 3
    message = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if not ed25519_verify(public, message, signature):
        print(f"{sig_path.name}: signature check failed; refused", file=sys.stderr)
        return 3
    data = Path(bundle).read_bytes()
    want = {"name": "BUNDLE.json", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if payload.get("files") != [want]:
        print(f"{sig_path.name}: signs another BUNDLE.json than this one; refused", file=sys.stderr)
        return 3
    print(f"signature ok: BUNDLE.json signed by {key_id}" + ("" if pinned else
          " (no key given to pin: compare this key id with the one the bundle's maker gave you)"), file=sys.stderr)
    return 0


def record_ok(manifest: dict, path: str) -> int:
    """A model's .manifest.json changes when the model is used in place (the appliance keeps its record beside the
    file). It passes when it still reads as a record of the bundled model file, whose own hash BUNDLE.json checks."""
    model = path[: -len(".manifest.json")]
    sums = {entry["path"]: entry["sha256"] for entry in manifest["files"]}
    try:
        record = json.loads((Path(manifest["_root"]) / path).read_text())
        ok = record["file"]["sha256"] == sums[model]
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        print(f"{path}: sha256 differs from BUNDLE.json and it is no record of {model} (damaged or altered; copy "
              "it again)", file=sys.stderr)
        return 3
    print(f"{path}: updated by in-place use of the model; still the record of {model}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    command, bundle = argv[0], argv[1]
    if command == "signature":
        return check_signature(bundle, argv[2] if len(argv) > 2 else None)
    manifest = load(bundle)
    manifest["_root"] = str(Path(bundle).resolve().parent)
    if command == "files":
        for entry in manifest["files"]:
            path = entry["path"]
            if path.startswith("/") or ".." in Path(path).parts or "\n" in path:
                print(f"BUNDLE.json names an unsafe path: {path!r}", file=sys.stderr)
                return 3
            print(f"{entry['size']} {entry['sha256']} {'record' if entry.get('living_record') else '-'} {path}")
        return 0
    if command == "record-ok":  # a model's sidecar that in-place use updated: still about the bundled file?
        return record_ok(manifest, argv[2])
    if command == "lock":
        tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
        system = {"linux": "linux", "darwin": "macos"}.get(sys.platform, sys.platform)
        arch = machine() if system == "linux" else {"aarch64": "arm64"}.get(machine(), machine())
        name = f"{system}-{arch}-{tag}"
        for entry in manifest["wheelhouse"]["prepared"]:
            if entry["target"] == name:
                print(entry["lock"])
                return 0
        prepared = ", ".join(e["target"] for e in manifest["wheelhouse"]["prepared"])
        print(f"this bundle has no wheels for {name} (Python {sys.version.split()[0]}); it was prepared for: "
              f"{prepared}", file=sys.stderr)
        return 1
    if command == "variants":
        flags, arch = cpu_flags(), machine()
        fits = [name for name, v in manifest["engine"]["variants"].items()
                if v["arch"] == arch and set(v["requires"]) <= flags]
        if not fits:
            print(f"no llama.cpp build in this bundle runs on this CPU ({arch})", file=sys.stderr)
            return 1
        print("\n".join(fits))
        return 0
    if command == "engine":
        llama_build = _llama_build()  # the bundle's copy of packaging/llama_build.py
        primary = argv[2]
        config = llama_build.load(HERE / "engine" / "llama-build.toml")
        prefix = Path(sys.prefix)
        extras = {}
        flags = cpu_flags()
        for name, variant in manifest["engine"]["variants"].items():
            if name == primary or variant["arch"] != machine() or not set(variant["requires"]) <= flags:
                continue  # an AVX-512 build is no fallback on a CPU without AVX-512
            dest = prefix / "lib" / "appliance-llama" / f"{name}-{llama_build.key(config, name)}"
            llama_build.extract_libs(HERE / variant["wheel"], dest)
            extras[name] = str(dest)
        llama_build.write_record(config, primary, extras, prefix)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
