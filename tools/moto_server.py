"""moto's S3 server, with each request handled whole under one lock.

moto checks If-Match / If-None-Match and then writes, in two separate steps,
on a threaded server with no lock around them: two conditional PUTs racing on
one key can both pass the check, and both get 200. Real S3 (and GCS, Azure)
apply a conditional write atomically, and everything oxiflow promises rests on
that. The 8-process CLI race found it: a claim answered 200 whose lease was
then gone. Serialising requests gives moto S3's semantics; moto is one Python
process bound by the GIL, so little parallelism is lost.

Usage: python3 tools/moto_server.py HOST PORT
"""

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

app = DomainDispatcherApplication(create_backend_app)
one_at_a_time = threading.Lock()


def serialised(environ, start_response):
    with one_at_a_time:
        # Drain the response inside the lock: moto's work may be lazy.
        return list(app(environ, start_response))


if __name__ == "__main__":
    run_simple(sys.argv[1], int(sys.argv[2]), serialised, threaded=True)
