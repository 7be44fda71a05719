"""Private redis-servers set up as docs/security.md recommends: an ACL user, optionally TLS.

The default user is switched off (and has no ``nopass``), so every client must log in as the
ACL user; with TLS the plain port is closed (``--port 0``) and only ``--tls-port`` listens.
Certificates are a throwaway CA and server certificate made with the openssl command line.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from jwql_dramatiq.embedded import kill_process_group


@dataclass(frozen=True)
class TlsFiles:
    """A CA certificate and a server certificate and key it signed (PEM)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_tls_files(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1",)) -> TlsFiles:
    """Make a throwaway CA and a server certificate for ``hosts`` (IP addresses or DNS names).

    Raises
    ------
    subprocess.CalledProcessError
        When openssl fails.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    san = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
    ext = directory / "server.ext"
    ext.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "2",
        "-subj", "/CN=jwql-dramatiq test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={hosts[0]}")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial", "-out",
        str(cert), "-days", "2", "-extfile", str(ext))
    os.chmod(key, 0o600)
    return TlsFiles(ca_cert=ca_cert, server_cert=cert, server_key=key)


#: The ACL rules docs/security.md recommends for the JWQL user: its own keys (Dramatiq passes the
#: bare namespace as a key to its script), no pub/sub, every command but the dangerous ones (KEYS,
#: FLUSHALL, CONFIG, DEBUG, ...). Dramatiq's random maintenance pass calls KEYS, so it is turned
#: off (``maintenance_chance: 0``): the sweeper does its work.
RECOMMENDED_RULES = "~jwql_dramatiq ~jwql_dramatiq:* resetchannels +@all -@dangerous"


def new_password() -> str:
    """A random password for a test's ACL user."""
    return "pw-" + secrets.token_urlsafe(18)


class SecureRedis:
    """A ``redis-server`` that requires the ACL user ``username``/``password``, optionally over TLS only.

    Parameters
    ----------
    directory : Path
        Its working directory and log (``redis.log``).
    bind : str
        Address to listen on.
    port : int
    username, password : str
    tls : TlsFiles, optional
        Serve TLS only, on ``port``.
    prefix : list of str, optional
        Command words to run it under (e.g. a network namespace).
    rules : str
        The ACL user's key, channel and command rules.
    """

    def __init__(self, directory: Path, bind: str, port: int, username: str, password: str,
                 tls: TlsFiles | None = None, prefix: list[str] | None = None, appendonly: bool = False,
                 rules: str = "~* &* +@all") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.bind, self.port = directory, bind, port
        self.username, self.password, self.tls = username, password, tls
        self.log_path = directory / "redis.log"
        # The rules go in a config file, so the password never appears on a command line (ps).
        lines = [f"bind {bind}", "save \"\"", f"appendonly {'yes' if appendonly else 'no'}", "appendfsync always",
                 f"dir {directory}", f"logfile {self.log_path}", "protected-mode yes",
                 "user default off resetpass -@all", f"user {username} on >{password} {rules}"]
        if tls is None:
            lines.append(f"port {port}")
        else:
            lines += ["port 0", f"tls-port {port}", f"tls-cert-file {tls.server_cert}",
                      f"tls-key-file {tls.server_key}", f"tls-ca-cert-file {tls.ca_cert}", "tls-auth-clients no"]
        self.conf = directory / "redis.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        os.chmod(self.conf, 0o600)
        self.argv = [*(prefix or []), "redis-server", str(self.conf)]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10) -> "SecureRedis":
        """Start it and wait for its "Ready to accept connections" log line."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            log = self.log_path.read_text(errors="replace")[offset:] if self.log_path.exists() else ""
            if "Ready to accept connections" in log:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start; see {self.log_path}")

    def stop(self) -> None:
        """Kill it (and its session) and reap it."""
        if self.proc is None:
            return
        kill_process_group(self.proc)
