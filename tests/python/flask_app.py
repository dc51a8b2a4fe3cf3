"""A Flask app for tests/all/wsgi.rs."""

import os

from flask import Flask, Response, jsonify, request, stream_with_context

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(pid=os.getpid(), framework="flask")


@app.get("/items/<int:item_id>")
def item(item_id):
    return jsonify(id=item_id, q=request.args.get("q"), host=request.host, scheme=request.scheme,
                   remote=request.remote_addr, root=request.script_root, path=request.path)


@app.post("/echo")
def echo():
    data = request.get_json()
    return jsonify(got=data, length=request.content_length), 201


@app.post("/form")
def form():
    upload = request.files["file"]
    return jsonify(name=request.form["name"], file=upload.filename, size=len(upload.read()))


@app.get("/stream")
def stream():
    def generate():
        for i in range(5):
            yield f"line {i}\n"

    return Response(stream_with_context(generate()), mimetype="text/plain")


@app.get("/boom")
def boom():
    raise ValueError("flask kaboom")
