"""A one-account SMTP server for imagegate's tests, built on aiosmtpd.

Usage: smtpd.py --maildir DIR [--mode plain|starttls|smtps] [--cert F --key F]

The account comes from the environment (IMAGEGATE_TEST_SMTP_USER and
IMAGEGATE_TEST_SMTP_PASSWORD) so it never shows in a process listing. AUTH
(PLAIN or LOGIN) is required before MAIL. In plain mode AUTH is accepted
without TLS; in starttls mode STARTTLS is required before anything else; in
smtps mode TLS starts with the first byte.

Like a real MTA that knows its users, the server refuses any recipient
whose local part starts with "unknown" with a 550 reply that echoes the
address.

Every accepted message is written to DIR as NNNNNN.json
({"mail_from", "rcpt_tos", "auth_login", "tls", "data": base64 of the raw
message}), through a dot-file and a rename so a reader never sees half a
file. The server listens on an ephemeral loopback port and, once listening,
writes that port to DIR/.port the same way.
"""

import argparse
import asyncio
import base64
import hmac
import json
import logging
import os
import ssl
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def write_atomic(path, data):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


class Saver:
    def __init__(self, maildir):
        self.maildir = maildir
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@", 1)[0].startswith("unknown"):
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        name = "%06d" % self.count
        login = session.auth_data.login.decode("utf-8", "replace") if session.auth_data else ""
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "auth_login": login,
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "data": base64.b64encode(envelope.original_content).decode("ascii"),
        }
        write_atomic(os.path.join(self.maildir, name + ".json"), json.dumps(record).encode())
        return "250 2.0.0 OK queued as " + name


def make_authenticator(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and hmac.compare_digest(auth_data.login, user)
            and hmac.compare_digest(auth_data.password, password)
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return authenticate


def quiet_expected_warnings():
    """Drop the warnings this test setup triggers on purpose, so the output
    a failing test shows holds only what matters."""
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    noise = ("auth_required == True but auth_require_tls == False", "Session.login_data is deprecated")
    logging.getLogger("mail.log").addFilter(lambda record: not str(record.msg).startswith(noise))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--maildir", required=True)
    p.add_argument("--mode", choices=["plain", "starttls", "smtps"], default="plain")
    p.add_argument("--cert")
    p.add_argument("--key")
    args = p.parse_args()
    quiet_expected_warnings()

    user = os.environ["IMAGEGATE_TEST_SMTP_USER"].encode()
    password = os.environ["IMAGEGATE_TEST_SMTP_PASSWORD"].encode()

    tls = None
    if args.mode != "plain":
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.cert, args.key)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    handler = Saver(args.maildir)

    def factory():
        return SMTP(
            handler,
            hostname="smtp.test",
            loop=loop,
            enable_SMTPUTF8=True,
            auth_required=True,
            # aiosmtpd counts only STARTTLS as TLS, so implicit TLS must waive
            # the check; plain mode deliberately allows cleartext AUTH.
            auth_require_tls=(args.mode == "starttls"),
            authenticator=make_authenticator(user, password),
            tls_context=tls if args.mode == "starttls" else None,
            require_starttls=(args.mode == "starttls"),
        )

    server = loop.run_until_complete(
        loop.create_server(factory, "127.0.0.1", 0, ssl=tls if args.mode == "smtps" else None)
    )
    port = server.sockets[0].getsockname()[1]
    write_atomic(os.path.join(args.maildir, ".port"), str(port).encode())
    loop.run_forever()


if __name__ == "__main__":
    main()
