"""The ``google`` provider: Veo 3.1 GA on Vertex AI (Gemini Enterprise Agent Platform).

Wire format, and the quirks that shaped this adapter:

* Submit is ``POST {base}/v1/projects/{P}/locations/{L}/publishers/google/models/{M}
  :predictLongRunning`` with ``{"instances": [{"prompt"}], "parameters": {...}}``; it answers
  ``{"name": "projects/.../operations/ID"}``. Polling is not ``GET`` on that name but
  ``POST {model}:fetchPredictOperation`` with ``{"operationName": name}``, so the model's
  path is kept in the JobRef for a resumed worker.
* Types matter: ``durationSeconds`` and ``seed`` are integers, ``generateAudio`` a boolean.
  ``generateAudio`` is sent only to models whose audio is optional and ``seed`` only where
  the table says the model takes one (Vertex rejects unknown fields for some models).
* The size is not sent as WxH: Vertex wants ``aspectRatio`` ("16:9"/"9:16") and
  ``resolution`` ("720p", "1080p", "4k").
* Images go inline in the instance as ``{"bytesBase64Encoded", "mimeType"}`` (PNG or
  JPEG): ``image`` is the first frame, ``lastFrame`` the last (only with a first), and
  ``referenceImages`` up to three pictures of the cast as ``{"image": ..., "referenceType":
  "ASSET"}`` (the enum value google-genai sends), which Veo takes only without frames and
  only on 8 s calls.
* A finished operation has ``done: true`` and either ``error {code, message}`` or
  ``response.videos[]`` holding ``bytesBase64Encoded`` (no ``storageUri`` given) or a
  ``gcsUri``. Responsible-AI filtering is not an HTTP error: the operation succeeds with
  fewer videos and ``raiMediaFilteredCount``/``raiMediaFilteredReasons``. Google does not
  bill filtered outputs, and the same prompt would be filtered again, so it is permanent.
* A ``gs://`` URI needs GCS access: it is read through the GCS JSON API media URL
  (``SHOTLINE_GOOGLE_STORAGE_URL`` overrides the host) with the same bearer token. Setting
  ``SHOTLINE_GOOGLE_OUTPUT_URI=gs://bucket/prefix/`` sends ``storageUri``.
* Auth is an OAuth access token (``GOOGLE_ACCESS_TOKEN``, e.g. from ``gcloud auth
  print-access-token``; it lasts about an hour). If that is unset and ``google-auth`` is
  installed, application default credentials are used instead.
* Vertex cannot look an operation up by our key, so there is no ``find``: a submit whose
  answer was lost is left for an operator rather than paid for twice.
* Gemini Omni uses the Interactions API, whose request and result shapes are only known
  from third parties; this adapter refuses Omni models instead of guessing.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import os
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from ..core.capabilities import tier_of
from ..errors import CapabilityError, ConfigError, MediaError, PermanentError
from ..settings import Settings
from .base import ImageInput, JobRef, JobStatus, ShotRequest
from .http import MODERATION_WORDS, HttpProvider, add_seed, check

# Vertex's own words for a refused prompt, on top of the shared moderation words.
RAI_WORDS = (*MODERATION_WORDS, "usage guidelines", "responsible ai", "rai ", "filtered")
# google.rpc codes worth another try: DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED,
# INTERNAL, UNAVAILABLE. Anything else (INVALID_ARGUMENT, ...) would fail the same way.
RETRYABLE_RPC = frozenset({4, 8, 10, 13, 14})


class GoogleProvider(HttpProvider):
    """Veo 3.1 on Vertex AI; see the module docstring for the wire format."""

    name: ClassVar[str] = "google"
    key_env: ClassVar[tuple[str, ...]] = ("GOOGLE_ACCESS_TOKEN",)
    default_base_url: ClassVar[str] = "https://us-central1-aiplatform.googleapis.com"
    lookup: ClassVar[str] = (
        "Vertex has no lookup of a Veo operation by its request: check the Vertex AI section of "
        "the Cloud console for an operation started after the submit")

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        # Checked first, not at the first submit: a missing credential must stop the render
        # before any shot is claimed, or the claim would later look like a lost submit.
        self.project = os.environ.get("GOOGLE_CLOUD_PROJECT") or ""
        if not self.project:
            raise ConfigError("google: no project; set GOOGLE_CLOUD_PROJECT")
        if not self.has_credentials():
            raise ConfigError("google: no access token; set GOOGLE_ACCESS_TOKEN (e.g. "
                              "`gcloud auth print-access-token`) or install google-auth")
        super().__init__(settings, transport)
        self._adc: Any = None  # google-auth credentials, made once and refreshed when stale
        self.location = os.environ.get("GOOGLE_CLOUD_LOCATION") or "us-central1"
        if not os.environ.get("SHOTLINE_GOOGLE_BASE_URL"):  # the host follows the region
            host = "aiplatform" if self.location == "global" else f"{self.location}-aiplatform"
            self.base_url = f"https://{host}.googleapis.com"
        self.storage_url = os.environ.get(
            "SHOTLINE_GOOGLE_STORAGE_URL", "https://storage.googleapis.com").rstrip("/")

    @classmethod
    def has_credentials(cls) -> bool:
        return bool(os.environ.get("GOOGLE_ACCESS_TOKEN")) or _has_google_auth()

    def api_key(self) -> str:
        if token := os.environ.get("GOOGLE_ACCESS_TOKEN"):
            return token
        if not _has_google_auth():
            raise ConfigError("google: no access token; set GOOGLE_ACCESS_TOKEN")
        # google-auth is optional and untyped here, hence the dynamic import. Its refresh is
        # a blocking call, made only when the hour-long token has gone stale.
        failures = importlib.import_module("google.auth.exceptions")
        try:
            if self._adc is None:
                auth = importlib.import_module("google.auth")
                self._adc, _ = auth.default(
                    scopes=["https://www.googleapis.com/auth/cloud-platform"])
            if not self._adc.valid:
                self._adc.refresh(
                    importlib.import_module("google.auth.transport.requests").Request())
        except (failures.DefaultCredentialsError, failures.RefreshError) as exc:
            raise ConfigError("google: no access token; set GOOGLE_ACCESS_TOKEN (e.g. `gcloud "
                              "auth print-access-token`) or set up application default "
                              f"credentials ({type(exc).__name__})") from None
        return str(self._adc.token)

    def is_moderation(self, message: str) -> bool:
        return any(word in message.lower() for word in RAI_WORDS)

    def model_path(self, wire_model: str) -> str:
        return (f"/v1/projects/{self.project}/locations/{self.location}"
                f"/publishers/google/models/{wire_model}")

    # -- the protocol ------------------------------------------------------------------

    def validate(self, request: ShotRequest) -> None:
        if request.wire_model.startswith("gemini-omni"):
            raise CapabilityError(
                f"{request.model} is not supported by this adapter yet: Gemini Omni uses the "
                "Interactions API, whose request and result are not documented well enough "
                "here to implement honestly. Use runway/gemini_omni_flash, "
                "google/veo-3.1-generate-001 or google/veo-3.1-fast-generate-001.")
        if request.images():
            check(request, self.capabilities(request), images=True)
            if request.last_frame and not request.first_frame:
                raise CapabilityError(f"{request.model}: a last frame needs a first frame too; "
                                      "nothing was sent")
            for image in request.images():
                image.require(request.model, mimes=("image/png", "image/jpeg"))

    async def submit(self, request: ShotRequest) -> JobRef:
        self.validate(request)
        path = self.model_path(request.wire_model)
        answer = await self.call("POST", f"{path}:predictLongRunning",
                                 body=self.body(request), submit=True)
        name = answer.get("name") if isinstance(answer, dict) else None
        if not isinstance(name, str) or not name:
            raise PermanentError(f"google: predictLongRunning answered without an operation "
                                 f"name: {str(answer)[:200]}", reason="no operation name")
        # The core names temporary files after job_id, so it is the operation's last
        # segment (a UUID-like id); the full name, which polling needs, goes in data.
        return JobRef(self.name, name.rsplit("/", 1)[-1], {"operation": name, "model_path": path})

    def body(self, request: ShotRequest) -> dict[str, Any]:
        caps = self.capabilities(request)
        width, height = (int(side) for side in request.size.lower().split("x"))
        params: dict[str, Any] = {
            "durationSeconds": int(request.seconds),
            "aspectRatio": "16:9" if width >= height else "9:16",
            "resolution": tier_of(request.size),
            "sampleCount": 1,  # one clip per shot: extra samples would be billed
        }
        if caps.audio == "optional":
            params["generateAudio"] = bool(request.audio)
        add_seed(params, caps, request)
        if output := os.environ.get("SHOTLINE_GOOGLE_OUTPUT_URI"):
            params["storageUri"] = output
        instance: dict[str, Any] = {"prompt": request.prompt}
        if request.first_frame:
            instance["image"] = _inline(request.first_frame)
        if request.last_frame:
            instance["lastFrame"] = _inline(request.last_frame)
        if request.references:
            instance["referenceImages"] = [{"image": _inline(r), "referenceType": "ASSET"}
                                           for r in request.references]
        return {"instances": [instance], "parameters": params}

    async def operation(self, ref: JobRef) -> dict[str, Any]:
        name = str(ref.data.get("operation") or ref.job_id)
        path = ref.data.get("model_path") or "/v1/" + name.split("/operations/")[0]
        answer = await self.call("POST", f"{path}:fetchPredictOperation",
                                 body={"operationName": name})
        return answer if isinstance(answer, dict) else {}

    async def poll(self, ref: JobRef) -> JobStatus:
        op = await self.operation(ref)
        if not op.get("done"):  # Vertex reports no queue position or progress for Veo
            return JobStatus("running")
        if error := op.get("error"):
            error = error if isinstance(error, dict) else {"message": error}
            said = self._scrub(str(error.get("message") or error))
            moderated = self.is_moderation(said)
            kind = "moderation" if moderated else f"error {error.get('code')}"
            return JobStatus("failed", error=f"{kind}: {said}",
                             retryable=not moderated and error.get("code") in RETRYABLE_RPC)
        response = op.get("response") or {}
        if response.get("videos"):
            return JobStatus("succeeded", progress=1.0)
        reasons = "; ".join(str(r) for r in response.get("raiMediaFilteredReasons") or [])
        if response.get("raiMediaFilteredCount"):
            return JobStatus("failed", retryable=False, error=f"moderation: Google's "
                             f"responsible-AI filter removed the video: {reasons or 'no reason given'}")
        return JobStatus("failed", retryable=True, error="the operation finished without a video")

    async def download(self, ref: JobRef, dest: Path) -> Path:
        videos = ((await self.operation(ref)).get("response") or {}).get("videos") or []
        if not videos:
            raise PermanentError(f"google: operation {ref.job_id} has no video to download",
                                 reason="no video in the finished operation")
        video = videos[0]
        if data := video.get("bytesBase64Encoded"):
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise MediaError("google: the video's base64 is malformed") from None
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(raw)
            return dest
        uri = str(video.get("gcsUri") or "")
        if not uri.startswith("gs://") or "/" not in uri[5:]:
            raise PermanentError(f"google: unusable video location {uri!r}", reason="no video URI")
        bucket, obj = uri[5:].split("/", 1)
        url = f"{self.storage_url}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(obj, safe='')}"
        # GCS is not the Vertex host, so fetch() would not add the token by itself.
        return await self.fetch(f"{url}?alt=media", dest, headers=self.auth_headers())


def _inline(image: ImageInput) -> dict[str, str]:
    return {"bytesBase64Encoded": image.base64(), "mimeType": image.mime}


def _has_google_auth() -> bool:
    try:
        importlib.import_module("google.auth")
    except ImportError:
        return False
    return True
