import json
import os

from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from .models import Note


def index(request):
    return JsonResponse({"pid": os.getpid(), "framework": "django", "notes": Note.objects.count()})


@csrf_exempt
def notes(request):
    if request.method == "POST":
        payload = json.loads(request.body)
        note = Note.objects.create(text=payload["text"])
        return JsonResponse({"id": note.id, "text": note.text, "count": Note.objects.count()}, status=201)
    return JsonResponse({"notes": list(Note.objects.order_by("id").values_list("text", flat=True))})


def stream(request):
    def rows():
        for i in range(int(request.GET.get("n", "5"))):
            yield f"row {i}\n"

    return StreamingHttpResponse(rows(), content_type="text/plain")


def boom(request):
    raise ValueError("django kaboom")
