"""The docs cannot drift from the code: every spec field is in docs/studies.md with the
code's default, docs/results.md renders the claim registry and the tables' columns, the
README stays short, and no page links outside the repository."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from typing_extensions import TypedDict, is_typeddict

from models.fields import FIELDS
from pipeline import claimspec
from pipeline.analysis.judging import VERDICTS
from pipeline.analysis.tables import EPOCH_COLUMNS, STEP_COLUMNS, TRIAL_COLUMNS
from pipeline.analysis.verdicts import CLAIMS, rules_markdown
from pipeline.studyspec import StudySpec, parse_study_spec

ROOT = Path(__file__).resolve().parents[1]
STUDIES_MD = ROOT / "docs" / "studies.md"
RESULTS_MD = ROOT / "docs" / "results.md"
README_MAX_LINES = 150


def _pages() -> list[Path]:
    """Every Markdown page the project publishes: the README, docs/, the benchmarks' and
    the reliability tests' pages."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    pages += [ROOT / "benchmarks" / "README.md", ROOT / "tests" / "reliability" / "GUARANTEES.md"]
    return [p for p in pages if p.is_file()]


# --------------------------------------------------------------------------- spec fields


def _nested(tp: Any, suffix: str = "") -> Iterator[tuple[str, Any]]:
    """The models (pydantic or TypedDict) inside an annotation, each with the path suffix
    that leads to it: ``.NAME`` through a mapping, ``[]`` through a list."""
    if isinstance(tp, type) and (issubclass(tp, BaseModel) or is_typeddict(tp)):
        yield suffix, tp
        return
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        yield from _nested(args[0], suffix)
    elif isinstance(origin, type) and issubclass(origin, Mapping) and len(args) == 2:
        yield from _nested(args[1], suffix + ".NAME")
    elif isinstance(origin, type) and issubclass(origin, Sequence | set | frozenset):
        for arg in args:
            yield from _nested(arg, suffix + "[]")
    elif origin is Union or origin is types.UnionType:
        for arg in args:
            yield from _nested(arg, suffix)


def _spec_fields(model: Any, prefix: str = "") -> dict[str, FieldInfo | None]:
    """Every field path under ``model`` (``trial``, ``protocol.lr``, ``space.NAME.low``),
    with its pydantic FieldInfo (None for a TypedDict key)."""
    out: dict[str, FieldInfo | None] = {}
    if is_typeddict(model):
        items: list[tuple[str, FieldInfo | None, Any]] = [
            (name, None, tp) for name, tp in get_type_hints(model, include_extras=True).items()
        ]
    else:
        items = [(name, info, info.annotation) for name, info in model.model_fields.items()]
    for name, info, annotation in items:
        path = prefix + name
        out[path] = info
        for suffix, sub in _nested(annotation):
            for sub_path, sub_info in _spec_fields(sub, f"{path}{suffix}.").items():
                out.setdefault(sub_path, sub_info)
    return out


