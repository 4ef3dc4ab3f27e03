"""Read a config root: every file on its own, so one broken file never hides the others.

``load_root`` returns the objects that validated **and** the problems, per file. The daemon keeps
the last good version of an object whose file is broken now (see ``merge_last_good``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError

from .check import check_config
from .files import FileTooLarge, NotRegularFile, read_regular, regular_stat
from .model import (
    DEFAULT_SECRET_ENV,
    DEFAULT_TOKEN_ENV,
    ID_RE,
    Campaign,
    Config,
    Service,
    Settings,
    Template,
    _SecretCheck,
    as_path,
)
from .problems import Problem, problems_from_validation
from .yamlpos import Located, YamlSyntaxError, parse_yaml

SETTINGS_NAMES = ("campaignd.yaml", "campaignd.yml")
DIRS: dict[str, tuple[str, type[BaseModel]]] = {
    "service": ("services.d", Service),
    "template": ("templates.d", Template),
    "campaign": ("campaigns.d", Campaign),
}
MAX_FILE_BYTES = 1 << 20  # a config or template file larger than this is a mistake
M = TypeVar("M", bound=BaseModel)


def _short(name: str, limit: int = 80) -> str:
    """A file name as a message shows it: an absurdly long one is cut, not printed whole, and
    control characters (a NUL from a YAML escape) are shown escaped."""
    cut = name if len(name) <= limit else f"{name[:limit]}… ({len(name)} characters)"
    return cut if cut.isprintable() else repr(cut)


def _too_large(exc: FileTooLarge, what: str) -> str:
    """``is 10.5 MB — templates are capped at 1 MiB``; the size only where fstat knew it."""
    size = f"{exc.size / 1e6:.1f} MB" if exc.size is not None and exc.size > exc.limit else None
    return f"is {size or 'larger than 1 MiB'} — {what} are capped at 1 MiB"


def ignored(name: str) -> bool:
    """Editor and VCS leftovers that are never config (SPEC §1)."""
    return name.startswith(".") or name.endswith(("~", ".swp", ".swo", ".tmp", ".bak"))


@dataclass
class FileResult:
    path: Path
    kind: str
    object_id: str
    ok: bool


@dataclass
class LoadResult:
    config: Config
    problems: list[Problem] = field(default_factory=list)
    files: list[FileResult] = field(default_factory=list)
    # ids whose file exists but failed: the daemon keeps their last good version
    broken: dict[str, set[str]] = field(
        default_factory=lambda: {"service": set(), "template": set(), "campaign": set()}
    )
    settings_broken: bool = False
    refused: dict[str, Campaign] = field(default_factory=dict)
    """Campaigns whose files are valid but whose mail would not be compliant (no unsubscribe
    link, no postal address): never run, but ``campaignctl lint`` still explains them."""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


class _Reader:
    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.root = root
        self.env = env
        self.problems: list[Problem] = []

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def problem(
        self,
        path: Path,
        pos: tuple[int, int],
        message: str,
        *,
        kind: str,
        oid: str,
        severity: str = "error",
    ) -> None:
        sev: Literal["error", "warning"] = "warning" if severity == "warning" else "error"
        self.problems.append(Problem(self.rel(path), pos[0], pos[1], message, sev, kind, oid))

    def read_located(self, path: Path, *, kind: str, oid: str) -> Located | None:
        try:
            text = read_regular(path, MAX_FILE_BYTES).decode("utf-8")
        except FileTooLarge as exc:
            self.problem(
                path, (1, 1), f"file {_too_large(exc, 'config files')}", kind=kind, oid=oid
            )
            return None
        except NotRegularFile as exc:
            self.problem(
                path, (1, 1), f"{exc} — config files must be plain files", kind=kind, oid=oid
            )
            return None
        except UnicodeDecodeError as exc:
            self.problem(
                path,
                (1, 1),
                f"not UTF-8 (byte {exc.start}) — save the file as UTF-8",
                kind=kind,
                oid=oid,
            )
            return None
        except OSError as exc:
            self.problem(path, (1, 1), f"cannot read: {exc.strerror or exc}", kind=kind, oid=oid)
            return None
        try:
            located = parse_yaml(text)
        except YamlSyntaxError as exc:
            self.problem(path, exc.pos, str(exc), kind=kind, oid=oid)
            return None
        for pos, message in located.problems:
            self.problem(path, pos, message, kind=kind, oid=oid)
        if located.problems:
            return None
        return located

    def validate(
        self, path: Path, located: Located, model: type[M], *, kind: str, oid: str
    ) -> M | None:
        data = located.data
        if data is None and model is Settings:
            data = {}
        if not isinstance(data, dict):
            what = "empty" if data is None else f"a {type(data).__name__}"
            self.problem(
                path,
                (1, 1),
                f"the file is {what} — a {kind} file is a mapping of key: value",
                kind=kind,
                oid=oid,
            )
            return None
        try:
            obj = model.model_validate(data)
        except ValidationError as exc:
            self.problems.extend(
                problems_from_validation(
                    exc, located, model, file=self.rel(path), kind=kind, object_id=oid
                )
            )
            return None
        self.secret_warnings(path, located, obj, (), kind=kind, oid=oid)
        return obj

    def secret_warnings(
        self,
        path: Path,
        located: Located,
        obj: BaseModel,
        at: tuple[str | int, ...],
        *,
        kind: str,
        oid: str,
    ) -> None:
        """Warn about literal secrets and unset variables, only for keys the file wrote."""
        if isinstance(obj, _SecretCheck):
            for ref in obj.secrets():
                key_path = (*at, ref.key)
                written = key_path in located.keys
                default = ref.kind == "env" and ref.value in (DEFAULT_TOKEN_ENV, DEFAULT_SECRET_ENV)
                if default and not written:
                    continue  # defaults: unset simply means "no token" / "generated key"
                pos = located.position(key_path, key=True)
                if ref.kind == "literal":
                    self.problem(
                        path,
                        pos,
                        f"{ref.name} is written in the file — secrets do not belong in git; "
                        f"use {ref.name}_env, {ref.name}_file or {ref.name}_credential",
                        kind=kind,
                        oid=oid,
                        severity="warning",
                    )
                elif (why := ref.problem(self.env)) is not None and written:
                    self.problem(
                        path,
                        pos,
                        f"{why} (needed when {oid or kind} first uses it)",
                        kind=kind,
                        oid=oid,
                        severity="warning",
                    )
        for name, value in obj:
            info = type(obj).model_fields[name]
            key = info.alias or name
            if isinstance(value, BaseModel):
                self.secret_warnings(path, located, value, (*at, key), kind=kind, oid=oid)
            elif isinstance(value, tuple | list):
                for i, item in enumerate(value):
                    if isinstance(item, BaseModel):
                        self.secret_warnings(path, located, item, (*at, key, i), kind=kind, oid=oid)


def _read_body(
    reader: _Reader, tpl_path: Path, located: Located, key: str, name: str, oid: str
) -> tuple[str | None, bool]:
    body_path = Path(name)
    if not body_path.is_absolute():
        body_path = tpl_path.parent / body_path
    pos = located.position((key,))
    shown = _short(name)
    try:
        return read_regular(body_path, MAX_FILE_BYTES).decode("utf-8"), True
    except FileTooLarge as exc:
        reader.problem(
            tpl_path,
            pos,
            f"{key}: {shown} {_too_large(exc, 'templates')}; link large assets instead of "
            "inlining them",
            kind="template",
            oid=oid,
        )
    except NotRegularFile as exc:
        reader.problem(
            tpl_path,
            pos,
            f"{key}: {shown} {exc} — a template body must be a plain file",
            kind="template",
            oid=oid,
        )
    except FileNotFoundError:
        reader.problem(
            tpl_path,
            pos,
            f"{key}: {shown} does not exist (looked in {reader.rel(body_path.parent)}/) — "
            "create it or fix the name",
            kind="template",
            oid=oid,
        )
    except UnicodeDecodeError as exc:
        reader.problem(
            tpl_path,
            pos,
            f"{key}: {shown} is not UTF-8 (byte {exc.start}) — save it as UTF-8",
            kind="template",
            oid=oid,
        )
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        reader.problem(
            tpl_path, pos, f"{key}: cannot read {shown}: {why}", kind="template", oid=oid
        )
    return None, False


def _object_files(root: Path, dirname: str, reader: _Reader, kind: str) -> list[tuple[str, Path]]:
    directory = root / dirname
    if not directory.is_dir():
        return []
    out: list[tuple[str, Path]] = []
    seen: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if ignored(path.name) or path.is_dir():
            continue
        if path.suffix not in (".yaml", ".yml"):
            if kind != "template":  # templates.d also holds body files
                reader.problem(
                    path,
                    (1, 1),
                    f"ignored: only .yaml/.yml files in {dirname}/ are read",
                    kind=kind,
                    oid="",
                    severity="warning",
                )
            continue
        oid = path.stem
        if not ID_RE.match(oid):
            reader.problem(
                path,
                (1, 1),
                f"{path.name!r} is not a valid id — rename the file to lower-case letters, "
                "digits, '-' and '_' (starting with a letter or digit)",
                kind=kind,
                oid=oid,
            )
            continue
        if oid in seen:
            reader.problem(
                path,
                (1, 1),
                f"duplicate {kind} id {oid!r}: {reader.rel(seen[oid])} has the same name — "
                "remove or rename one",
                kind=kind,
                oid=oid,
            )
            continue
        seen[oid] = path
        out.append((oid, path))
    return out


def load_root(
    root: Path | str, *, env: Mapping[str, str] | None = None, generation: int = 1
) -> LoadResult:
    """Load and validate everything under ``root``; never raises for bad content."""
    root = Path(root).resolve()
    env = os.environ if env is None else env
    reader = _Reader(root, env)
    result = LoadResult(config=Config(root=root))
    if not root.is_dir():
        reader.problem(
            root, (1, 1), "config root does not exist — pass --config DIR", kind="settings", oid=""
        )
        result.problems = reader.problems
        return result

    settings = Settings()
    for name in SETTINGS_NAMES:
        path = root / name
        # lexists: a dangling or looping symlink is a file the operator meant, so a problem.
        if os.path.lexists(path):
            before = len(reader.problems)
            located = reader.read_located(path, kind="settings", oid="campaignd")
            parsed = (
                reader.validate(path, located, Settings, kind="settings", oid="campaignd")
                if located
                else None
            )
            if parsed is not None:
                settings = parsed
            elif any(p.severity == "error" for p in reader.problems[before:]):
                result.settings_broken = True
            result.files.append(FileResult(path, "settings", "campaignd", parsed is not None))
            break

    objects: dict[str, dict[str, Any]] = {"service": {}, "template": {}, "campaign": {}}
    locations: dict[tuple[str, str], tuple[Path, Located]] = {}
    for kind, (dirname, model) in DIRS.items():
        for oid, path in _object_files(root, dirname, reader, kind):
            located = reader.read_located(path, kind=kind, oid=oid)
            obj = reader.validate(path, located, model, kind=kind, oid=oid) if located else None
            if obj is not None and located is not None and isinstance(obj, Template):
                obj = _with_bodies(reader, path, located, obj, oid)
            if obj is not None and isinstance(obj, Campaign):
                obj = _with_zone(obj, settings.timezone)
            if obj is None:
                result.broken[kind].add(oid)
            else:
                objects[kind][oid] = obj
                assert located is not None
                locations[(kind, oid)] = (path, located)
            result.files.append(FileResult(path, kind, oid, obj is not None))

    for oid, campaign in list(objects["campaign"].items()):
        path, located = locations[("campaign", oid)]
        if not _audience_paths_usable(reader, root, path, located, campaign, oid):
            # check_config would stat these paths itself and fail on a name too long.
            del objects["campaign"][oid]
            result.broken["campaign"].add(oid)
            for f in result.files:
                if f.kind == "campaign" and f.object_id == oid:
                    f.ok = False

    config = Config(
        root=root,
        settings=settings,
        services=objects["service"],
        templates=objects["template"],
        campaigns=objects["campaign"],
        generation=generation,
    )
    check = check_config(config, result.broken, locations, rel=reader.rel)
    reader.problems.extend(check.problems)
    result.refused = {
        oid: objects["campaign"][oid]
        for oid in sorted(check.noncompliant)
        if oid in objects["campaign"]
    }
    for kind, ids in check.invalid.items():
        for oid in ids:
            objects[kind].pop(oid, None)
            result.broken[kind].add(oid)
            for f in result.files:
                if f.kind == kind and f.object_id == oid:
                    f.ok = False
    result.config = replace(
        config,
        services=dict(objects["service"]),
        templates=dict(objects["template"]),
        campaigns=dict(objects["campaign"]),
    )
    result.problems = reader.problems
    return result


def _audience_paths_usable(
    reader: _Reader, root: Path, path: Path, located: Located, campaign: Campaign, oid: str
) -> bool:
    """Each audience path names a regular file or nothing yet: a FIFO, device, directory, a
    name too long for the file system or with a NUL byte is a problem at its line. A missing
    file is left to ``check_config``, which says so in its own words."""
    ok = True
    for i, name in enumerate(campaign.audience):
        at: tuple[str | int, ...] = ("audience", i) if len(campaign.audience) > 1 else ("audience",)
        shown = _short(name)
        try:
            regular_stat(as_path(root, name))
            continue
        except (FileNotFoundError, NotADirectoryError):
            continue
        except NotRegularFile as exc:
            why = f"{exc} — an audience list must be a plain CSV or text file"
        except OSError as exc:
            why = f"cannot use it: {exc.strerror or exc}"
        except ValueError:
            why = "the path contains a NUL byte"
        reader.problem(
            path, located.position(at), f"audience file {shown} {why}", kind="campaign", oid=oid
        )
        ok = False
    return ok


def _with_bodies(
    reader: _Reader, path: Path, located: Located, tpl: Template, oid: str
) -> Template | None:
    update: dict[str, Any] = {}
    ok = True
    for key, target in (("text_file", "text"), ("html_file", "html")):
        name = getattr(tpl, key)
        if name:
            body, good = _read_body(reader, path, located, key, name, oid)
            ok = ok and good
            update[target] = body
    if not ok:
        return None
    return tpl.model_copy(update=update) if update else tpl


def _with_zone(campaign: Campaign, zone: str) -> Campaign:
    """A ``start:`` without an offset means local time in the daemon's ``timezone``."""
    start = campaign.start
    if isinstance(start, datetime) and start.tzinfo is None:
        return campaign.model_copy(update={"start": start.replace(tzinfo=ZoneInfo(zone))})
    return campaign


