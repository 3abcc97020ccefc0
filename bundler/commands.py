"""``kubeferry bundle ...``: build, sources, verify, inspect, images."""

from __future__ import annotations

import functools
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

import click

from kubeferry import signing
from kubeferry.bundle import delta
from kubeferry.bundle.errors import CorruptBundle
from kubeferry.bundle.format import bundle_digest, encode_metadata, parse_digest
from kubeferry.bundle.parts import base_name, parse_size, split
from kubeferry.bundle.reader import Bundle
from kubeferry.bundler.build import (
    BuildRequest,
    build,
    check_platform,
    default_cache_dir,
    effective_sources,
    parse_include,
)
from kubeferry.console import human_bytes, progress_bars
from kubeferry.errors import InputError
from kubeferry.outputs import kind_of, output_file, probe_directory
from kubeferry.timeouts import timeout_options
from kubeferry.versions import image_set

_os_option = click.option("--os", "os_name", default="el7", show_default=True,
                          help="Target OS: el7, el8, el9, ubuntu2004, ubuntu2204, debian12.")
_arch_option = click.option("--arch", default="amd64", show_default=True,
                            help="Target architecture: amd64 or arm64.")
_k8s_option = click.option("--k8s", "kubernetes", required=True,
                           help="Kubernetes patch release, e.g. 1.25.0.")
_mirror_option = click.option(
    "--mirror", "mirrors", multiple=True, metavar="HOST=URL",
    help="Pull images of registry HOST from URL (http:// = plain HTTP); names stay upstream.")
_sources_option = click.option(
    "--sources", "sources_file", type=click.Path(path_type=Path, dir_okay=False),
    help="YAML remapping any source (the schema 'kubeferry bundle sources' prints).")


@click.group()
def bundle() -> None:
    """Build and read kubeferry bundles."""


@bundle.command("build")
@_k8s_option
@_os_option
@_arch_option
@click.option("--include", "include", default=None,
              help="Content to bundle: images,packages,kernel,files [default: all; kernel on el7 only].")
@click.option("--packages-extra", default="", metavar="NAME,...",
              help="More OS packages to bundle with their dependencies.")
@click.option("--kernel-version", help="kernel-ml version for el7 [default: pinned in manifests/].")
@_mirror_option
@_sources_option
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Content-addressed download cache [default: $XDG_CACHE_HOME/kubeferry].")
@click.option("--output", "output_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("bundles"), show_default=True, help="Directory for the bundle file.")
@click.option("--image-source", type=click.Choice(["registry", "docker"]), default="registry",
              show_default=True, help="Take images from registries or a local Docker Engine.")
@click.option("--registry-auth", type=click.Path(path_type=Path, dir_okay=False),
              help="Registry credentials file in ~/.docker/config.json format.")
@click.option("--registry-ca", type=click.Path(path_type=Path, dir_okay=False),
              help="CA bundle (PEM) to trust for HTTPS registries and mirrors.")
@click.option("--jobs", "workers", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Parallel downloads (requests that only wait on a round trip: 4x as many).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars; print only the bundle path.")
@click.option("--send-password-over-plain-http", "plain_http", is_flag=True,
              help="Allow --registry-auth passwords to an http:// mirror off this machine (in clear).")
@click.option("--delta-from", "delta_from", type=click.Path(path_type=Path, dir_okay=False),
              metavar="OLD", help="Also write a delta: only the members OLD (a bundle, its first part,"
                                  " or its 'bundle inspect --json') lacks; 'bundle patch' rebuilds.")
@timeout_options
def build_command(kubernetes: str, os_name: str, arch: str, include: str | None,
                  packages_extra: str, kernel_version: str | None, mirrors: tuple[str, ...],
                  sources_file: Path | None, cache_dir: Path | None, output_dir: Path,
                  image_source: str, registry_auth: Path | None, registry_ca: Path | None,
                  workers: int, quiet: bool, plain_http: bool, delta_from: Path | None) -> None:
    """Write one verifiable bundle file for a Kubernetes release."""
    base = delta.base_of(delta_from) if delta_from is not None else None  # refused before the build
    request = BuildRequest(
        kubernetes=kubernetes, os=os_name, arch=arch, include=parse_include(include, os_name),
        packages_extra=tuple(p.strip() for p in packages_extra.split(",") if p.strip()),
        kernel_version=kernel_version,
        sources_file=sources_file, mirrors=mirrors, cache_dir=cache_dir or default_cache_dir(),
        output_dir=output_dir, image_source=image_source, registry_auth=registry_auth,
        registry_ca=registry_ca, workers=workers, plain_http_credentials=plain_http,
    )
    with progress_bars(quiet) as progress:
        result = build(request, progress)
    written = None
    if base is not None:
        written = delta.write_delta(Bundle.open(result.path), result.sha256, base, output_dir)
    if quiet:
        click.echo(str(result.path))
        if written is not None:
            click.echo(str(written[0]))
        return
    click.echo(f"bundle     {result.path}")
    click.echo(f"sha256     {result.sha256}  (sha256sum of the file, to check on the admin host)")
    click.echo(f"members    {result.metadata['membersDigest']}")
    click.echo(f"images     {result.images}")
    click.echo(f"downloaded {human_bytes(result.downloaded)}, from cache {human_bytes(result.cached)}")
    click.echo(f"size       {human_bytes(result.size)} in {result.seconds:.1f} s")
    if written is not None:
        path, carried = written
        click.echo(f"delta      {path}: {carried} of {len(result.metadata['members'])} members,"
                   f" {human_bytes(path.stat().st_size)} (from {base.name} {base.digest[:19]}...;"
                   " 'bundle patch OLD DELTA' rebuilds this bundle)")
    click.echo(f"digest     {bundle_digest(encode_metadata(result.metadata))}"
               "   (write it on the transfer form; check with 'bundle verify --digest')")


@bundle.command("sources")
@_k8s_option
@_os_option
@_arch_option
@_mirror_option
@_sources_option
def sources_command(kubernetes: str, os_name: str, arch: str, mirrors: tuple[str, ...],
                    sources_file: Path | None) -> None:
    """Print every source a build would touch, as YAML (the --sources schema)."""
    images = image_set(kubernetes)
    check_platform(os_name, arch)
    sources = effective_sources(BuildRequest(kubernetes=images.kubernetes, os=os_name, arch=arch,
                                             sources_file=sources_file, mirrors=mirrors))
    header = (
        f"# kubeferry bundle sources for Kubernetes {images.kubernetes}, {os_name}, {arch}.\n"
        "# Feed back with --sources FILE to remap any entry. Registries also redirect to\n"
        "# their blob storage and token services (registry.k8s.io -> regional storage,\n"
        "# docker.io -> auth.docker.io, production.cloudflare.docker.com).\n"
        "# Images:\n" + "".join(f"#   {name}\n" for name in images.images)
    )
    click.echo(sources.to_yaml(header), nl=False)


@bundle.command("verify")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path))
@click.option("--digest", "expected", metavar="sha256:HEX",
              help="The bundle digest 'bundle build' printed; exit 1 if this file has another.")
