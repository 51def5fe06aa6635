import pytest
from click.testing import CliRunner

from vipmgr.cli.main import cli


class Vipmgr:
    """Runs the CLI in-process against the session etcd, under a per-test prefix."""

    def __init__(self, url: str, prefix: str):
        self.env = {"VIPMGR_ETCD": url, "VIPMGR_ETCD_PREFIX": prefix}
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, code: int | None = 0):
        result = self.runner.invoke(cli, list(args), env=self.env, input=input)
        if code is not None:
            assert result.exit_code == code, (args, result.exit_code, result.output, result.exception)
        return result


@pytest.fixture
def vipmgr(etcd_server, etcd_prefix):
    return Vipmgr(etcd_server.url, etcd_prefix)
