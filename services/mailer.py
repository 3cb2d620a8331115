"""E-mail to users (maintenance notices), when an SMTP server is configured. Without one the
platform's own notifications are the only channel, and nothing is attempted."""

import smtplib
import ssl
from email.message import EmailMessage

from traitlets import Bool, Integer, Unicode
from traitlets.config import LoggingConfigurable


class Mailer(LoggingConfigurable):
    smtp_host = Unicode("", help="SMTP server host name; empty (the default): no e-mail is sent.").tag(config=True)
    smtp_port = Integer(25, help="SMTP server port (587 with STARTTLS, 465 with SSL).").tag(config=True)
    sender = Unicode("labdeck <labdeck@localhost>", help="The From: of every e-mail.").tag(config=True)
    username = Unicode("", help="SMTP login, if the server asks for one.").tag(config=True)
    password = Unicode("", help="SMTP password.").tag(config=True)
    starttls = Bool(False, help="Upgrade the connection with STARTTLS before logging in.").tag(config=True)
    use_ssl = Bool(False, help="Connect with SSL from the start (port 465).").tag(config=True)
    timeout = Integer(20, help="Seconds before the SMTP server counts as not answering.").tag(config=True)

    @property
    def enabled(self) -> bool:
        return bool(self.smtp_host.strip())

    def send(self, messages: list[tuple[str, str, str]]) -> int:
        """Send (to, subject, body) messages over one connection (blocking: call it in a thread).
        Returns how many were accepted; raises OSError/SMTPException when the server fails."""
        if not self.enabled or not messages:
            return 0
        context = ssl.create_default_context()
        if self.use_ssl:
            server = smtplib.SMTP_SSL(self.smtp_host, self.smtp_port, timeout=self.timeout, context=context)
        else:
            server = smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.timeout)
        sent = 0
        with server:
            if self.starttls:
                server.starttls(context=context)
            if self.username:
                server.login(self.username, self.password)
            for to, subject, body in messages:
                message = EmailMessage()
                message["From"], message["To"], message["Subject"] = self.sender, to, subject
                message.set_content(body)
                server.send_message(message)
                sent += 1
        return sent
