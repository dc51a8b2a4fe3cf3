"""A small Django app in one file for bench/wsgi.sh: one JSON view through Django's
URL resolver, middleware and JsonResponse (`GET /items/42?q=hello`), no database."""

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="forkd-bench-only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
    ],
    INSTALLED_APPS=[],
    USE_TZ=True,
    LOGGING_CONFIG=None,
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def item(request, item_id):
    return JsonResponse({"item_id": item_id, "q": request.GET.get("q")})


urlpatterns = [path("items/<int:item_id>", item)]

app = get_wsgi_application()
