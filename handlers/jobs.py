"""Training / evaluation (训练/测评): pages and JSON API for batch jobs."""

import asyncio

from tornado import web

from services import jobs, outputs
from services.errors import OptionError
from services.form_data import workload_form_context

from .base import APIHandler, BaseHandler
from .forms import form_mounts
from .files import (FilesArchiveHandler, FilesPageHandler, Folder, LogAPIHandler, LogDownloadHandler, LogFile,
                    LogPageHandler)

FORM_FIELDS = ("name", "image", "region", "cpu", "memory_gb", "gpus", "gpu_model", "command", "time_limit_min")


def options_from_form(handler) -> dict:
    """Form fields -> the JSON shape the API takes (the validator judges both alike)."""
    options = {key: handler.get_body_argument(key, "") for key in FORM_FIELDS}
    options["mounts"] = form_mounts(handler)
    return options


class JobMixin:
    """Look a job up for the current user: 404 if missing or someone else's."""

    async def job_or_404(self, job_id: str) -> dict:
        job = await asyncio.to_thread(jobs.get_job, self.platform, job_id)
        if job is None:
            raise web.HTTPError(404, "No such job")
        self.check_visible(job["user"], "job")
        return job

    async def submit(self, raw) -> dict:
        try:
            return await jobs.submit_job(self.platform, self.requester, raw)
        except OptionError as e:
            raise self.option_error(e) from None

    async def delete_ended(self, ids) -> list[str]:
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise web.HTTPError(400, "ids: give a list of job IDs")
        try:
            return await asyncio.to_thread(jobs.delete_jobs, self.platform, self.requester, ids,
                                           outputs.remove_tree)
        except OptionError as e:
            raise self.option_error(e) from None

    async def folder(self, job_id: str):
        job = await self.job_or_404(job_id)
        folder = await asyncio.to_thread(jobs.folder_of, self.platform, job_id)
        return job, folder


# ---------------------------------------------------------------- pages


class JobsPage(JobMixin, BaseHandler):
    @web.authenticated
    async def get(self):
        everyone = self.get_argument("all", "") == "1" and self.requester.admin
        listed = await asyncio.to_thread(jobs.list_jobs, self.platform, self.requester, everyone)
        self.render_page("jobs.html", page_title="Training / evaluation", active_module="jobs",
                         everyone=everyone, notice=self.pop_flash(),
                         running=[j for j in listed if j["state"] != "ended"],
                         ended=[j for j in listed if j["state"] == "ended"])


class NewJobPage(JobMixin, BaseHandler):
    async def form(self, values: dict | None, error: str = "", status: int = 200):
        context = await asyncio.to_thread(workload_form_context, self.platform, self.requester, "job", values)
        self.render_page("jobs-new.html", status=status, page_title="New training / evaluation job",
                         active_module="jobs", error=error,
                         max_time_limit=self.platform.jobs.max_time_limit_min, **context)

    @web.authenticated
    async def get(self):
        values = None
        source = self.get_argument("from", "")
        if source:  # clone: the same settings, editable before submitting
            values = dict((await self.job_or_404(source))["options"])
            values["name"] = f"{values.get('name', '')} (again)"[:64]
        await self.form(values)

    @web.authenticated
    async def post(self):
        raw = options_from_form(self)
        try:
            job = await self.submit(raw)
        except web.HTTPError as e:
            if e.status_code != 400:
                raise
            return await self.form(raw, error=e.log_message, status=400)
        where = f"queued (position {job['position']})" if job["state"] == "queued" else job["state"]
        self.flash(f"Job {job['id']} submitted: {where}.")
        self.redirect(self.settings["service_prefix"] + "jobs")


class TerminateJobAction(JobMixin, BaseHandler):
    @web.authenticated
    async def post(self, job_id):
        await self.job_or_404(job_id)
        job = await jobs.stop_job(self.platform, job_id, "terminated by user")
        self.flash(f"Job {job_id} ended: {job['end_reason']}.")
        self.redirect(self.settings["service_prefix"] + "jobs")


class DeleteJobsAction(JobMixin, BaseHandler):
    @web.authenticated
    async def post(self):
        deleted = await self.delete_ended(self.get_body_arguments("ids"))
        self.flash(f"Deleted {len(deleted)} job{'' if len(deleted) == 1 else 's'} with their logs and outputs.")
        self.redirect(self.settings["service_prefix"] + "jobs")


