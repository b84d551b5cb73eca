"""Command-line grammar of cld/ocd: parse_command_line and the --help text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import llmdocker
from llmdocker import UsageError, parse_command_line


def no_directories(_: str) -> bool:
    return False


def parse(*arguments: str, tool: str = "claude") -> llmdocker.Options:
    return parse_command_line(tool, list(arguments), is_directory=no_directories)


def test_grammar_empty_is_new_session():
    options = parse()
    assert options.project_dir is None
    assert options.windows is None
    assert not options.continue_session
    assert options.session_id is None
    assert options.passthrough == []


def test_grammar_directory_and_window_count():
    options = parse("./proj", "4")
    assert options.project_dir == "./proj"
    assert options.windows == 4


def test_grammar_window_count_before_directory():
    options = parse("3", "proj")
    assert options.windows == 3
    assert options.project_dir == "proj"


def test_grammar_continue_alone():
    options = parse("-c")
    assert options.continue_session
    assert options.session_id is None


def test_grammar_continue_with_session_id():
    options = parse("-c", "0f8c2d1e-aaaa-bbbb-cccc-1234567890ab")
    assert options.continue_session
    assert options.session_id == "0f8c2d1e-aaaa-bbbb-cccc-1234567890ab"


def test_grammar_continue_then_number_is_window_count():
    options = parse("-c", "4")
    assert options.continue_session
    assert options.session_id is None
    assert options.windows == 4


def test_grammar_number_then_continue():
    options = parse("4", "-c")
    assert options.windows == 4
    assert options.continue_session


def test_grammar_continue_then_existing_directory_is_project():
    options = parse_command_line("claude", ["-c", "proj"], is_directory=lambda path: path == "proj")
    assert options.continue_session
    assert options.session_id is None
    assert options.project_dir == "proj"


def test_grammar_continue_then_option_is_not_session():
    options = parse("-c", "--slot", "2")
    assert options.session_id is None
    assert options.slot == 2


def test_grammar_continue_with_equals_value():
    options = parse("--continue=ses_abc123")
    assert options.session_id == "ses_abc123"


def test_grammar_slot_forms():
    assert parse("--slot", "3").slot == 3
    assert parse("--slot=7").slot == 7


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", "1000", ""])
def test_grammar_slot_rejects_invalid(value):
    with pytest.raises(UsageError, match="--slot"):
        parse(f"--slot={value}")


def test_grammar_slot_needs_value():
    with pytest.raises(UsageError, match="--slot needs a value"):
        parse("--slot")


def test_grammar_delay():
    assert parse("--delay", "0.3").delay == pytest.approx(0.3)
    assert parse("--delay=2").delay == 2.0


@pytest.mark.parametrize("value", ["-1", "abc", "61", "1.", "nan", "inf", "1e3"])
def test_grammar_delay_rejects_invalid(value):
    with pytest.raises(UsageError, match="--delay"):
        parse(f"--delay={value}")


def test_grammar_api_forms():
    assert parse("-a").api is True
    assert parse("-a", "false").api is False
    assert parse("--api", "true").api is True
    assert parse("--api=no").api is False


def test_grammar_api_then_number_is_window_count():
    options = parse("-a", "1")
    assert options.api is True
    assert options.windows == 1


def test_grammar_api_rejects_bad_value():
    with pytest.raises(UsageError, match="--api takes true or false"):
        parse("--api=maybe")


@pytest.mark.parametrize("flag", ["-a", "--api"])
def test_grammar_api_rejects_bad_separate_value(flag):
    with pytest.raises(UsageError, match="--api takes true or false, got 'maybe'"):
        parse(flag, "maybe")


def test_grammar_api_then_existing_directory_is_project():
    options = parse_command_line("claude", ["-a", "proj"], is_directory=lambda _: True)
    assert options.api is True
    assert options.project_dir == "proj"


def test_grammar_api_then_option_is_flag_alone():
    options = parse("-a", "-c")
    assert options.api is True
    assert options.continue_session


@pytest.mark.parametrize(
    "arguments",
    [("-c", "-c"), ("-c", "--continue"), ("-c", "abc", "-c"), ("--continue=abc", "-c"),
     ("-c", "--continue=abc")],
)  # fmt: skip
def test_grammar_continue_twice_is_error(arguments):
    with pytest.raises(UsageError, match="given twice"):
        parse(*arguments)


def test_grammar_tmux_flag_recorded_as_given():
    assert parse("-tt", "3").tmux_flag == "-tt"
    assert parse("--tmux-recon").tmux_flag == "--tmux-recon"
    assert parse().tmux_flag == ""


def test_grammar_tmux_modes():
    assert parse("-t").tmux == "tmux"
    assert parse("-tt").tmux == "team:4"
    assert parse("-tt", "2").tmux == "team:2"
    assert parse("--tmux-team=3").tmux == "team:3"
    assert parse("-tr").tmux == "recon"
    assert parse("-tc").tmux == "codeman"
    assert parse("-tcl").tmux == "claude-tmux"


def test_grammar_number_after_tt_is_layout_not_windows():
    options = parse("-tt", "3")
    assert options.tmux == "team:3"
    assert options.windows is None


def test_grammar_tt_rejects_bad_layout():
    with pytest.raises(UsageError, match="2, 3 or 4"):
        parse("-tt", "5")


def test_grammar_tmux_modes_exclusive():
    with pytest.raises(UsageError, match="mutually exclusive"):
        parse("-t", "-tc")


@pytest.mark.parametrize("flag", ["-tr", "--tmux-recon", "-tcl", "--tmux-claude"])
def test_grammar_ocd_rejects_claude_only(flag):
    with pytest.raises(UsageError, match="Claude Code only"):
        parse(flag, tool="opencode")


def test_grammar_passthrough_after_double_dash():
    options = parse("-c", "--", "--permission-mode", "plan", "-c", "--")
    assert options.continue_session
    assert options.passthrough == ["--permission-mode", "plan", "-c", "--"]


def test_grammar_unknown_option_is_error():
    with pytest.raises(UsageError, match="unknown option") as caught:
        parse("--permission-mode")
    assert "-- --permission-mode" in caught.value.hint


def test_grammar_unknown_option_suggests():
    with pytest.raises(UsageError, match="did you mean --rebuild-force"):
        parse("--rebuild-forc")


def test_grammar_second_directory_is_error():
    with pytest.raises(UsageError, match="unexpected argument"):
        parse("a", "b")


def test_grammar_two_window_counts_is_error():
    with pytest.raises(UsageError, match="two window counts"):
        parse("2", "3")


@pytest.mark.parametrize("count", ["0", "17"])
def test_grammar_window_count_range(count):
    with pytest.raises(UsageError, match="out of range"):
        parse(count)


def test_grammar_build_and_rebuild_exclusive():
    with pytest.raises(UsageError, match="cannot be combined"):
        parse("--build", "--rebuild-force")


def test_grammar_slot_with_many_windows_is_error():
    with pytest.raises(UsageError, match="--slot 2 cannot be combined"):
        parse("4", "--slot", "2")


def test_grammar_session_id_with_many_windows_is_error():
    with pytest.raises(UsageError, match="cannot be resumed in 3 windows"):
        parse("-c", "abc", "3")


def test_grammar_invalid_session_id():
    with pytest.raises(UsageError, match="invalid session id"):
        parse("-c", "a b")


def test_grammar_flags_without_value():
    options = parse("--clean", "--yes", "--build", "--dry-run", "-v", "-v", "-q")
    assert options.clean
    assert options.yes
    assert options.build
    assert options.dry_run
    assert options.verbosity == 1


def test_grammar_option_with_unexpected_value():
    with pytest.raises(UsageError, match="does not take a value"):
        parse("--clean=yes")


def test_grammar_help_and_version():
    assert parse("-h").help
    assert parse("--version").version


def test_help_lists_every_flag_and_setting():
    text = llmdocker.format_help("claude", "cld")
    for spelling, _, _ in llmdocker.FLAG_DOCS:
        assert spelling in text
    for setting in llmdocker.SETTINGS:
        assert f"{setting.name}={setting.default or '(empty)'}" in text


def test_help_states_first_message_rule():
    text = " ".join(llmdocker.format_help("claude", "cld").split())
    assert "unless -c resumes a session or arguments follow --" in text
    readme = " ".join(launcher_readme_section().split())
    assert "launches with arguments after `--` (such as `cld -- --version`) never get" in readme


def test_help_states_maintenance_then_launch():
    text = " ".join(llmdocker.format_help("claude", "cld").split())
    assert text.count("then launch the tool") == 3  # --clean, --build, --rebuild-force


def test_help_marks_tmux_flags_not_available():
    for spelling, _, text in llmdocker.FLAG_DOCS:
        if spelling.startswith("-t"):
            assert "not available yet" in text, spelling


def test_help_knows_every_parsed_option():
    documented = " ".join(spelling for spelling, _, _ in llmdocker.FLAG_DOCS)
    for option in llmdocker.KNOWN_OPTIONS:
        assert option in documented.replace(",", " ").split()


TOKENS = st.sampled_from([
    "-c", "--continue", "--slot", "--delay", "-a", "--api", "-t", "-tt", "-tr", "-tc", "-tcl",
    "--clean", "--build", "--rebuild-force", "--yes", "--dry-run", "-v", "-q", "--", "-",
    "0", "1", "2", "4", "16", "17", "true", "false", "0.5", "abc", "ses_1", "./dir",
    "--slot=2", "--delay=x", "--api=true", "--tmux-team=4", "-x", "--bogus", "",
])  # fmt: skip


@given(
    st.lists(st.one_of(TOKENS, st.text(max_size=8)), max_size=8), st.sampled_from(llmdocker.TOOLS)
)
@example(["-c", "-tt", "3", "2"], "claude")
@example(["--delay", "\u0663"], "claude")
@example(["\u0663"], "opencode")
@example(["-tr"], "opencode")
def test_grammar_parses_or_raises_usage_error(arguments, tool):
    try:
        options = parse_command_line(tool, arguments, is_directory=no_directories)
    except UsageError as error:
        assert error.message
        return
    assert options.windows is None or 1 <= options.windows <= llmdocker.MAX_WINDOWS
    assert options.slot is None or options.slot >= 1
    assert 0 <= options.delay <= llmdocker.MAX_WINDOW_DELAY_SECONDS


@given(st.lists(st.text(max_size=12), max_size=6))
def test_grammar_passthrough_unchanged(rest):
    options = parse("-c", "--", *rest)
    assert options.passthrough == rest


def launcher_readme_section() -> str:
    readme = (Path(llmdocker.__file__).parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- launcher:start -->")
    return readme[start : readme.index("<!-- launcher:end -->", start)]


def test_readme_flags_table_matches_code():
    assert llmdocker.format_flags_markdown() in launcher_readme_section()


def test_readme_settings_table_matches_code():
    assert llmdocker.format_settings_markdown() in launcher_readme_section()
