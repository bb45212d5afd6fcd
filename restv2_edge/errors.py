"""One exception type per failure family; the CLI turns each into a one-line message."""


def first_line(exc: BaseException) -> str:
    """An exception's first non-empty line (or its type name): backends' messages are often
    pages long, a user's error line is one."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


class RestV2EdgeError(Exception):
    """Base class for every error restv2-edge raises on purpose."""


class ConfigError(RestV2EdgeError):
    """Unknown variant, bad image size, inconsistent model config."""


class CheckpointError(RestV2EdgeError):
    """Missing, corrupt, unsafe or mismatched checkpoint."""


class DataError(RestV2EdgeError):
    """Missing, empty or unreadable dataset or image."""


class BackendMissingError(RestV2EdgeError):
    """A target runtime/converter whose pip extra is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install the extra: pip install 'restv2-edge[{extra}]'"
        )
        self.package = package
        self.extra = extra


class ExportError(RestV2EdgeError):
    """A conversion that failed or a request the target cannot do."""


class ArtifactError(RestV2EdgeError):
    """A missing, malformed or tampered artifact folder."""


class ParityError(RestV2EdgeError):
    """An artifact whose outputs are past the parity thresholds."""


class RunnerUnavailableError(RestV2EdgeError):
    """The artifact is fine but cannot run on this machine (e.g. Core ML off macOS)."""


class ClusterError(RestV2EdgeError):
    """A Ray cluster that cannot be reached, or tasks that failed after their retries."""


class ProfileError(RestV2EdgeError):
    """A runtime without a per-op profiler here, or a profile that could not be read."""


class OutputError(RestV2EdgeError):
    """An output that exists (without --force), cannot be written, or was taken meanwhile."""
