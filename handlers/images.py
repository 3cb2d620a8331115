"""Private repository (私有仓库), as far as remote debug needs it: the user's saved images.

Sharing, renaming and deleting images come with the repository module itself.
"""

import asyncio

from tornado import web

from services import snapshots

from .base import APIHandler, BaseHandler


class ImagesPage(BaseHandler):
    @web.authenticated
    async def get(self):
        images = await asyncio.to_thread(snapshots.images_of, self.platform, self.requester.name)
        self.render_page("images.html", page_title="Private repository", active_module="images",
                         images=[snapshots.image_view(i) for i in images])


class ImagesAPI(APIHandler):
    @web.authenticated
    async def get(self):
        images = await asyncio.to_thread(snapshots.images_of, self.platform, self.requester.name)
        self.write_json({"images": [snapshots.image_view(i) for i in images]})


class ImageAPI(APIHandler):
    @web.authenticated
    async def get(self, image_id):
        image = await asyncio.to_thread(snapshots.get_image, self.platform, int(image_id))
        if image is None:
            raise web.HTTPError(404, "No such image")
        self.check_visible(image.owner, "image")
        self.write_json(snapshots.image_view(image))


default_handlers = [
    (r"images", ImagesPage),
    (r"api/images", ImagesAPI),
    (r"api/images/(?P<image_id>[0-9]+)", ImageAPI),
]
