"""Celery tasks: thin wrappers that take ids and call services. Each is safe to run twice."""

from celery import shared_task

from webapp.services.imports import run_import_job


@shared_task(name="webapp.run_import")
def run_import(job_id: int) -> str:
    return run_import_job(job_id).status