class JobFolderMixin(JobMixin):
    """What the file and log handlers need: the job's folder, after the permission check."""

    async def files_root(self) -> Folder:
        job, folder = await self.folder(self.path_kwargs["job_id"])
        return Folder(folder / "output", f"Output of {job['name']} ({job['id']})", name=job["id"],
                      back_url=self.settings["service_prefix"] + "jobs")

    async def log_file(self) -> LogFile:
        job, folder = await self.folder(self.path_kwargs["job_id"])
        return LogFile(folder / "log.txt", f"Log of {job['name']} ({job['id']})",
                       api_url=f"{self.settings['service_prefix']}api/jobs/{job['id']}/log",
                       back_url=self.settings["service_prefix"] + "jobs", name=f"{job['id']}.log")

    async def log_done(self) -> bool:
        # a job ends only after its whole log was written (services.jobs.finalize)
        return await jobs.log_stream_done(self.platform, self.path_kwargs["job_id"])


class JobFiles(JobFolderMixin, FilesPageHandler):
    active_module = "jobs"


class JobArchive(JobFolderMixin, FilesArchiveHandler):
    pass


class JobLogPage(JobFolderMixin, LogPageHandler):
    active_module = "jobs"


class JobLogDownload(JobFolderMixin, LogDownloadHandler):
    pass


# ---------------------------------------------------------------- JSON API


class JobsAPI(JobMixin, APIHandler):
    @web.authenticated
    async def get(self):
        everyone = self.get_argument("all", "") == "1" and self.requester.admin
        self.write_json({"jobs": await asyncio.to_thread(jobs.list_jobs, self.platform, self.requester, everyone)})

    @web.authenticated
    async def post(self):
        self.write_json(await self.submit(self.json_body()), status=201)


class JobAPI(JobMixin, APIHandler):
    @web.authenticated
    async def get(self, job_id):
        self.write_json(await self.job_or_404(job_id))

    @web.authenticated
    async def delete(self, job_id):
        await self.job_or_404(job_id)
        await self.delete_ended([job_id])
        self.set_status(204)
        self.finish()


class TerminateJobAPI(JobMixin, APIHandler):
    @web.authenticated
    async def post(self, job_id):
        await self.job_or_404(job_id)
        self.write_json(await jobs.stop_job(self.platform, job_id, "terminated by user"))


class DeleteJobsAPI(JobMixin, APIHandler):
    @web.authenticated
    async def post(self):
        self.write_json({"deleted": await self.delete_ended(self.json_body().get("ids"))})


class JobFormOptionsAPI(APIHandler):
    """What the submit form offers this user: images, capacity, quota, mappable roots."""

    @web.authenticated
    async def get(self):
        context = await asyncio.to_thread(workload_form_context, self.platform, self.requester, "job", None)
        self.write_json({
            "images": [c.__dict__ for cs in context["image_groups"].values() for c in cs],
            "capacity": [c.__dict__ for c in context["capacity"]],
            "quota": context["limits"].__dict__,
            "roots": [r.__dict__ for r in context["roots"]],
            "max_time_limit_min": self.platform.jobs.max_time_limit_min,
        })


class JobLogAPI(JobFolderMixin, LogAPIHandler):
    pass


class JobFilesAPI(JobFolderMixin, APIHandler):
    """The output folder as JSON: ``?path=sub/dir`` lists a folder inside it."""

    @web.authenticated
    async def get(self, job_id):
        folder = await self.files_root()
        try:
            listing = await asyncio.to_thread(outputs.list_dir, folder.path, self.get_argument("path", ""))
        except OptionError as e:
            raise self.option_error(e) from None
        except (FileNotFoundError, NotADirectoryError):
            raise web.HTTPError(404, "No such folder in the job's output") from None
        self.write_json({"entries": [entry_view(e) for e in listing.entries], "truncated": listing.truncated})


def entry_view(entry) -> dict:
    return {"name": entry.name, "path": entry.path, "kind": entry.kind, "size": entry.size,
            "modified": entry.modified, "link_target": entry.target or None}


JOB = r"(?P<job_id>job-[0-9a-f]{8})"
default_handlers = [
    (r"jobs", JobsPage),
    (r"jobs/new", NewJobPage),
    (r"jobs/delete", DeleteJobsAction),
    (rf"jobs/{JOB}/terminate", TerminateJobAction),
    (rf"jobs/{JOB}/log", JobLogPage),
    (rf"jobs/{JOB}/log.txt", JobLogDownload),
    (rf"jobs/{JOB}/archive", JobArchive),
    (rf"jobs/{JOB}/files(?:/(?P<path>.*))?", JobFiles),
    (r"api/jobs", JobsAPI),
    (r"api/jobs/options", JobFormOptionsAPI),
    (r"api/jobs/delete", DeleteJobsAPI),
    (rf"api/jobs/{JOB}", JobAPI),
    (rf"api/jobs/{JOB}/terminate", TerminateJobAPI),
    (rf"api/jobs/{JOB}/log", JobLogAPI),
    (rf"api/jobs/{JOB}/files", JobFilesAPI),
]
