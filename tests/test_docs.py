"""The README is a page a newcomer reads in two minutes, and the docs stand without anything
outside the repository."""
import re

from conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_readme_is_at_most_150_lines_and_opens_with_the_two_commands():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    first_screen = "\n".join(lines[:20])
    assert "make repro" in first_screen and "make test" in first_screen


def test_no_page_refers_outside_the_repository():
    for page in DOCS:
        text = page.read_text()
        for outside in ("../shared", "DESIGN.md", "seeds/"):
            assert outside not in text, f"{page.name} names {outside}"


def test_every_relative_link_resolves():
    for page in DOCS:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}"
