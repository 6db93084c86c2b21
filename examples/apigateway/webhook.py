"""The seed's Lambda handlers behind a plain HTTP adapter (Python stdlib only).

Signalbox POSTs API Gateway Lambda-proxy events here:
  /connect     the $connect event        ([apigw] connect_url)
  /disconnect  the $disconnect event     ([apigw] disconnect_url)
  /message     MESSAGE events of the routed actions sendMessage and notificationAck
               (the http sink "lambda" in signalbox.toml); dispatched on
               requestContext.routeKey, as API Gateway picks a route's integration.

The handlers answer the way the seed's Lambdas do: through send_message() (sender.py, the
seed's boto3 post_to_connection utility), whose SIGNALBOX_URL is the *other* node, so each
reply crosses the cluster. What DynamoDB did in the seed is done without it here: the
recipient of a chat message is reached through its topic user:<id> (POST /api/publish),
not by looking up its connection ids.

    python3 webhook.py PORT      (env: SIGNALBOX_URL, STAGE, SIGNALBOX_API_KEY, AWS_*;
                                  WEBHOOK_EVENTS=FILE appends every event received to FILE)
"""

import json
import os
import sys
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sender import send_message


def log(*parts):
    print("webhook:", *parts, flush=True)


# ---- $connect / $disconnect (the seed's aideals-websocket-connect / -disconnect) ----
# Signalbox has already verified the JWT (the seed's handler decoded it again with PyJWT);
# its subject arrives as requestContext.authorizer.principalId.
def connect_handler(event, context):
    connection_id = event['requestContext']['connectionId']
    query_params = event.get('queryStringParameters', {}) or {}
    if not query_params.get('token'):
        return {'statusCode': 401, 'body': json.dumps('Authentication required')}
    user_id = event['requestContext']['authorizer']['principalId']
    # The seed stored connectionId -> userId in DynamoDB here. Not needed: Signalbox knows
    # it (GET /api/connections?user=...) and the user's topic user:<id> reaches all of them.
    log(f"$connect {connection_id} user {user_id} (eventType {event['requestContext']['eventType']},"
        f" stage {event['requestContext']['stage']}, sourceIp {event['requestContext']['identity']['sourceIp']})")
    return {'statusCode': 200, 'body': json.dumps('Connected')}


def disconnect_handler(event, context):
    ctx = event['requestContext']
    log(f"$disconnect {ctx['connectionId']} status {ctx.get('disconnectStatusCode')}"
        f" reason {ctx.get('disconnectReason')!r}")
    return {'statusCode': 200}


# ---- routes (the seed's aideals-websocket-message), answering with send_message() ----
def send_message_handler(event, context):
    connection_id = event['requestContext']['connectionId']
    body = json.loads(event['body'])
    data = body.get('data', {})
    now = int(time.time())
    message_id = str(uuid.uuid4())
    # Deliver to the recipient: its topic user:<recipientId>, on every node and connection
    # it has (the seed looked its connection ids up in DynamoDB and posted to each).
    publish(f"user:{data['recipientId']}", {
        'type': 'chatMessage',
        'data': {'messageId': message_id, 'from': event['requestContext']['authorizer']['principalId'],
                 'content': data.get('content'), 'contentType': data.get('type')},
    })
    ok = send_message(connection_id, {
        'type': 'messageSent',
        'data': {'messageId': message_id, 'status': 'delivered', 'timestamp': now},
        'requestId': body.get('requestId'),
        'timestamp': now,
    })
    log(f"post_to_connection({connection_id}, messageSent) via {os.environ['SIGNALBOX_URL']}/{os.environ['STAGE']} -> {ok}")
    return {'statusCode': 200}


def notification_ack_handler(event, context):
    connection_id = event['requestContext']['connectionId']
    body = json.loads(event['body'])
    data = body.get('data', {})
    now = int(time.time())
    ok = send_message(connection_id, {
        'type': 'ackConfirmed',
        'data': {'notificationId': data.get('notificationId'), 'status': 'read'},
        'requestId': body.get('requestId'),
        'timestamp': now,
    })
    log(f"post_to_connection({connection_id}, ackConfirmed) via {os.environ['SIGNALBOX_URL']}/{os.environ['STAGE']} -> {ok}")
    return {'statusCode': 200}


ROUTES = {'sendMessage': send_message_handler, 'notificationAck': notification_ack_handler}


def publish(topic, event):
    request = urllib.request.Request(
        f"{os.environ['SIGNALBOX_URL']}/api/publish",
        data=json.dumps({'topic': topic, 'event': event}).encode(),
        headers={'Authorization': f"Bearer {os.environ['SIGNALBOX_API_KEY']}",
                 'Content-Type': 'application/json'},
        method='POST')
    with urllib.request.urlopen(request, timeout=5) as answer:
        log(f"published {event['type']} to {topic}: {answer.read().decode()}")


# ---- the adapter: what API Gateway's Lambda integration does, over HTTP ----
class Adapter(BaseHTTPRequestHandler):
    def do_HEAD(self):  # the sink's health check: any answer means reachable
        self.send_response(200)
        self.send_header('Content-Length', '0')
        self.end_headers()

    def do_POST(self):
        try:
            self.dispatch(json.loads(self.rfile.read(int(self.headers.get('Content-Length', 0)))))
        except Exception as e:  # as a failed Lambda invocation: 500
            log(f"{self.path}: handler failed: {e!r}")
            self.answer(500, {'message': 'Internal server error'})

    def dispatch(self, event):
        if os.environ.get('WEBHOOK_EVENTS'):  # every event as received, one JSON per line
            with open(os.environ['WEBHOOK_EVENTS'], 'a') as f:
                f.write(json.dumps({'path': self.path, 'event': event}) + '\n')
        ctx = event['requestContext']
        if self.path == '/connect':
            # A Lambda-proxy result in a 2xx answer: Signalbox refuses the upgrade when its
            # statusCode is not 2xx, as API Gateway does with the $connect Lambda's result.
            self.answer(200, connect_handler(event, None))
        elif self.path == '/disconnect':
            self.answer(200, disconnect_handler(event, None))
        elif self.path == '/message':
            log(f"MESSAGE routeKey {ctx['routeKey']} eventType {ctx['eventType']} from {ctx['connectionId']}"
                f" (user {ctx['authorizer']['principalId']}): body {event['body']}")
            ROUTES[ctx['routeKey']](event, None)
            # One-way route: no body. Signalbox relays a JSON body in this answer to the
            # client as one frame (like an API Gateway route response); the seed's Lambdas
            # answer through post_to_connection instead, so the answer stays empty.
            self.answer(204, None)
        else:
            self.answer(404, {'message': 'not found'})

    def answer(self, status, body):
        data = b'' if body is None else json.dumps(body).encode()
        self.send_response(status)
        if data:
            self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # quiet: the handlers log what matters
        pass


if __name__ == '__main__':
    server = ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), Adapter)
    log(f"listening on 127.0.0.1:{server.server_port}; replies go through {os.environ['SIGNALBOX_URL']}/{os.environ['STAGE']}")
    server.serve_forever()