def merge_last_good(previous: Config | None, result: LoadResult) -> Config:
    """The config to run: new valid objects, plus the previous version of any broken one.

    A file that was deleted is gone (the daemon pauses a removed campaign); a file that is
    broken keeps its last good version in force until it is fixed.
    """
    cfg = result.config
    if previous is None:
        return cfg
    merged: dict[str, dict[str, Any]] = {}
    kept: set[str] = set()
    for kind, current, old in (
        ("service", cfg.services, previous.services),
        ("template", cfg.templates, previous.templates),
        ("campaign", cfg.campaigns, previous.campaigns),
    ):
        m = dict(current)
        for oid in result.broken[kind]:
            if oid in old and oid not in m:
                m[oid] = old[oid]
                if kind == "campaign":
                    kept.add(oid)
        merged[kind] = m
    # A kept campaign was checked with the templates of its last good generation; a template
    # that changed since (and may be what broke the campaign: no unsubscribe link, no postal
    # address) must not reach it through the shared name.
    pinned: dict[str, dict[str, Template]] = {}
    for cid in sorted(kept):
        own: dict[str, Template] = {}
        for step in merged["campaign"][cid].steps:
            for tid in step.template:
                good = previous.template_of(cid, tid)
                if good is not None and merged["template"].get(tid) != good:
                    own[tid] = good
        if own:
            pinned[cid] = own
    settings = previous.settings if result.settings_broken else cfg.settings
    return replace(
        cfg,
        settings=settings,
        services=merged["service"],
        templates=merged["template"],
        campaigns=merged["campaign"],
        pinned=pinned,
    )


