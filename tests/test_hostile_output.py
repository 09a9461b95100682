"""Hostile text in a spec, and hostile files in a report's folder, through the real CLI.

- Rich markup (``[/red]``, ``[link=...]``) and control characters (ESC, BEL, an OSC title
  sequence, clear-screen) in a spec's free text are shown as text: ``run`` and ``report``
  finish, write their files and upload the report, and nothing reaches the terminal that
  it would act on. The commands run on a real pseudo-terminal, so Rich writes colours
  and would write hyperlinks, exactly as for a user.
- report.md shows outside text as text: no link, raw HTML or comment can be injected.
- The README's generated block is found as its begin marker and the first end marker
  after it, and its text never holds a marker, so a claim or prose quoting a marker
  cannot make ``suite --readme`` duplicate the README.
- Links planted in a report's folder (``report.html``, ``report.md``, a figure,
  ``verdicts.json.tmp``) are replaced, never written through; only the files the report
  wrote go to MLflow (a link ``notes.txt`` to a secret does not).
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from test_report import N_BOOT, only_xavier

from pipeline.analysis import report as rp
from pipeline.analysis.suite_report import (
    README_BEGIN,
    README_END,
    readme_block,
    replace_readme_block,
)
from pipeline.safeout import md_code, md_text, term

ROOT = Path(__file__).resolve().parents[1]
ESC = "\x1b"
TITLE = ESC + "]0;PWNED\x07"
"""An OSC sequence that sets a terminal's window title."""
CLEAR = ESC + "[2J"
HOSTILE_SPEC = {
    "name": "hostile",
    "description": f"[link=http://evil.example]d[/link] {TITLE} [/red]",
    "claim": f"[/red] claim {CLEAR}",
    "sampler": "grid",
    "claims": [
        "C4",
        {"id": "r1", "source": "[/red] x", "learn": [{"cell": "rnn_tanh", "init": "xavier"}]},
        {
            "id": "r2",
            "source": f"[link=http://evil.example]cl[/link] {TITLE}",
            "stay": [{"cell": "rnn_tanh", "init": "uniform01"}],
        },
        {
            "id": "r3",
            "source": "[md](http://evil.example) <img src=x> <!-- results:end -->",
            "stay": [{"cell": "rnn_tanh", "init": "xavier"}],
        },
    ],
    "trial": {"task": "adding", "cell": "rnn_tanh", "hidden": 4, "seq_len": 5},
    "space": {"init": ["xavier", "uniform01"], "seed": [0]},
}
FAST = ["trial.batch_size=8", "trial.batches_per_epoch=2", "trial.max_epochs=2"]
FAST += ["trial.val_size=16"]
IN_PROCESS = """
import sys
from pipeline import cli, driver
from pipeline.execution import InProcessExecutor
driver.RayExecutor = lambda *args, **kwargs: InProcessExecutor(slots=1)
cli.main(sys.argv[1:])
"""
"""``initstudy ARGS`` with the packs trained in the process (the driver, stores and
printing are the real ones; Ray's start-up is not what these tests are about)."""


def on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``initstudy ARGS`` with stdout and stderr on a pseudo-terminal; return its exit
    code and everything it wrote to the terminal."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(TERM="xterm-256color", COLUMNS="240", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", IN_PROCESS, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=240)
    finally:
        proc.kill()
        reader.join(timeout=10)
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def acted_on(out: str) -> list[str]:
    """What in ``out`` a terminal would act on besides colours, line ends and the
    progress bar's cursor moves: OSC sequences (title, hyperlink), any escape that is not
    a CSI, clear-screen, BEL and the other C0/C1 controls."""
    found = re.findall(r"\x1b\][^\x07\x1b]*", out)  # OSC: a title, an OSC 8 hyperlink
    found += re.findall(r"\x1b(?!\[)", out)  # an escape other than CSI
    found += re.findall(r"\x1b\[[0-9;]*[JH]", out)  # clear the screen, move the cursor home
    found += re.findall(r"[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f]", out)
    return found


def visible(out: str) -> str:
    """The text a terminal shows: CSI sequences (colours, cursor) removed."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out).replace("\r", "")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The hostile study run, then reported with links planted in its report folder."""
    base = tmp_path_factory.mktemp("hostile")
    spec = base / "hostile.yaml"
    spec.write_text(yaml.safe_dump(HOSTILE_SPEC, allow_unicode=True), encoding="utf-8")
    run_dir = base / "runs"
    overrides = [arg for o in FAST for arg in ("--set", o)]
    run_code, run_out = on_a_terminal(
        ["run", str(spec), "--run-dir", str(run_dir), *overrides], base
    )
    folder = run_dir / "reports" / "hostile"
    verdicts_after_run = (folder / "verdicts.json").is_file()
    outside = base / "outside"
    outside.mkdir()
    victims = {}
    for name in ("report.html", "report.md", "km_curves.png", "km_curves.svg"):
        victims[name] = outside / f"{name}.victim"
    victims["verdicts.json.tmp"] = outside / "verdicts.tmp.victim"
    folder.mkdir(parents=True, exist_ok=True)
    for name, victim in victims.items():
        victim.write_text("not the report's\n", encoding="utf-8")
        (folder / name).unlink(missing_ok=True)
        (folder / name).symlink_to(victim)
    secret = outside / "secret.txt"
    secret.write_text("hunter2\n", encoding="utf-8")
    (folder / "notes.txt").symlink_to(secret)
    report_code, report_out = on_a_terminal(["report", "hostile", "--run-dir", str(run_dir)], base)
    return {
        "run": (run_code, run_out),
        "report": (report_code, report_out),
        "verdicts_after_run": verdicts_after_run,
        "folder": folder,
        "victims": victims,
        "run_dir": run_dir,
    }


