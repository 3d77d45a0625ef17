"""The benchmark peer: djangorestframework-api-key as its users run it in
production. DEBUG off, SQLite, persistent database connections
(CONN_MAX_AGE), gunicorn sync workers (bench/run.py starts it with as many
workers as cores). Configured by the environment:

  PEER_DB          absolute path of the SQLite database (required)
  PEER_SECRET_KEY  Django's SECRET_KEY (run.py passes a random one)
"""
import os

SECRET_KEY = os.environ.get("PEER_SECRET_KEY") or "insecure-bench-only-" + "x" * 40
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "rest_framework_api_key",
    "peer",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "peer.urls"
WSGI_APPLICATION = "peer.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("PEER_DB", "/nonexistent/peer.db"),
        "CONN_MAX_AGE": 600,
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;"},
    }
}

REST_FRAMEWORK = {
    # The API key is the only credential: no session or basic auth to run.
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework_api_key.permissions.HasAPIKey"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}

USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "root": {"handlers": [], "level": "WARNING"}}
