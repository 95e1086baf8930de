"""The TensorRT plan cache: plans live in the bundle under engines/, each beside a small JSON record.

A plan is tied to the graph and weights it was built from, the profiles, the build options, the
TensorRT version and the GPU. The record says all of that plus the plan file's sha256 and size;
it is written after the plan (both atomically: temporary file, then rename), so a plan without a
record is never used. The bundle's manifest.json is never rewritten: it is the hashed build record
of the bundle, and Bundle.load ignores files it does not list, such as these.

Everything here is pure Python, so the key and the refusal logic are tested on hosts without
TensorRT. Before TensorRT reads a byte of a plan (a plan is executable code), the record must
match this host and the plan's bytes must match the record's sha256.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trtdeploy.runtime.atomic import write_atomic
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.errors import ArtifactError, IncompatibleEngine
from trtdeploy.runtime.failpoints import failpoint
from trtdeploy.runtime.tensorrt_options import TrtBuildOptions

ENGINES_DIR = "engines"
RECORD_FORMAT = 1

Profile = dict[str, list[list[int]]]  # input name -> [min, opt, max] shapes


@dataclass(frozen=True)
class Environment:
    """What a plan is tied to on the host that builds or loads it."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"

    @property
    def tensorrt_major(self) -> int:
        return _version_tuple(self.tensorrt_version)[0]


@dataclass(frozen=True)
class PlanKey:
    """Everything a plan depends on. Its sha256 names the plan file."""

    component: str
    onnx_sha256: str
    weights_sha256: str
    profiles: Profile
    builder_options: Mapping[str, Any]
    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    @classmethod
    def for_bundle(
        cls, bundle: Bundle, component: str, env: Environment, options: TrtBuildOptions
    ) -> PlanKey:
        """The key of ``component``'s plan built on ``env`` with ``options``."""
        manifest = bundle.manifest
        entry = manifest.component(component)
        return cls(
            component=component,
            onnx_sha256=str(manifest.files[entry.onnx]["sha256"]),
            weights_sha256=str(manifest.weights.get("sha256", "")),
            profiles={n: [list(s) for s in shapes] for n, shapes in entry.io.profile_shapes().items()},
            builder_options=options.key_json(),
            tensorrt_version=env.tensorrt_version,
            gpu_name=env.gpu_name,
            compute_capability=env.compute_capability,
        )

    @property
    def options(self) -> TrtBuildOptions:
        return TrtBuildOptions.from_key_json(self.builder_options)

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "onnx_sha256": self.onnx_sha256,
            "weights_sha256": self.weights_sha256,
            "profiles": self.profiles,
            "builder_options": dict(self.builder_options),
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanKey:
        return cls(
            component=str(data["component"]),
            onnx_sha256=str(data["onnx_sha256"]),
            weights_sha256=str(data["weights_sha256"]),
            profiles={str(k): [[int(d) for d in s] for s in v] for k, v in data["profiles"].items()},
            builder_options=dict(data["builder_options"]),
            tensorrt_version=str(data["tensorrt_version"]),
            gpu_name=str(data["gpu_name"]),
            compute_capability=str(data["compute_capability"]),
        )

    def digest(self) -> str:
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def stem(self) -> str:
        return f"{self.component}-{self.digest()[:16]}"


@dataclass(frozen=True)
class Mismatch:
    """One field where a plan's record differs from what this host and bundle need."""

    field: str
    built: str
    current: str
    note: str = ""

    def __str__(self) -> str:
        text = f"{self.field}: built {self.built}, here {self.current}"
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class PlanRecord:
    key: PlanKey
    plan: str  # file name inside engines/
    plan_sha256: str
    plan_size: int
    built_utc: str
    format_version: int = RECORD_FORMAT
    extra: Mapping[str, Any] = field(default_factory=dict)
    signature: str = ""  # HMAC-SHA256 of the rest with this host's key (see HostKey)

    def body(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "key": self.key.to_json(),
            "key_sha256": self.key.digest(),
            "plan": self.plan,
            "plan_sha256": self.plan_sha256,
            "plan_size": self.plan_size,
            "built_utc": self.built_utc,
            **({"extra": dict(self.extra)} if self.extra else {}),
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "signature": self.signature}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanRecord:
        key = PlanKey.from_json(data["key"])
        if key.digest() != data["key_sha256"]:
            raise ValueError("key_sha256 does not match the key: the record was edited")
        key.options  # noqa: B018 - refuses builder options this version does not know
        return cls(
            key=key,
            plan=str(data["plan"]),
            plan_sha256=str(data["plan_sha256"]),
            plan_size=int(data["plan_size"]),
            built_utc=str(data["built_utc"]),
            format_version=int(data["format_version"]),
            extra=dict(data.get("extra", {})),
            signature=str(data.get("signature", "")),
        )