@pytest.mark.slow
def test_markup_and_control_characters_in_spec_text_reach_no_terminal(
    hostile: dict[str, object],
) -> None:
    for command in ("run", "report"):
        code, out = hostile[command]  # type: ignore[misc]
        assert code == 0, out[-3000:]
        assert "Traceback" not in out and "MarkupError" not in out, out
        assert not acted_on(out), (command, acted_on(out))
        shown = visible(out)
        assert "[/red] x" in shown, "the markup is shown as text"
        assert "[link=http://evil.example]cl[/link]" in shown
        assert "\x1b[" in out, "the terminal got colours: Rich saw a terminal"
    assert hostile["verdicts_after_run"], "run wrote verdicts.json"
    folder = hostile["folder"]
    assert isinstance(folder, Path)
    records = json.loads((folder / "verdicts.json").read_text(encoding="utf-8"))
    assert any(r["text"].startswith("[/red] x") for r in records), "the data, as it was"
    text = (folder / "report.md").read_text(encoding="utf-8")
    assert ESC not in text and "\x07" not in text
    assert "[/red] claim" in text and "]0;PWNED" in text


@pytest.mark.slow
def test_report_replaces_planted_links_and_uploads_only_its_own_files(
    hostile: dict[str, object],
) -> None:
    folder, victims, run_dir = hostile["folder"], hostile["victims"], hostile["run_dir"]
    assert isinstance(folder, Path) and isinstance(victims, dict) and isinstance(run_dir, Path)
    for name, victim in victims.items():
        assert victim.read_text(encoding="utf-8") == "not the report's\n", name
    for name in ("report.html", "report.md", "km_curves.png", "km_curves.svg", "verdicts.json"):
        path = folder / name
        assert path.is_file() and not path.is_symlink(), name
    uploaded = sorted(run_dir.glob("mlartifacts/*/artifacts/report/*"))
    names = {p.name for p in uploaded}
    assert {"report.md", "report.html", "verdicts.json", "km_curves.png"} <= names
    assert "notes.txt" not in names and "verdicts.json.tmp" not in names
    assert not any("hunter2" in p.read_bytes().decode("latin-1") for p in uploaded)


# --------------------------------------------------------------------------- report.md


@pytest.mark.slow
def test_report_md_shows_outside_text_as_text(tmp_path: Path) -> None:
    claim = f"[x](http://evil.example) <script>alert(1)</script> <!-- results:end --> {TITLE}"
    tables = replace(only_xavier(), claim=claim, spec_text="name: lonely  # ```\n")
    files = rp.write_report(tables, tmp_path, n_boot=N_BOOT)
    text = files["markdown"].read_text(encoding="utf-8")
    assert not re.search(r"(?<!\\)\]\(http://evil", text), "no link"
    assert "<script" not in text and "<!--" not in text, "no raw HTML, no comment"
    assert ESC not in text and "\x07" not in text
    assert "- **Claim:** [x\\](http://evil.example) &lt;script>" in text
    assert text.endswith("````yaml\nname: lonely  # ```\n````\n"), "a fence the text cannot end"
    page = files["html"].read_text(encoding="utf-8")
    assert "&lt;script&gt;" in page and "<script" not in page


def test_the_markdown_helpers_escape_what_markdown_acts_on() -> None:
    assert md_text("a [b](c) ![d][e] <f> <!-- g --> `h` \\ i < 1") == (
        "a [b\\](c) ![d\\][e] &lt;f> &lt;!-- g --> \\`h\\` \\\\ i < 1"
    )
    assert md_code("a ``b`` c") == "```a ``b`` c```"
    assert term("[/red] x\x1b]0;t\x07\\") == "\\[/red] x]0;t\\\\"


# --------------------------------------------------------------------------- README block


def suite_folder(tmp_path: Path, text: str) -> Path:
    """A suite report folder (verdicts.json, suite.json) whose one verdict's text is
    ``text``."""
    out = tmp_path / "results"
    out.mkdir()
    record = {"study": "s", "kind": "reproduction", "id": "r1", "text": text}
    record |= {"verdict": "reproduced", "evidence": "e", "rule": "r", "numbers": {}}
    (out / "verdicts.json").write_text(json.dumps([record]), encoding="utf-8")
    run = {"command": "initstudy suite x", "machine": "m", "commit": "c", "date": "d"}
    run |= {"wall_seconds": 60.0, "cpus": 2, "folder": "x", "studies": []}
    (out / "suite.json").write_text(json.dumps(run), encoding="utf-8")
    return out


def test_a_marker_in_a_claim_or_the_prose_never_duplicates_the_readme(tmp_path: Path) -> None:
    out = suite_folder(tmp_path, f"paper {README_END} and {README_BEGIN} end")
    readme = tmp_path / "README.md"
    prose = f"# x\n\nThe block ends at `{README_END}`; it starts at `{README_BEGIN}`.\n\n"
    readme.write_text(f"{prose}{README_BEGIN}\nold\n{README_END}\n\nafter\n", encoding="utf-8")
    assert replace_readme_block(readme, readme_block(out))
    first = readme.read_text(encoding="utf-8")
    replace_readme_block(readme, readme_block(out))  # `suite --readme` again
    again = readme.read_text(encoding="utf-8")
    assert again.count(README_END) == 2 and again.count(README_BEGIN) == 2  # prose + block
    assert again.count("after\n") == 1 and "\nold\n" not in again
    assert again.startswith(prose) and again.endswith(f"{README_END}\n\nafter\n")
    assert again == first, "a rerun changes nothing"
    block = readme_block(out)
    assert block.count(README_END) == 1 and block.count(README_BEGIN) == 1
    assert "paper &lt;!-- results:end --> and" in again