@click.option("--key", "public_key", type=click.Path(path_type=Path, dir_okay=False), metavar="PUB",
              help="Also check BUNDLE.sig (or --signature) against this OpenSSH public key.")
@click.option("--signature", type=click.Path(path_type=Path, dir_okay=False),
              help="The signature file [default: BUNDLE.sig].")
def verify_command(bundle_path: Path, expected: str | None, public_key: Path | None,
                   signature: Path | None) -> None:
    """Check every member of BUNDLE. Exit 0 good, 1 corrupt or tampered, 2 not a bundle."""
    if expected is not None:
        try:
            expected = parse_digest(expected)
        except ValueError as error:
            raise InputError(str(error)) from None
    if str(bundle_path) == "-" or kind_of(bundle_path) == "stream":  # read once, front to back
        with _input_stream(bundle_path) as handle:
            opened, result = Bundle.verify_stream(handle, str(bundle_path))
    else:
        opened = Bundle.open(bundle_path)
        if expected is None or opened.bundle_digest == expected:
            result = opened.verify()
    if expected is not None and opened.bundle_digest != expected:
        raise CorruptBundle(f"{bundle_path}: bundle digest is {opened.bundle_digest}, not the"
                            f" expected {expected} (another or a tampered bundle)")
    if public_key is not None:
        if str(bundle_path) == "-" and signature is None:
            raise InputError("--key with a bundle on stdin: name its signature with --signature")
        signing.check(opened.raw_metadata, public_key, signature or signing.signature_path(bundle_path),
                      str(bundle_path))
    click.echo(f"{bundle_path}: OK, {result.members} members, {human_bytes(result.bytes)},"
               f" digest {opened.bundle_digest}{' (as expected)' if expected else ''}"
               f"{', signed by ' + str(public_key) if public_key else ''}")
    if not opened.self_checked:
        click.echo(f"note: {bundle_path} was built before bundles carried a metadata self-check:"
                   " only --digest with the build's bundle digest covers its metadata")


def _unshowable_metadata_is_corrupt(command: Callable[..., None]) -> Callable[..., None]:
    """A metadata whose self-check holds but whose fields have shapes no kubeferry writes
    (re-signed by hand) is reported as such in one line, not as an internal error."""
    @functools.wraps(command)
    def wrapper(**kwargs: object) -> None:
        try:
            command(**kwargs)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as error:
            raise CorruptBundle(f"{kwargs.get('bundle_path')}: a metadata field has a shape kubeferry"
                                f" does not write ({type(error).__name__}: {error}); verify the bundle"
                                " digest against the build's") from None
    return wrapper


@contextmanager
def _input_stream(path: Path) -> Iterator[IO[bytes]]:
    """stdin for ``-``, else the pipe or device at ``path``."""
    if str(path) == "-":
        yield sys.stdin.buffer
        return
    with open(path, "rb") as handle:
        yield handle