def _table_rows(text: str) -> dict[str, list[str]]:
    """The Markdown table rows of a page whose first cell is one backticked name, by name:
    the rest of the row's cells."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(r"`[^`]+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def _literal(cell: str) -> tuple[bool, Any]:
    """A table cell's value when the cell opens with a backticked literal (read as YAML);
    ``(False, None)`` when it opens with words (a default in prose is not checked)."""
    match = re.match(r"`([^`]+)`", cell)
    if not match:
        return False, None
    return True, yaml.safe_load(match.group(1))


def _same(documented: Any, code: Any) -> bool:
    if isinstance(code, BaseModel):  # a documented mapping names some of the model's values
        dumped = code.model_dump(mode="json")
        return isinstance(documented, dict) and all(
            k in dumped and _same(v, dumped[k]) for k, v in documented.items()
        )
    if isinstance(code, bool) or isinstance(documented, bool):
        return type(code) is type(documented) and code == documented
    return bool(documented == code)


STUDY_ROWS = _table_rows(STUDIES_MD.read_text(encoding="utf-8"))
SPEC_FIELDS = _spec_fields(StudySpec)


def test_the_walk_finds_the_nested_models() -> None:
    # guards the walk itself: were it to stop descending, the test below would pass empty
    expected = {"name", "objective.metric", "protocol.tuning_seeds", "space.NAME.low"}
    assert expected <= set(SPEC_FIELDS), sorted(SPEC_FIELDS)


def test_every_spec_field_is_in_docs_studies() -> None:
    missing = [path for path in SPEC_FIELDS if path not in STUDY_ROWS]
    assert not missing, f"docs/studies.md has no table row for spec field(s): {missing}"


@pytest.mark.parametrize("path", sorted(SPEC_FIELDS))
def test_a_documented_spec_default_is_the_codes(path: str) -> None:
    info = SPEC_FIELDS[path]
    row = STUDY_ROWS.get(path)
    if info is None or row is None:  # a TypedDict key has no default; missing: test above
        return
    literal, documented = _literal(row[0])
    if not literal:
        return
    assert not info.is_required(), f"docs/studies.md gives {path} a default; it is required"
    code = info.get_default(call_default_factory=True)
    assert _same(documented, code), f"docs/studies.md: {path} defaults to {code!r}, not {row[0]}"


def test_every_trial_field_is_documented_with_its_default_bounds_and_space() -> None:
    documented = {p[6:]: row for p, row in STUDY_ROWS.items() if p.startswith("trial.")}
    missing = [name for name in FIELDS if name not in documented]
    assert not missing, f"docs/studies.md has no row for trial field(s): {missing}"
    extra = [name for name in documented if name not in FIELDS]
    assert not extra, f"docs/studies.md documents trial field(s) the code lacks: {extra}"
    for name, field in FIELDS.items():
        default, bounds, space = documented[name][:3]
        literal, value = _literal(default)
        assert literal and _same(value, field.default), f"trial.{name}: default {field.default!r}"
        want = f"`{field.bounds}`" if field.bounds else None
        assert (bounds == want) if want else not bounds.startswith("`"), (
            f"trial.{name}: bounds are {field.bounds!r}, docs/studies.md says {bounds}"
        )
        assert space == ("yes" if field.searchable else "no"), f"trial.{name}: searchable?"


def test_every_registered_name_is_in_docs_studies() -> None:
    import models

    text = STUDIES_MD.read_text(encoding="utf-8")
    for registry in ("TASKS", "CELLS", "INIT_SCHEMES", "OPTIMIZERS"):
        missing = sorted(n for n in getattr(models, registry) if f"`{n}`" not in text)
        assert not missing, f"docs/studies.md does not name {registry} {missing}"


def test_every_claims_key_is_documented() -> None:
    keys = {*claimspec._KEYS, *claimspec._REPRODUCTION_KEYS}
    missing = sorted(k for k in keys if f"claims[].{k}" not in STUDY_ROWS)
    assert not missing, f"docs/studies.md has no row for claims key(s): {missing}"
    text = STUDIES_MD.read_text(encoding="utf-8")
    assert all(f"`{column}`" in text for column in claimspec.WHERE_KEYS)


def test_the_walk_reads_mappings_lists_unions_and_typeddicts() -> None:
    class Leaf(BaseModel):
        x: int = 1

    class Opts(TypedDict, total=False):
        seed: int

    class Root(BaseModel):
        a: dict[str, Leaf] = {}
        b: list[Leaf] | None = None
        c: Annotated[Leaf | int, "meta"] = 0
        d: Opts | None = None

    assert set(_spec_fields(Root)) == {"a", "a.NAME.x", "b", "b[].x", "c", "c.x", "d", "d.seed"}


# --------------------------------------------------------------------------- results.md


def test_results_renders_the_claim_registry() -> None:
    text = RESULTS_MD.read_text(encoding="utf-8")
    assert rules_markdown() in text, "run `python -m pipeline.analysis.verdicts` to regenerate"
    for claim in CLAIMS.values():
        assert f"### {claim.id}: {claim.text}" in text and claim.rule in text
    assert all(f"`{verdict}`" in text for verdict in VERDICTS)


def test_results_names_every_column_of_the_three_tables() -> None:
    text = RESULTS_MD.read_text(encoding="utf-8")
    for columns in (TRIAL_COLUMNS, EPOCH_COLUMNS, STEP_COLUMNS):
        missing = [c for c in columns if f"`{c}`" not in text]
        assert not missing, f"docs/results.md does not name column(s) {missing}"


def test_every_fault_test_named_in_docs_reliability_exists() -> None:
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    named = re.findall(r"`(test_\w+\.py)(?:::(\w+))?`", text)
    assert len(named) >= 9, named
    for module, function in named:
        places = [ROOT / "tests" / sub / module for sub in ("reliability", "", "cluster")]
        source = next((p for p in places if p.is_file()), places[0])
        assert source.is_file(), f"docs/reliability.md names {module}, not in tests/"
        if function:
            assert f"def {function}(" in source.read_text(encoding="utf-8"), (
                f"docs/reliability.md names {module}::{function}, which does not exist"
            )


# --------------------------------------------------------------------------- README, links


def test_readme_is_short_and_keeps_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    assert any(line.startswith("make run ") for line in lines)
    assert any(line.startswith("make test ") for line in lines)


def _yaml_blocks(page: Path) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


@pytest.mark.parametrize("page", ["README.md", "docs/studies.md"])
def test_the_example_specs_are_valid(page: str) -> None:
    specs = [b for b in _yaml_blocks(ROOT / page) if re.search(r"^name:", b, re.M)]
    assert specs, f"{page} has no example spec"
    for block in specs:
        parse_study_spec(yaml.safe_load(block), page)
    if page == "README.md":
        assert len(specs[0].splitlines()) <= 10, "the README's spec is a ten-line spec"


def _prose(text: str) -> str:
    """A page without its fenced code blocks and inline code spans."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: Path) -> set[str]:
    """The heading anchors of a page, as the usual renderers make them."""
    out = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_link_leaves_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for banned in ("/".join(("..", "shared")), "DESIGN.md", "STYLE.md"):  # the briefs
        assert banned not in text, f"{page.name} mentions {banned}"
    prose = _prose(text)
    outside = re.findall(r"\b(?:https?|ftp)://\S+|\bwww\.\S+|<\w+:[^>]*>", prose)
    assert not outside, f"{page.relative_to(ROOT)} links outside the repository: {outside}"
    for target in re.findall(r"\]\(([^)\s]*)\)", prose):
        assert not re.match(r"\w+:", target), f"{page.name}: link {target} leaves the repository"
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} is outside the repository"
        assert resolved.exists(), f"{page.relative_to(ROOT)}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.name}: no heading #{anchor} in {path}"
