"""The service's front door: /services/labdeck/ leads to the first module a user needs."""

from tornado import web

from .base import BaseHandler


class Home(BaseHandler):
    @web.authenticated
    def get(self):
        self.redirect(self.settings["service_prefix"] + "debug")


default_handlers = [(r"", Home)]
