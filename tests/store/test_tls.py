"""--cacert/--cert/--key reach etcd over TLS (certificates made here with openssl)."""

import shutil
import subprocess

import pytest
from click.testing import CliRunner

from vipmgr.cli.main import cli
from vipmgr.lab.etcd import EtcdServer

pytestmark = [pytest.mark.etcd,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")]


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", f"{name}.pem", cwd=d)
    server = EtcdServer(scheme="https", extra_args=(
        "--cert-file", str(d / "server.pem"), "--key-file", str(d / "server.key"),
        "--client-cert-auth", "--trusted-ca-file", str(d / "ca.pem"))).start()
    yield server, d
    server.destroy()


def test_tls_with_client_certificate(tls_etcd):
    server, d = tls_etcd
    runner = CliRunner()
    args = ["--etcd", server.url, "--cacert", str(d / "ca.pem"), "--cert", str(d / "client.pem"),
            "--key", str(d / "client.key")]
    result = runner.invoke(cli, ["get", "egw", *args])
    assert result.exit_code == 0, result.output
    assert "No egressgateways found" in result.output


def test_tls_without_client_certificate_is_refused_with_one_line(tls_etcd):
    server, d = tls_etcd
    result = CliRunner().invoke(cli, ["get", "egw", "--etcd", server.url,
                                      "--cacert", str(d / "ca.pem")])
    assert result.exit_code == 3
    assert server.url.split("//")[1] in result.output
