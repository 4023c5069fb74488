"""The AI-Hub protocol client (download protocol 0.6), faithful to shared/notes/aihub.md.

    client = AIHubClient(base_url, ApiKey.from_env(os.environ))
    files = client.tree("71849")
    client.download_stream("71849", ["507715"])   # a tar of offset-named .partN members

List and tree answers may come with HTTP 502 and a good body; error answers are 502 with a Korean
text body, mapped here to errors that say what to do. The key travels only in the `apikey` header.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import requests

from . import errors
from .tree import TreeFile, parse_dataset_list, parse_tree

DEFAULT_BASE_URL = "https://api.aihub.or.kr"
PROTOCOL = "0.6"

# Korean markers in AI-Hub's error bodies (aihub.md, "Errors").
NOT_APPROVED = "신청 및 승인 후 이용 가능"
EXPIRED = ("승인 유효기간 만료", "재신청")
OVERSEAS = "해외에서의 데이터 다운로드를 제한"
OUTDATED = "신규 버전"
UNKNOWN = "페이지가 존재하지 않습니다"


KEY_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no whitespace: what a key can hold


class ApiKey:
    """The AI-Hub key; its repr and str never show it, so it cannot leak through logs or errors."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not value or not value.strip():
            raise errors.MissingKeyError()
        if not KEY_CHARS.fullmatch(value.strip()):  # checked before any use: an HTTP library would echo it
            raise errors.MalformedKeyError()
        self._value = value.strip()

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "ApiKey(****)"

    __str__ = __repr__

    def __reduce__(self):  # never pickled into Prefect results or caches
        raise TypeError("ApiKey is not picklable")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ApiKey:
        return cls(env.get("AIHUB_APIKEY", ""))


@dataclass
class AIHubClient:
    base_url: str = DEFAULT_BASE_URL
    api_key: ApiKey | None = None
    timeout_s: float = 60

    def __post_init__(self):
        self.base_url = self.base_url.rstrip("/")
        self.session = requests.Session()

    # -- metadata (no key) ---------------------------------------------------------------------
    def list_datasets(self) -> dict[str, str]:
        return parse_dataset_list(self._get_text("/info/dataset.do"))

    def tree_text(self, dataset_key: str) -> str:
        text = self._get_text(f"/info/{dataset_key}.do")
        if UNKNOWN in text:
            raise errors.UnknownDatasetError(dataset_key)
        return text

    def tree(self, dataset_key: str) -> list[TreeFile]:
        files = parse_tree(self.tree_text(dataset_key))
        if not files:
            raise errors.UnknownDatasetError(dataset_key)
        return files

    def check_key(self) -> None:
        """POST /api/keyValidate.do; raises InvalidKeyError when the server says login fail."""
        resp = self._send("POST", f"{self.base_url}/api/keyValidate.do", headers=self._auth())
        try:
            code = int(resp.json().get("code", resp.status_code))
        except ValueError:
            code = resp.status_code
        if code == 401 or resp.status_code == 401:
            raise errors.InvalidKeyError()
        if code != 200:
            raise errors.AIHubError(f"AI-Hub key check answered code {code}")

    # -- download ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def download_stream(self, dataset_key: str, filekeys: list[str] | None) -> Iterator[tuple[object, int | None]]:
        """Yield (raw byte stream, Content-Length or None) of the tar for `filekeys` (None = all)."""
        sn = "all" if filekeys is None else ",".join(filekeys)
        url = f"{self.base_url}/down/{PROTOCOL}/{dataset_key}.do"
        resp = self._send("GET", url, params={"fileSn": sn}, headers=self._auth(), stream=True)
        try:
            if resp.status_code != 200 or "text" in resp.headers.get("Content-Type", ""):
                raise_for_answer(resp.status_code, resp.text, dataset_key)
            resp.raw.decode_content = True
            length = resp.headers.get("Content-Length")
            yield resp.raw, int(length) if length and length.isdigit() else None
        finally:
            resp.close()

    # -- helpers -------------------------------------------------------------------------------
    def _auth(self) -> dict[str, str]:
        if self.api_key is None:
            raise errors.MissingKeyError()
        return {"apikey": self.api_key.reveal()}

    def _send(self, method: str, url: str, **kwargs):
        """One request; a low-level error that could quote the key header becomes one that does not."""
        try:
            return self.session.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.exceptions.InvalidHeader:
            raise errors.MalformedKeyError() from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise errors.UnreachableError(self.base_url, type(exc).__name__) from None

    def _get_text(self, path: str) -> str:
        resp = self._send("GET", f"{self.base_url}{path}")
        resp.encoding = "utf-8"
        if resp.status_code not in (200, 502):  # 502 often carries a perfectly good body
            raise errors.AIHubError(f"AI-Hub answered HTTP {resp.status_code} for {path}")
        if resp.status_code == 502 and _is_error_text(resp.text):
            raise_for_answer(502, resp.text, path)
        return resp.text


def _is_error_text(text: str) -> bool:
    return any(m in text for m in (NOT_APPROVED, OVERSEAS, OUTDATED, *EXPIRED))


def raise_for_answer(status: int, body: str, dataset_key: str) -> None:
    """Map a non-tar answer of the server to the error that tells the user what to do."""
    if NOT_APPROVED in body:
        raise errors.NotApprovedError(dataset_key)
    if any(m in body for m in EXPIRED):
        raise errors.ApprovalExpiredError(dataset_key)
    if OVERSEAS in body:
        raise errors.OverseasError()
    if OUTDATED in body:
        raise errors.OutdatedClientError()
    if UNKNOWN in body:
        raise errors.UnknownDatasetError(dataset_key)
    if status == 401 or "login fail" in body:
        raise errors.InvalidKeyError()
    snippet = " ".join(body.split())[:200]
    raise errors.AIHubError(f"AI-Hub answered HTTP {status} instead of a download: {snippet!r}")
