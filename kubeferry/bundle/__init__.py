"""The bundle contract, in one place: what a bundle file holds and how it is read.

``format``: names, member rules, digests. ``metadata``: the metadata member as a typed
model (members, images, the image set recorded at build), assembled for the writer and
checked for every reader. ``layout``: the OCI image layout under ``images/`` (blob paths,
index entries, manifest -> blobs). ``archive``: the tar as every writer lays it out.
``parts``: a bundle in one file or split into parts, read as one. ``reader``: a bundle read
in place, every member verified. ``images``: its images as pushable content. ``delta``:
delta bundles and patching. See docs/bundle-format.md.
"""
