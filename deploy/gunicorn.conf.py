"""gunicorn settings for the crowdqc API:
``gunicorn -c deploy/gunicorn.conf.py 'service.app:create_app()'``.

The settings live in the installed package (service/gunicorn_conf.py) so that
``crowdqc serve`` runs the API exactly as production does; this file is the path
deployments and the container image point gunicorn at."""

from service.gunicorn_conf import *  # noqa: F401,F403