def kept_campaigns(previous: Config | None, result: LoadResult) -> list[Problem]:
    """One warning per campaign a reload broke that runs on at its last good version, placed at
    the campaign's first error: what ``/api/status`` load_errors shows beside the error."""
    if previous is None:
        return []
    out = []
    for cid in sorted(result.broken["campaign"]):
        if cid not in previous.campaigns:
            continue
        first = next(
            (p for p in result.problems if p.kind == "campaign" and p.object_id == cid), None
        )
        out.append(
            Problem(
                first.file if first else f"campaigns.d/{cid}.yaml",
                first.line if first else 1,
                first.col if first else 1,
                f"campaign {cid} keeps sending its last good version, with the templates it "
                "had then, until the files are fixed",
                "warning",
                "campaign",
                cid,
            )
        )
    return out


# ---------------------------------------------------------------- change detection

FileStamp = tuple[int, int, int]
"""(mtime in ns, size, inode): a file rewritten in place or replaced by a rename differs."""


def file_stamps(paths: Iterable[Path]) -> dict[str, FileStamp]:
    """The stamp of each path that exists; a missing file is simply absent from the answer."""
    out: dict[str, FileStamp] = {}
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        out[str(path)] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return out


def config_paths(root: Path, config: Config | None = None) -> list[Path]:
    """Every file ``load_root`` reads under ``root``: the settings file, each file in the
    object directories (template bodies included) and body files a template names elsewhere."""
    root = Path(root).resolve()
    paths = [root / name for name in SETTINGS_NAMES]
    for dirname, _ in DIRS.values():
        directory = root / dirname
        with contextlib.suppress(OSError):
            paths.extend(p for p in sorted(directory.iterdir()) if not ignored(p.name))
    if config is not None:
        for tpl in config.templates.values():
            for name in (tpl.text_file, tpl.html_file):
                if name:
                    paths.append(as_path(root / DIRS["template"][0], name))
    return paths


