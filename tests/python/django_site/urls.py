from django.urls import path, re_path
from django.views.static import serve

from notes import views
from settings import STATIC_ROOT

urlpatterns = [
    path("", views.index),
    path("notes/", views.notes),
    path("stream/", views.stream),
    path("boom/", views.boom),
    re_path(r"^static/(?P<path>.*)$", serve, {"document_root": STATIC_ROOT}),
]