@bundle.command("inspect")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole metadata as JSON.")
@_unshowable_metadata_is_corrupt
def inspect_command(bundle_path: Path, as_json: bool) -> None:
    """Show what BUNDLE holds (reads only its metadata; 'verify' checks the bytes)."""
    opened = Bundle.open(bundle_path)
    meta = opened.metadata
    if as_json:
        click.echo(json.dumps(meta, indent=2))
        return
    total = sum(member["size"] for member in opened.members)
    click.echo(f"bundle      {bundle_path}")
    click.echo(f"kubernetes  {meta['kubernetes']}   os {meta['os']}   arch {meta['arch']}")
    click.echo(f"created     {meta.get('created', '?')} by kubeferry {meta.get('kubeferryVersion', '?')}")
    click.echo(f"digest      {opened.bundle_digest}"
               + ("" if opened.self_checked else "   (built without a metadata self-check)"))
    click.echo(f"listing     {opened.digest} (membersDigest)")
    click.echo(f"members     {len(opened.members)} ({human_bytes(total)})")
    click.echo(f"content     {', '.join(meta.get('include', []))}")
    click.echo(f"kubeferry   {kit_line(meta)}")
    click.echo(f"images      {len(opened.images)}")
    width = max((len(image["name"]) for image in opened.images), default=0)
    for image in opened.images:
        click.echo(f"  {image['name']:<{width}}  {image['digest'][:19]}  {human_bytes(image['size'])}")
    from kubeferry.bundler.packages import inspect_lines

    for line in inspect_lines(meta):
        click.echo(line)


def kit_line(meta: dict) -> str:
    """What ``inspect`` says of the admin kit, or how to get on without one."""
    kit = meta.get("kubeferry")
    if not kit:
        return ("no kubeferry.pyz in this bundle: run install with an installed kubeferry"
                " (README: Inside the air gap)")
    pythons = kit.get("pythons") or ["?"]
    machines = "/".join(p.split("_", 1)[-1] for p in kit.get("platforms", []))
    return (f"{kit['path']} {kit.get('version', '?')}, {human_bytes(kit['size'])}"
            f" (CPython {pythons[0]}-{pythons[-1]}, {machines or '?'})")


@bundle.command("sign")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--key", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="OpenSSH private key (ssh-keygen -t ed25519 -f KEY); its passphrase is asked"
                   " by ssh-keygen, or ssh-agent answers.")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False),
              help="The signature file [default: BUNDLE.sig].")
def sign_command(bundle_path: Path, key: Path, output: Path | None) -> None:
    """Sign BUNDLE's metadata (which lists every member's sha256) with an OpenSSH key."""
    opened = Bundle.open(bundle_path)
    written = signing.sign(opened.raw_metadata, key, output or signing.signature_path(bundle_path))
    click.echo(f"{written}: signature of {bundle_path} (digest {opened.bundle_digest})")


@bundle.command("split")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--size", default="4095M", show_default=True, metavar="SIZE",
              help="Part size: bytes, or 700M, 3.9G (binary units); the default fits FAT32.")
@click.option("--output", type=click.Path(path_type=Path, file_okay=False),
              help="Folder for the parts [default: beside BUNDLE].")
def split_command(bundle_path: Path, size: str, output: Path | None) -> None:
    """Cut BUNDLE into parts NAME.001, NAME.002, ... for removable media.

    Every command that takes a bundle accepts the first part and reads across the parts in
    place; cat of the parts is the bundle byte for byte."""
    part_size = parse_size(size)
    opened = Bundle.open(bundle_path)  # a bundle (or the first part of one), its metadata checked
    assert opened.source is not None
    base = base_name(bundle_path)
    folder = output if output is not None else bundle_path.parent
    probe_directory(folder, "--output")
    written = split(opened.source, base, part_size, folder)
    for part in written:
        click.echo(f"{part}  {human_bytes(part.stat().st_size)}")
    click.echo(f"{len(written)} parts of {bundle_path.name}; on the other side give the first part"
               f" to any command: kubeferry bundle verify {written[0].name} --digest {opened.bundle_digest}")


@bundle.command("patch")
@click.argument("old", metavar="OLD", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("delta_path", metavar="DELTA", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--output", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder for the new bundle.")
def patch_command(old: Path, delta_path: Path, output: Path) -> None:
    """Rebuild the new bundle from OLD (the bundle the delta was made against, or its first
    part) and DELTA, byte for byte, checked against its digest."""
    probe_directory(output, "--output")
    written, digest = delta.patch(old, delta_path, output)
    click.echo(f"bundle     {written}")
    click.echo(f"digest     {digest}   (the build's; 'bundle verify' reads it again)")


@bundle.command("images")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path))
@click.option("--output", "-o", "output", required=True, metavar="FILE|-",
              help="Where to write the OCI image-layout tar; - for stdout.")
def images_command(bundle_path: Path, output: str) -> None:
    """Write BUNDLE's images as an OCI image-layout tar (for ctr/skopeo), verified on the way."""
    if output == "-" and sys.stdout.isatty():
        raise click.UsageError("refusing to write a tar to a terminal; use --output FILE or a pipe")
    opened = Bundle.open(bundle_path)
    with output_file(output, "--output") as handle:
        count = opened.write_images_layout(handle)
    if output != "-":
        click.echo(f"{output}: {count} images (OCI image layout)", err=True)