def config_stamps(root: Path, config: Config | None = None) -> dict[str, FileStamp]:
    """What the config root looks like on disk now: compared with the stamps taken before the
    last load, a difference means a reload is due (the watcher's periodic rescan)."""
    return file_stamps(config_paths(root, config))


def config_changes(old: Config, new: Config) -> str:
    """One line naming what a reload changed: ``campaigns +launch ~news -old; services ~ses``."""
    parts: list[str] = []
    for label, a, b in (
        ("settings", {"campaignd": old.settings}, {"campaignd": new.settings}),
        ("services", old.services, new.services),
        ("templates", old.templates, new.templates),
        ("campaigns", old.campaigns, new.campaigns),
    ):
        marks = [f"+{k}" for k in sorted(set(b) - set(a))]
        marks += [f"~{k}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
        marks += [f"-{k}" for k in sorted(set(a) - set(b))]
        if marks:
            parts.append(f"{label} {' '.join(marks)}")
    return "; ".join(parts) or "no object changed"


def restart_needed(old: Settings, new: Settings) -> list[str]:
    """Settings read once at start that differ: a reload reports them instead of applying."""
    out = []
    if old.database != new.database:
        out.append("database")
    if old.http.listen != new.http.listen:
        out.append("http.listen")
    if old.http.secret_ref("token") != new.http.secret_ref("token"):
        out.append("http.token")
    if old.secret_ref("secret") != new.secret_ref("secret"):
        out.append("secret")
    return out
