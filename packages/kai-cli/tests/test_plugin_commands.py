"""Plugins add ``kai-cli`` commands through ``kai_cli_commands``: listed in ``--help``, runnable,
loaded only when needed, and never able to break the CLI."""

from __future__ import annotations

import sys
import textwrap

import click
import pytest
from click.testing import CliRunner

import kai_cli.main as main
from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.plugins import KaiPluginManager


def invoke(*args):
    return CliRunner().invoke(main.cli, list(args), catch_exceptions=False)


class Hello:
    @hookimpl
    def kai_cli_commands(self, cli):
        @cli.command("hello")
        @click.option("--name", default="world")
        def hello(name):
            """Say hello from a plugin."""
            click.echo(f"hello, {name}")


class Broken:
    @hookimpl
    def kai_cli_commands(self, cli):
        raise RuntimeError("no commands today")


class Shadowing:
    @hookimpl
    def kai_cli_commands(self, cli):
        @cli.command("validate")
        def validate():
            click.echo("the plugin's validate")


@pytest.fixture
def plugins(monkeypatch):
    """Replace the manager kai-cli builds by one holding the given plugins; counts the builds."""
    built: list[KaiPluginManager] = []

    def use(*objects):
        def manager():
            pm = KaiPluginManager()
            for i, plugin in enumerate(objects):
                pm.register(plugin, name=f"{type(plugin).__name__.lower()}-{i}")
            built.append(pm)
            return pm

        monkeypatch.setattr(main, "_plugins_only", manager)
        return built

    return use


def test_a_plugin_command_is_listed_in_help_and_runs(plugins):
    built = plugins(Hello())
    r = invoke("--help")
    assert r.exit_code == 0, r.output
    assert "hello" in r.output and "Say hello from a plugin." in r.output
    assert "plugins" in r.output and "validate" in r.output  # ours are still there
    r = invoke("hello", "--name", "kai")
    assert r.exit_code == 0, r.output
    assert r.output == "hello, kai\n"
    assert len(built) == 2  # once per invocation


def test_built_in_commands_do_not_load_the_plugins(plugins):
    built = plugins(Hello())
    r = invoke("get", "--help")
    assert r.exit_code == 0, r.output
    assert built == []
    r = invoke("no-such-command")
    assert r.exit_code == 2 and "No such command 'no-such-command'" in r.output
    assert len(built) == 1


def test_a_failing_plugin_is_logged_and_the_others_commands_still_work(plugins, caplog):
    plugins(Broken(), Hello())
    r = invoke("--help")
    assert r.exit_code == 0, r.output
    assert "hello" in r.output
    assert "failed in kai_cli_commands: RuntimeError: no commands today" in caplog.text
    assert invoke("hello").output == "hello, world\n"


def test_a_manager_that_cannot_be_built_leaves_our_commands(monkeypatch, caplog):
    def boom():
        raise RuntimeError("entry points unreadable")

    monkeypatch.setattr(main, "_plugins_only", boom)
    r = invoke("--help")
    assert r.exit_code == 0, r.output
    assert "validate" in r.output
    assert "cannot load the plugins" in caplog.text


def test_a_plugin_cannot_replace_a_built_in_command(plugins, caplog, tmp_path):
    plugins(Shadowing())
    r = invoke("--help")
    assert r.exit_code == 0, r.output
    assert "the plugin's validate" not in invoke("validate", str(tmp_path)).output
    assert main.cli.commands["validate"] is main.validate
    assert "a plugin's command 'validate' is ignored" in caplog.text


def test_a_plugin_installed_through_an_entry_point_adds_its_command(tmp_path, monkeypatch):
    """The real manager (built-ins, installed plugins) with one more distribution on sys.path."""
    (tmp_path / "kai_hello_plugin.py").write_text(textwrap.dedent('''
        import click
        from kai_core.framework.hookspecs import hookimpl

        @hookimpl
        def kai_cli_commands(cli):
            @cli.command("hello-ep")
            def hello_ep():
                """Greetings from an entry point."""
                click.echo("hello from an entry point")
    '''))
    dist = tmp_path / "kai_hello_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kai-hello-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[kai_scheduler.plugins]\nhello-ep = kai_hello_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kai_hello_plugin", raising=False)  # restored (absent) afterwards
    r = invoke("--help")
    assert r.exit_code == 0, r.output
    assert "hello-ep" in r.output and "Greetings from an entry point." in r.output
    r = invoke("hello-ep")
    assert r.exit_code == 0, r.output
    assert r.output == "hello from an entry point\n"
    r = invoke("plugins", "list")
    assert "hello-ep" in r.output and "kai_cli_commands" in r.output
