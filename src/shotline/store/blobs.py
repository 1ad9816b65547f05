"""Where stored bytes live: a local directory (the default) or an S3-compatible bucket.

Objects are named by what they hold (see :mod:`.cache`): ``clips/ab/<digest>.mp4`` by shot
key, ``outputs/ab/<digest>.mp4`` by render key, and each output's stills beside it. Names
are relative; a row written before names existed may hold an absolute local path, which
the local backend still serves. Invariants:

* An object is whole or absent: the local backend renames a finished file into place, S3
  stores one PUT (or one completed multipart upload). The database row that points at an
  object is committed only after the object is there.
* A worker's own disk is scratch (``settings.scratch``): with S3, every object a later step
  needs (on another machine, perhaps) is in the bucket before the step that made it ends.
* :meth:`Blobs.check` finds bad configuration (no such bucket, refused credentials, an
  endpoint that does not answer) when a process starts, as one :class:`ConfigError`.
"""

from __future__ import annotations

import errno
import mimetypes
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from .. import scratch
from ..errors import ConfigError, StorageError

if TYPE_CHECKING:
    from ..settings import Settings

CHUNK = 1 << 20


def content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


class Blobs(Protocol):
    """The operations the store needs from a place that keeps bytes."""

    where: str  # for `shotline cache stats` and messages: a directory or s3://bucket/prefix

    def put(self, name: str, src: Path) -> None:
        """Store ``src`` under ``name``; ``src`` is consumed (moved or uploaded, then removed)."""
        ...

    def exists(self, name: str) -> bool: ...

    def address(self, name: str) -> str:
        """Where the object is, for people: a file path or an s3:// URL."""
        ...

    def size(self, name: str) -> int | None:
        """The object's size in bytes, or None if there is none."""
        ...

    def local(self, name: str) -> Path | None:
        """The object's own file, when it is on this machine's disk (local backend only)."""
        ...

    def fetch(self, name: str, dest: Path) -> Path:
        """Copy the object to ``dest`` (written whole, then renamed into place)."""
        ...

    def read(self, name: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (inclusive) of the object, in chunks."""
        ...

    def presign(self, name: str, seconds: int, filename: str) -> str | None:
        """A URL anyone holding it may GET the object from, or None if there is no such URL."""
        ...

    def delete(self, name: str) -> None: ...

    def check(self) -> None:
        """Raise ConfigError if the place cannot be used; writes nothing that stays."""
        ...


def _move(src: Path, dest: Path) -> None:
    """Rename ``src`` to ``dest``, copying first when they are on different filesystems."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = scratch.beside(dest)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        src.unlink()


class LocalBlobs:
    """Objects as files under ``root`` (``HOME/store`` by default)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)

    def path(self, name: str) -> Path:
        # An absolute name is a row from before names were relative: its file, where it is.
        return Path(name) if os.path.isabs(name) else self.root / name

    def put(self, name: str, src: Path) -> None:
        final = self.path(name)
        if src.resolve() != final.resolve():
            _move(src, final)

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def address(self, name: str) -> str:
        return str(self.path(name))

    def size(self, name: str) -> int | None:
        try:
            return self.path(name).stat().st_size
        except FileNotFoundError:
            return None

    def local(self, name: str) -> Path | None:
        path = self.path(name)
        return path if path.is_file() else None

    def fetch(self, name: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = scratch.beside(dest)
        shutil.copyfile(self.path(name), tmp)
        os.replace(tmp, dest)
        return dest

    def read(self, name: str, start: int, end: int) -> Iterator[bytes]:
        with self.path(name).open("rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0 and (block := f.read(min(CHUNK, left))):
                left -= len(block)
                yield block

    def presign(self, name: str, seconds: int, filename: str) -> str | None:
        return None

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot use {self.root} for the store: {exc.strerror}; set "
                              "SHOTLINE_HOME to a writable directory, or SHOTLINE_STORAGE to "
                              "s3://BUCKET/PREFIX") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot write to the store at {self.root}: set SHOTLINE_HOME to "
                              "a writable directory, or SHOTLINE_STORAGE to s3://BUCKET/PREFIX")


class S3Blobs:
    """Objects in an S3-compatible bucket, under ``prefix``.

    Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, an instance role...)
    and the region from ``AWS_REGION`` / ``AWS_DEFAULT_REGION``; ``endpoint_url`` points at a
    store other than AWS S3. The client is made per process, after any fork.
    """

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.where = f"s3://{bucket}/{self.prefix}"
        self._client: Any = None
        self._pid = 0

    @property
    def client(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            import boto3
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": 5},
                            signature_version="s3v4", connect_timeout=10, read_timeout=60)
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url, config=config)
            self._pid = os.getpid()
        return self._client

    def key(self, name: str) -> str:
        return self.prefix + name.lstrip("/")

    def put(self, name: str, src: Path) -> None:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.upload_file(str(src), self.bucket, self.key(name),
                                    ExtraArgs={"ContentType": content_type(name)})
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise StorageError(f"could not store {self.address(name)}: {exc}") from None
        src.unlink(missing_ok=True)

    def _head(self, name: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return head

    def exists(self, name: str) -> bool:
        return self._head(name) is not None

    def address(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def size(self, name: str) -> int | None:
        head = self._head(name)
        return None if head is None else int(head["ContentLength"])

    def local(self, name: str) -> Path | None:
        return None

    def fetch(self, name: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = scratch.beside(dest)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.download_file(self.bucket, self.key(name), str(tmp))
            os.replace(tmp, dest)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not fetch {self.address(name)}: {exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def read(self, name: str, start: int, end: int) -> Iterator[bytes]:
        answer = self.client.get_object(Bucket=self.bucket, Key=self.key(name),
                                        Range=f"bytes={start}-{end}")
        body = answer["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def presign(self, name: str, seconds: int, filename: str) -> str | None:
        url: str = self.client.generate_presigned_url("get_object", Params={
            "Bucket": self.bucket, "Key": self.key(name),
            "ResponseContentType": content_type(name),
            "ResponseContentDisposition": f'inline; filename="{filename}"',
        }, ExpiresIn=seconds)
        return url

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = f"bucket {self.bucket!r}" + (f" at {self.endpoint_url}" if self.endpoint_url
                                             else " on AWS S3")
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise ConfigError(f"no credentials for {where}: set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or give the machine a "
                              "role)") from None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise ConfigError(f"{where} does not exist: create it, or fix SHOTLINE_STORAGE "
                                  "(s3://BUCKET/PREFIX)") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ConfigError(f"{where} refused our credentials ({code}): check "
                                  "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that they "
                                  "may read and write the bucket") from None
            raise ConfigError(f"{where} answered {code or 'an error'}: check "
                              "SHOTLINE_STORAGE and SHOTLINE_S3_ENDPOINT_URL") from None
        except (BotoCoreError, ValueError) as exc:  # unreachable endpoint, malformed URL
            raise ConfigError(f"cannot reach {where}: {type(exc).__name__}; check "
                              "SHOTLINE_S3_ENDPOINT_URL") from None


def open_blobs(settings: Settings) -> Blobs:
    """The place ``settings.storage`` names: ``s3://bucket/prefix``, or HOME/store."""
    storage = settings.storage.strip()
    if not storage:
        return LocalBlobs(settings.home / "store")
    parts = urlsplit(storage)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"SHOTLINE_STORAGE={storage!r} is not s3://BUCKET/PREFIX; leave it "
                          "empty to keep files under SHOTLINE_HOME")
    return S3Blobs(parts.netloc, parts.path, settings.s3_endpoint_url)
