"""The limits on what a request may bring: JSON bodies, dataset and checkpoint uploads, and
the bytes a project may store.

A group of :class:`~.settings.Settings` fields kept in a module of its own (``Settings``
inherits them, so each is still read from ``NOISEFA_<NAME>``); every check of an upload
(:mod:`.upload_flow`, :mod:`.npz_check`, :mod:`.checkpoint_check`, :mod:`.storage_quota`)
reads its bound here.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class UploadLimits(BaseModel):
    """Largest request bodies, uploads and stored bytes per project."""

    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest JSON request body.")
    max_upload_bytes: int = Field(200_000_000, ge=1024, description="Largest dataset upload.")
    max_upload_uncompressed_bytes: int = Field(
        1_000_000_000,
        ge=1024,
        description="Largest unpacked size of an upload's arrays, each and all together, as "
        "the archive declares them (checked before anything is unpacked); also what a worker "
        "holds in memory to load it. Over it: 413.",
    )
    max_upload_compression_ratio: float = Field(
        200.0,
        ge=1,
        description="Largest unpacked/packed size ratio of one upload member over 1 MiB "
        "(real data packs a few times; a block of zeros ~1000×). Over it: 413.",
    )
    max_checkpoint_bytes: int = Field(
        500_000_000,
        ge=1024,
        description="Largest checkpoint upload (POST /v1/checkpoints), counted while it "
        "arrives, before it is parsed. Over it: 413.",
    )
    max_checkpoint_header_bytes: int = Field(
        16 * 2**20,
        ge=1024,
        description="Largest safetensors header (tensor table and metadata JSON, which holds "
        "the metric history) of an uploaded checkpoint, checked before it is read. Over it: 413.",
    )
    max_project_bytes: int = Field(
        10_000_000_000,
        ge=0,
        description="Stored bytes of one project, uploads (datasets and checkpoints) and job "
        "artifacts together: an "
        "upload that would pass it answers 413, a job submitted while the project is over "
        "it 429. Deleting datasets or jobs frees room.",
    )
