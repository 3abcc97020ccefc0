"""Bundle signatures with OpenSSH keys: kubeferry signs and checks, and ssh-keygen -Y alone
(what an auditor has) accepts the signature and rejects every tampering."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from kubeferry.bundle.format import METADATA_NAME
from kubeferry.bundler.content import Member
from kubeferry.bundler.writer import write_bundle

KUBEFERRY = [sys.executable, "-m", "kubeferry.cli"]


def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KUBEFERRY, *args], capture_output=True, text=True, timeout=120,
                          input=input if input is not None else "")


def keypair(folder: Path, name: str) -> Path:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True, timeout=60)
    return key


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path]:
    """A small bundle, signed with a fresh key; (bundle, private key)."""
    members = []
    for index, data in enumerate((b"a" * 5000, b"b" * 300)):
        source = tmp_path / f"src{index}"
        source.write_bytes(data)
        members.append(Member.from_file(f"files/f{index}", source))
    bundle = tmp_path / "kubeferry-k8s-1.25.0-el8-amd64.tar"
    write_bundle(bundle, {"kubernetes": "1.25.0", "os": "el8", "arch": "amd64", "images": []}, members)
    key = keypair(tmp_path, "builder")
    result = run("bundle", "sign", str(bundle), "--key", str(key))
    assert result.returncode == 0, result.stderr
    assert Path(f"{bundle}.sig").is_file()
    return bundle, key


def auditor_verifies(bundle: Path, public_key: Path, tmp_path: Path) -> int:
    """OpenSSH only: the metadata member from tar, checked by ssh-keygen -Y verify."""
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"builder {public_key.read_text().strip()}\n")
    metadata = subprocess.run(["tar", "-xOf", str(bundle), METADATA_NAME], capture_output=True,
                              check=True, timeout=60).stdout
    return subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "builder", "-n",
                           "kubeferry-bundle", "-s", f"{bundle}.sig"], input=metadata,
                          capture_output=True, timeout=60).returncode


def test_sign_then_verify_with_kubeferry_and_with_ssh_keygen(signed, tmp_path: Path) -> None:
    bundle, key = signed
    result = run("bundle", "verify", str(bundle), "--key", f"{key}.pub")
    assert result.returncode == 0, result.stderr
    assert f"signed by {key}.pub" in result.stdout
    assert auditor_verifies(bundle, Path(f"{key}.pub"), tmp_path) == 0


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


def test_every_tampering_is_refused(signed, tmp_path: Path) -> None:
    bundle, key = signed
    public = f"{key}.pub"
    with tarfile.open(bundle) as tar:
        metadata_at = tar.getmember(METADATA_NAME).offset_data
        member_at = tar.getmember("files/f0").offset_data
    pristine = bundle.read_bytes()
    signature = Path(f"{bundle}.sig")
    pristine_signature = signature.read_bytes()

    _flip(bundle, member_at + 10)  # a member's byte: its sha256 no longer matches the listing
    refused = run("bundle", "verify", str(bundle), "--key", public)
    assert refused.returncode == 1 and "files/f0" in refused.stderr, refused.stderr
    bundle.write_bytes(pristine)

    _flip(bundle, metadata_at + 30)  # the metadata: the signature (and the self-check) break
    assert run("bundle", "verify", str(bundle), "--key", public).returncode == 1
    assert auditor_verifies(bundle, Path(public), tmp_path) != 0
    bundle.write_bytes(pristine)

    _flip(signature, len(pristine_signature) // 2)  # the signature itself
    refused = run("bundle", "verify", str(bundle), "--key", public)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    signature.write_bytes(pristine_signature)

    other = keypair(tmp_path, "someone-else")  # the key
    refused = run("bundle", "verify", str(bundle), "--key", f"{other}.pub")
    assert refused.returncode == 1 and "does not match" in refused.stderr
    assert auditor_verifies(bundle, Path(f"{other}.pub"), tmp_path) != 0

    signature.unlink()  # no signature at all
    refused = run("bundle", "verify", str(bundle), "--key", public)
    assert refused.returncode == 1 and "is not signed" in refused.stderr
    assert run("bundle", "verify", str(bundle), "--key", str(key)).returncode == 2  # a private key


def test_install_and_harbor_seed_refuse_an_unsigned_bundle_before_any_host(signed, tmp_path: Path) -> None:
    """Nothing is contacted: the hosts and Harbor named here do not exist (loopback, port 9)."""
    bundle, key = signed
    Path(f"{bundle}.sig").unlink()
    inventory = tmp_path / "cluster.yaml"
    inventory.write_text(yaml.safe_dump({
        "cluster": {"controlPlaneEndpoint": "127.0.0.2:6443", "proxyMode": "iptables"},
        "registry": "none",
        "ssh": {"user": "root", "port": 9, "keyFile": str(key), "knownHosts": str(tmp_path / "kh")},
        "hosts": [{"name": "cp1", "address": "127.0.0.2", "roles": ["control-plane"]}]}))
    (tmp_path / "kh").write_text("")
    install = run("install", "--bundle", str(bundle), "--inventory", str(inventory), "--yes",
                  "--run-dir", str(tmp_path / "run"), "--verify-key", f"{key}.pub")
    assert install.returncode == 1 and "is not signed" in install.stderr, install.stderr
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("*.log"))
    seed = run("harbor", "seed", "--bundle", str(bundle), "--harbor", "https://127.0.0.2:9",
               "--password-stdin", "--verify-key", f"{key}.pub", input="secret\n")
    assert seed.returncode == 1 and "is not signed" in seed.stderr, seed.stderr
