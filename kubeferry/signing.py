"""Bundle signatures an auditor checks without kubeferry: OpenSSH's ``ssh-keygen -Y``.

What is signed is the bundle's metadata member, byte for byte: its sha256 is the bundle
digest, and it lists the size and sha256 of every other member, so a signature over it
covers every byte of the bundle. The signature is an SSHSIG file beside the bundle
(``BUNDLE.sig``) in the namespace ``kubeferry-bundle``. With stock tools only:

    tar -xOf BUNDLE kubeferry-bundle.json | \\
      ssh-keygen -Y verify -f allowed_signers -I builder -n kubeferry-bundle -s BUNDLE.sig

(``allowed_signers``: ``builder <the public key line>``), then ``sha256sum`` the members
against the listing, or ``kubeferry bundle verify --key PUB`` for all of it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import click

from kubeferry.bundle.parts import base_name
from kubeferry.errors import InputError, OperationError

NAMESPACE = "kubeferry-bundle"
SUFFIX = ".sig"
SIGNER = "kubeferry-bundle-signer"
TIMEOUT = 120


def signature_path(bundle: Path) -> Path:
    """Where a bundle's signature lives: beside it, ``<bundle>.sig`` (for a split bundle,
    beside its parts under the bundle's own name)."""
    return bundle.with_name(base_name(bundle) + SUFFIX)


def _ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise OperationError("ssh-keygen (OpenSSH) is needed to sign and check bundle signatures;"
                             " install the OpenSSH client")
    return found


def sign(raw_metadata: bytes, key: Path, output: Path) -> Path:
    """Sign ``raw_metadata`` with the OpenSSH private key ``key``; the signature is ``output``.

    ssh-keygen asks for the key's passphrase on the terminal, or uses ssh-agent: the
    passphrase never passes through kubeferry.
    """
    if not key.is_file():
        raise InputError(f"--key {key}: no such private key file (make one with"
                         " ssh-keygen -t ed25519 -f FILE)")
    with tempfile.TemporaryDirectory(prefix="kubeferry-sign-") as scratch:
        message = Path(scratch) / "metadata"
        message.write_bytes(raw_metadata)
        result = subprocess.run([_ssh_keygen(), "-q", "-Y", "sign", "-f", str(key), "-n", NAMESPACE,
                                 str(message)], capture_output=True, text=True, timeout=TIMEOUT)
        signed = Path(str(message) + SUFFIX)
        if result.returncode != 0 or not signed.is_file():
            last = (result.stderr.strip() or "no output").splitlines()[-1]
            raise OperationError(f"ssh-keygen could not sign with {key}: {last}")
        tmp = output.with_name(f".{output.name}.partial")
        shutil.copyfile(signed, tmp)
        tmp.replace(output)
    return output


def check(raw_metadata: bytes, public_key: Path, signature: Path, what: str) -> str:
    """Raise unless ``signature`` is a good signature of ``raw_metadata`` by ``public_key``;
    returns the key's fingerprint line as ssh-keygen reports it."""
    try:
        key_line = public_key.read_text().strip().splitlines()[0]
    except (OSError, UnicodeDecodeError, IndexError):
        raise InputError(f"--key {public_key}: not a readable OpenSSH public key file") from None
    if len(key_line.split()) < 2 or not key_line.split()[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise InputError(f"--key {public_key}: not an OpenSSH public key (ssh-ed25519 AAAA...)")
    if not signature.is_file():
        raise OperationError(f"{what} is not signed: no {signature} (sign it with"
                             " 'kubeferry bundle sign', or leave out --key)")
    with tempfile.TemporaryDirectory(prefix="kubeferry-verify-") as scratch:
        allowed = Path(scratch) / "allowed_signers"
        allowed.write_text(f'{SIGNER} namespaces="{NAMESPACE}" {key_line}\n')
        result = subprocess.run([_ssh_keygen(), "-Y", "verify", "-f", str(allowed), "-I", SIGNER,
                                 "-n", NAMESPACE, "-s", str(signature)], input=raw_metadata,
                                capture_output=True, timeout=TIMEOUT)
    if result.returncode != 0:
        raise OperationError(f"{what}: the signature {signature} does not match {public_key}"
                             " (another key, or a bundle or signature changed since signing)")
    return result.stdout.decode(errors="replace").strip()


def require_signed(bundle_path: Path, raw_metadata: bytes, public_key: Path | None) -> None:
    """With ``--verify-key``: refuse an unsigned or wrongly signed bundle before any host is
    touched (its members are checked where they are read, as always)."""
    if public_key is not None:
        check(raw_metadata, public_key, signature_path(bundle_path), str(bundle_path))


verify_key_option = click.option(
    "--verify-key", "verify_key", type=click.Path(path_type=Path, dir_okay=False), metavar="PUB",
    help="Refuse the bundle unless BUNDLE.sig is its signature by this OpenSSH public key.")