class HostKey:
    """This host's secret for plan records: 32 random bytes in ``<cache>/plan-record.key`` (mode 0600),
    made by the first `trtdeploy engine` here. The cache folder is $TRTDEPLOY_CACHE_DIR, else
    ~/.cache/trtdeploy; nothing else outside a bundle is read.

    A plan is executable code. Its record is trusted only when its HMAC verifies with this key,
    that is when trtdeploy wrote it on this host (or on one sharing the key file): a bundle copied
    from elsewhere with an engines/ folder, or a record edited or forged by anyone who can't read
    the key, is not trusted and its plan is never loaded; the plan is rebuilt here instead.
    """

    FILE = "plan-record.key"

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else cache_folder()

    def read(self, *, create: bool) -> bytes | None:
        path = self.folder / self.FILE
        if path.is_symlink():
            raise ArtifactError(f"{path} is a symbolic link; the host key must be a plain file. Remove it.")
        if path.is_file():
            _check_private(path)
            key = path.read_bytes()
            if len(key) != 32:
                raise ArtifactError(
                    f"{path} is not a trtdeploy host key ({len(key)} bytes, not 32). Remove it."
                )
            return key
        if not create:
            return None
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = os.urandom(32)
        fd, tmp = tempfile.mkstemp(prefix=".key.", dir=self.folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # never replaces a key another process just made
        except FileExistsError:
            pass
        finally:
            Path(tmp).unlink(missing_ok=True)
        return self.read(create=False)

    def sign(self, record: PlanRecord) -> PlanRecord:
        key = self.read(create=True)
        assert key is not None  # read(create=True) makes one or raises
        return replace(record, signature=_mac(key, record))

    def trusts(self, record: PlanRecord) -> bool:
        key = self.read(create=False)
        return key is not None and hmac.compare_digest(record.signature, _mac(key, record))


def _check_private(path: Path) -> None:
    """The key proves a plan record was written here only while no one else can read or replace it."""
    info = path.stat()
    if info.st_mode & 0o077 or info.st_uid != os.getuid():
        raise ArtifactError(
            f"{path} is readable or writable by others (mode {info.st_mode & 0o777:o}, owner uid "
            f"{info.st_uid}, this user {os.getuid()}): anyone who can read it can forge plan records. "
            f"Remove it (plans are rebuilt and re-signed with a new key) or `chmod 600` it if it is yours."
        )


def cache_folder() -> Path:
    configured = os.environ.get("TRTDEPLOY_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "trtdeploy"


def _mac(key: bytes, record: PlanRecord) -> str:
    body = json.dumps(record.body(), sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def bundle_mismatches(record: PlanKey, expected: PlanKey) -> list[Mismatch]:
    """Fields where the plan was built from something other than this bundle's graph."""
    out = []
    for name in ("component", "onnx_sha256", "weights_sha256"):
        built, current = getattr(record, name), getattr(expected, name)
        if built != current:
            out.append(Mismatch(name, _short(built), _short(current)))
    if record.profiles != expected.profiles:
        out.append(Mismatch("profiles", json.dumps(record.profiles), json.dumps(expected.profiles)))
    return out


def option_mismatches(record: PlanKey, wanted: TrtBuildOptions) -> list[Mismatch]:
    """Fields where the plan was built with other options than ``wanted``."""
    built, want = record.builder_options, wanted.key_json()
    return [
        Mismatch(f"builder option {name}", repr(built.get(name)), repr(want[name]))
        for name in want
        if built.get(name) != want[name]
    ]


def environment_mismatches(record: PlanKey, env: Environment) -> list[Mismatch]:
    """Fields where the plan can't run on ``env``.

    A plan runs only on the TensorRT version and GPU it was built with, except as its options
    relax that: a version-compatible plan runs on newer releases of its major version (and a
    10.x one on 11.x, the one cross-major pair TensorRT documents); a hardware-compatible plan
    runs on any GPU of its level (Ampere or newer, or the same compute capability).
    """
    options = record.options
    out = []
    version_note = _version_problem(record.tensorrt_version, env.tensorrt_version, options.version_compatible)
    if version_note is not None:
        out.append(Mismatch("tensorrt_version", record.tensorrt_version, env.tensorrt_version, version_note))
    out += _gpu_problems(record, env, options.hardware_compatibility)
    return out


def _version_problem(built: str, current: str, version_compatible: bool) -> str | None:
    if built == current:
        return None
    if not version_compatible:
        return "plans run only on the TensorRT release that built them"
    b, c = _version_tuple(built), _version_tuple(current)
    if (b[0] == c[0] and c >= b) or (b[0] == 10 and c[0] == 11):
        return None
    return (
        "a version-compatible plan runs on the same or a newer release of its major version, or 10.x on 11.x"
    )


def _gpu_problems(record: PlanKey, env: Environment, level: str) -> list[Mismatch]:
    built_cc, current_cc = record.compute_capability, env.compute_capability
    if level == "ampere_plus":
        if _version_tuple(current_cc) >= (8, 0):
            return []
        return [
            Mismatch("compute_capability", built_cc, current_cc, "an ampere_plus plan needs 8.0 or newer")
        ]
    if level == "same_compute_capability":
        if built_cc == current_cc:
            return []
        return [
            Mismatch("compute_capability", built_cc, current_cc, "plan built for the same compute capability")
        ]
    out = []
    if record.gpu_name != env.gpu_name:
        out.append(Mismatch("gpu_name", repr(record.gpu_name), repr(env.gpu_name)))
    if built_cc != current_cc:
        out.append(Mismatch("compute_capability", built_cc, current_cc))
    return out


def rebuild_command(root: Path, options: TrtBuildOptions) -> str:
    return " ".join(["trtdeploy", "engine", str(root), *options.cli_args()])


class EngineCache:
    """The plans of one bundle, in ``<bundle>/engines``: a real folder inside the bundle (never a
    link), plain files only, each record trusted only if this host's key verifies it (HostKey)."""

    def __init__(self, bundle_root: str | Path, host_key: HostKey | None = None) -> None:
        self.root = Path(bundle_root)
        self.dir = self.root / ENGINES_DIR
        self.host_key = host_key or HostKey()

    def _check_folder(self) -> bool:
        """Whether engines/ exists; refuses one that is a link or not a folder."""
        if self.dir.is_symlink():
            raise ArtifactError(
                f"{self.dir} is a symbolic link; plans are read only from the bundle's own engines/ folder "
                "(a link could bring plans, which are executable code, from anywhere). Remove it and rebuild "
                f"the plans: trtdeploy engine {self.root}"
            )
        if self.dir.exists() and not self.dir.is_dir():
            raise ArtifactError(f"{self.dir} is not a folder; remove it and rebuild the plans.")
        return self.dir.is_dir()

    def records(self, component: str | None = None) -> list[PlanRecord]:
        if not self._check_folder():
            return []
        out = []
        for path in sorted(self.dir.glob("*.json")):
            record = self._read_record(path)
            if component is None or record.key.component == component:
                out.append(record)
        return out

    def lookup(self, key: PlanKey) -> PlanRecord | None:
        """The record of exactly this key (same graph, options, TensorRT and GPU), if built here."""
        if not self._check_folder():
            return None
        path = self.dir / f"{key.stem}.json"
        if not path.is_file():
            return None
        record = self._read_record(path)
        return record if record.key == key and self.host_key.trusts(record) else None

    def select(
        self, expected: PlanKey, env: Environment, options: TrtBuildOptions | None = None
    ) -> PlanRecord:
        """The newest plan of ``expected.component`` that this bundle and host can run.

        ``options``, when given, must match too. Raises IncompatibleEngine naming each field that
        differs (built vs here) when plans exist but none fits, and ArtifactError when none exists.
        """
        records = self.records(expected.component)
        if not records:
            raise ArtifactError(
                f"{expected.component}: the bundle {self.root} has no TensorRT plan. Build it on this "
                f"device: {rebuild_command(self.root, options or TrtBuildOptions())}"
            )
        rejected: list[tuple[PlanRecord, list[Mismatch]]] = []
        for record in sorted(records, key=lambda r: r.built_utc, reverse=True):
            problems = bundle_mismatches(record.key, expected) + environment_mismatches(record.key, env)
            if options is not None:
                problems += option_mismatches(record.key, options)
            if not self.host_key.trusts(record):
                problems.append(
                    Mismatch(
                        "record signature",
                        "not this host's",
                        "required",
                        "its record was not written by trtdeploy on this host (copied, edited or forged), so "
                        "its plan, which is executable code, is not loaded",
                    )
                )
            if not problems:
                return record
            rejected.append((record, problems))
        raise IncompatibleEngine(self._refusal(expected.component, rejected, options))

    def _refusal(
        self,
        component: str,
        rejected: list[tuple[PlanRecord, list[Mismatch]]],
        options: TrtBuildOptions | None,
    ) -> str:
        newest, problems = rejected[0]
        wanted = options or newest.key.options  # rebuild as the newest plan was built
        lines = "\n  ".join(str(p) for p in problems)
        others = f" ({len(rejected) - 1} older plans don't fit either)" if len(rejected) > 1 else ""
        return (
            f"{component}: the TensorRT plan {ENGINES_DIR}/{newest.plan} can't be used here{others}:\n  {lines}\n"
            f"A plan is tied to its graph, TensorRT version, GPU and options. Rebuild it on this device: "
            f"{rebuild_command(self.root, wanted)}"
        )

    def read_plan(self, record: PlanRecord) -> bytes:
        """The plan's bytes, after checking their size and sha256 against the record."""
        path = self._plan_path(record.plan)
        if not path.is_file():
            raise ArtifactError(f"{path} is missing; its record is {record.key.stem}.json. Rebuild the plan.")
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != record.plan_size or digest != record.plan_sha256:
            raise ArtifactError(
                f"{path} has {len(data)} bytes with sha256 {digest[:16]}…, its record says "
                f"{record.plan_size} bytes with sha256 {record.plan_sha256[:16]}…: it was changed after "
                f"the build. A plan is executable code; it is not loaded. Rebuild it: "
                f"{rebuild_command(self.root, record.key.options)}"
            )
        return data

    def write_plan(self, key: PlanKey, plan: bytes, extra: Mapping[str, Any] | None = None) -> PlanRecord:
        """Write the plan file (atomically) and return its record, not yet committed."""
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"{key.stem}.plan"
        write_atomic(self.dir / name, plan)
        failpoint("plan-write")
        return PlanRecord(
            key=key,
            plan=name,
            plan_sha256=hashlib.sha256(plan).hexdigest(),
            plan_size=len(plan),
            built_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            extra=dict(extra or {}),
        )

    def commit(self, record: PlanRecord) -> Path:
        """Sign and write the record, which makes the plan visible to ``select`` and ``lookup``."""
        signed = self.host_key.sign(record)
        path = self.dir / f"{record.key.stem}.json"
        write_atomic(path, (json.dumps(signed.to_json(), indent=2, sort_keys=True) + "\n").encode("utf-8"))
        return path

    def discard(self, record: PlanRecord) -> None:
        """Remove a plan that was written but not committed (e.g. it missed its accuracy budget)."""
        self._plan_path(record.plan).unlink(missing_ok=True)

    def timing_cache_path(self, env: Environment) -> Path:
        """Kernel timings are valid for one TensorRT version and GPU only, so the file is keyed so."""
        tag = hashlib.sha256(
            f"{env.tensorrt_version}|{env.gpu_name}|{env.compute_capability}".encode()
        ).hexdigest()[:16]
        return self.dir / f"timing-{tag}.cache"

    def _plan_path(self, name: str) -> Path:
        self._check_folder()
        path = self.dir / name
        if Path(name).name != name or path.is_symlink():
            raise ArtifactError(f"plan name {name!r} in {self.dir} is not a plain file name in that folder.")
        if path.exists() and (not path.is_file() or path.stat().st_nlink > 1):
            raise ArtifactError(
                f"{path} is not a plain file of its own (a hard link or a special file); plans are read only "
                "from files the bundle owns. Remove it and rebuild the plan."
            )
        return path

    def _read_record(self, path: Path) -> PlanRecord:
        if path.is_symlink() or not path.is_file():
            raise ArtifactError(f"{path} is not a plain file; plan records never are links. Remove it.")
        try:
            return PlanRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(
                f"{path} is not a valid plan record ({exc!r}). Delete it and its .plan file, then rebuild "
                f"with `trtdeploy engine {self.root}`."
            ) from exc


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _short(digest: str) -> str:
    return digest[:16] + "…" if len(digest) > 16 else digest
