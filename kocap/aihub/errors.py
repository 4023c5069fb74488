"""AI-Hub failures, each saying what the user must do. Messages never contain the API key."""


class AIHubError(RuntimeError):
    """Base class: anything the AI-Hub client cannot do."""


class MissingKeyError(AIHubError):
    def __init__(self):
        super().__init__(
            "No AI-Hub API key: set AIHUB_APIKEY in the environment or save a Prefect Secret block "
            "named 'aihub-apikey' (the key is on your AI-Hub profile page)."
        )


class MalformedKeyError(AIHubError):
    def __init__(self):
        super().__init__(
            "the AI-Hub key holds characters a key cannot have (whitespace, a line break or a control "
            "character, as a bad copy-paste gives): set AIHUB_APIKEY (or the 'aihub-apikey' Secret "
            "block) again, on one line"
        )


class UnreachableError(AIHubError):
    def __init__(self, server: str, why: str):
        super().__init__(
            f"could not reach the AI-Hub server {server} ({why}): check AIHUB_BASE_URL / "
            f"data.aihub.base_url, your network or proxy, and that the server is up; a flow run retries"
        )


class InvalidKeyError(AIHubError):
    def __init__(self):
        super().__init__(
            "AI-Hub rejected the API key (login fail): check AIHUB_APIKEY or re-issue the key on aihub.or.kr."
        )


class NotApprovedError(AIHubError):
    def __init__(self, dataset_key: str):
        super().__init__(
            f"Dataset {dataset_key} is not approved for this key: apply for it on https://aihub.or.kr "
            "(dataset page -> 다운로드 신청) and wait for approval."
        )


class ApprovalExpiredError(AIHubError):
    def __init__(self, dataset_key: str):
        super().__init__(
            f"The approval for dataset {dataset_key} has expired: re-apply (재신청) on https://aihub.or.kr."
        )


class OverseasError(AIHubError):
    def __init__(self):
        super().__init__(
            "AI-Hub refuses downloads from outside Korea: run the download from a Korean network "
            "(a machine or VPN with a Korean address)."
        )


class OutdatedClientError(AIHubError):
    def __init__(self):
        super().__init__(
            "AI-Hub says this client endpoint is outdated (신규 버전): update kocap; it speaks download protocol 0.6."
        )


class UnknownDatasetError(AIHubError):
    def __init__(self, dataset_key: str):
        super().__init__(f"AI-Hub has no dataset {dataset_key!r}: check the key with `kocap aihub list`.")


class TransferError(AIHubError):
    """A download that arrived incomplete or corrupt; the filekey is retried as a whole (no resume)."""


class IncompleteDownloadError(AIHubError):
    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        lines = "\n".join(f"  filekey {k}: {why}" for k, why in sorted(failures.items()))
        super().__init__(
            f"{len(failures)} filekey(s) failed after retries (the others landed; re-run to fetch only these):\n{lines}"
        )


class UnsafeArchiveError(AIHubError):
    """An archive member that would land outside the target folder (absolute, '..', or a link)."""
