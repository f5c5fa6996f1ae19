"""gunicorn's configuration file, read from the working directory by every ``gunicorn notify.wsgi``
(production, docker-compose, devtools.stack): hooks only, the command line sets the rest."""


def worker_exit(server, worker):
    """A worker ends (recycled, shut down), in that worker: drop its live-gauge files in the
    Prometheus multiprocess directory (notify.metrics; the settings loaded with the app named
    it). Its counters stay counted."""
    import os

    from notify.metrics import mark_process_dead

    mark_process_dead(os.getpid())
